"""OIP v2 gRPC tensors: ``ModelInferRequest`` in, ``ModelInferResponse`` out.

A request is checked by the very rules the REST side applies: its tensors are
laid out as a Triton binary-extension body (JSON header + raw bytes) and read by
``protocol.parse_infer_request``, so both protocols accept and refuse the same
requests with the same messages. Raw (``raw_input_contents``) and typed
(``contents.fp32_contents`` ...) inputs both work; outputs always go back raw,
as Triton sends them (no float printing, and NaN is just bytes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from optiserve.serve.protocol import DATATYPES, RequestError, Tensor, oip_datatype, parse_infer_request

# the typed field of InferTensorContents that carries each datatype
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _typed_bytes(name: str, datatype: str, contents: Any) -> bytes:
    """The little-endian bytes of a typed ``contents`` (FP16 has no typed field: raw only)."""
    field = CONTENTS_FIELD.get(datatype)
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        return b""  # a datatype no model here takes: the shared checks name the one it does
    if field is None:
        raise RequestError(400, f"input {name!r}: {datatype} cannot be sent as typed contents; use raw_input_contents")
    values = getattr(contents, field)
    try:
        arr = np.asarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
    except (ValueError, OverflowError):
        raise RequestError(400, f"input {name!r} holds values that are not {datatype}") from None
    return arr.tobytes()


def binary_body(request: Any) -> tuple[bytes, int]:
    """(body, header length) of the REST binary extension carrying ``request``'s inputs."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(400, f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; expected one each")
    parts: list[bytes] = []
    inputs: list[dict[str, Any]] = []
    for i, t in enumerate(request.inputs):
        if raw and t.HasField("contents"):
            raise RequestError(400, f"input {t.name!r} has both contents and raw_input_contents")
        data = raw[i] if raw else _typed_bytes(t.name, t.datatype, t.contents)
        parts.append(data)
        inputs.append(
            {
                "name": t.name,
                "datatype": t.datatype,
                "shape": list(t.shape),
                "parameters": {"binary_data_size": len(data)},
            }
        )
    header = json.dumps({"id": request.id or None, "inputs": inputs}).encode()
    return header + b"".join(parts), len(header)


def decode_request(
    request: Any, inputs: Sequence[Any], max_rows: int, layout: Any = None
) -> tuple[list[Tensor], int, list[str]]:
    """(input tensors in the model's order, rows, requested output names or [] for all); ``RequestError`` if bad."""
    body, length = binary_body(request)
    _, tensors, rows = parse_infer_request(body, inputs, max_rows, length, layout)
    return tensors, rows, [o.name for o in request.outputs]


def encode_response(
    pb: Any, name: str, rid: str, outputs: Sequence[tuple[str, np.ndarray]], wanted: Sequence[str] = ()
) -> Any:
    """A ``ModelInferResponse`` with ``wanted`` outputs (all when empty) as raw little-endian bytes."""
    known = [n for n, _ in outputs]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise RequestError(400, f"unknown output {', '.join(map(repr, unknown))}; the model has {known}")
    response = pb.ModelInferResponse(model_name=name, model_version="1", id=rid)
    for n, a in outputs:
        if wanted and n not in wanted:
            continue
        response.outputs.add(name=n, datatype=oip_datatype(a.dtype.name), shape=list(a.shape))
        response.raw_output_contents.append(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())
    return response
