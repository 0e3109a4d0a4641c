"""Open Inference Protocol v2 (KServe / Triton REST) tensors: JSON in, NumPy out.

Every way a request can be wrong raises ``RequestError`` with the HTTP status
and a message; the server turns it into a 4xx and goes on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optiserve.models.graph import InputSpec
from optiserve.types import InputLayout

DATATYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
NP_TO_OIP = {np.dtype(v).name: k for k, v in DATATYPES.items()}


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Tensor:
    name: str
    array: np.ndarray


def oip_datatype(dtype: str) -> str:
    return NP_TO_OIP.get(np.dtype(dtype).name, "BYTES")


def model_metadata(
    name: str,
    inputs: Sequence[InputSpec],
    outputs: Sequence[tuple[str, str, list[int]]],
    layout: InputLayout | None = None,
) -> dict[str, Any]:
    """OIP model metadata: -1 for every dim the graph leaves open; the resolved layout
    (shapes this server was sized and warmed for, batch axis per input) under ``parameters``."""
    meta: dict[str, Any] = {
        "name": name,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {
                "name": i.name,
                "datatype": oip_datatype(i.dtype),
                "shape": [d if isinstance(d, int) else -1 for d in i.dims],
            }
            for i in inputs
        ],
        "outputs": [{"name": n, "datatype": oip_datatype(dt), "shape": shape} for n, dt, shape in outputs],
    }
    if layout is not None:
        meta["parameters"] = {"layout": layout.to_dict()}
    return meta


def parse_infer_request(
    body: bytes,
    inputs: Sequence[InputSpec],
    max_rows: int,
    header_length: int | None = None,
    layout: InputLayout | None = None,
) -> tuple[str | None, list[Tensor], int]:
    """(request id, input tensors in the model's order, rows in the batch).

    Rows count along each input's batch axis (``layout``; axis 0 when not given);
    inputs without one (scalars) are taken as sent and do not count. Dims the
    graph fixes must match; dims it leaves open may take any size.

    ``header_length`` (from ``Inference-Header-Content-Length``) selects Triton's
    binary tensor extension: a JSON header of that many bytes, then each input
    with ``parameters.binary_data_size`` as raw little-endian bytes, in order."""
    binary = b""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise RequestError(400, f"Inference-Header-Content-Length {header_length} exceeds the body")
        body, binary = body[:header_length], body[header_length:]
    try:
        req = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"malformed JSON: {exc.msg if hasattr(exc, 'msg') else exc}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise RequestError(400, "request must be a JSON object with an 'inputs' list")
    given: dict[str, Mapping[str, Any]] = {}
    for t in req["inputs"]:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise RequestError(400, "each input needs a 'name'")
        given[t["name"]] = t
    want = {i.name for i in inputs}
    if set(given) != want:
        missing, extra = sorted(want - set(given)), sorted(set(given) - want)
        raise RequestError(400, f"inputs must be exactly {sorted(want)}; missing {missing}, unexpected {extra}")
    axes = {t.name: t.batch_axis for t in layout.inputs} if layout is not None else {}
    tensors, rows, offset = [], None, 0
    for spec in inputs:
        t = given[spec.name]
        axis = axes.get(spec.name, 0 if spec.dims else None)
        datatype = t.get("datatype")
        expected = oip_datatype(spec.dtype)
        if datatype != expected:
            raise RequestError(400, f"input {spec.name!r} has datatype {datatype!r}; the model takes {expected}")
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise RequestError(400, f"input {spec.name!r} needs a shape: a list of non-negative integers")
        if len(shape) != len(spec.dims) or any(
            isinstance(d, int) and d != s for i, (d, s) in enumerate(zip(spec.dims, shape, strict=True)) if i != axis
        ):
            shown = ["?" if d is None else d for d in spec.dims]
            raise RequestError(400, f"input {spec.name!r} has shape {shape}; the model takes {shown}")
        if axis is not None and isinstance(spec.dims[axis], int) and shape[axis] != spec.dims[axis]:
            raise RequestError(400, f"input {spec.name!r} has batch {shape[axis]}; the model takes {spec.dims[axis]}")
        size = (t.get("parameters") or {}).get("binary_data_size")
        arr: np.ndarray
        if size is not None:
            dtype = np.dtype(DATATYPES[expected]).newbyteorder("<")
            if not isinstance(size, int) or size < 0 or size > len(binary) - offset:
                raise RequestError(400, f"input {spec.name!r}: binary_data_size {size} exceeds the binary part")
            if size % dtype.itemsize:
                raise RequestError(400, f"input {spec.name!r}: {size} bytes is not a whole number of {expected}")
            arr = np.frombuffer(binary, dtype=dtype, count=size // dtype.itemsize, offset=offset)
            offset += size
        else:
            data = t.get("data")
            if not isinstance(data, list):
                if shape == [] and isinstance(data, int | float | bool):
                    data = [data]
                else:
                    raise RequestError(400, f"input {spec.name!r} needs 'data' as a (flat or nested) list")
            try:
                arr = np.asarray(data, dtype=DATATYPES[expected])
            except (ValueError, TypeError, OverflowError, RecursionError):
                raise RequestError(400, f"input {spec.name!r} holds values that are not {expected}") from None
        if arr.size != math.prod(shape):
            raise RequestError(400, f"input {spec.name!r} has {arr.size} values for shape {shape}")
        arr = arr.reshape(shape)
        if axis is not None:
            if rows is not None and shape[axis] != rows:
                raise RequestError(400, "all batched inputs must have the same batch size")
            rows = shape[axis]
        tensors.append(Tensor(spec.name, arr))
    if rows is None:
        rows = 1  # nothing batched: the request is one call as sent
    if rows < 1:
        raise RequestError(400, "a request needs at least one row")
    if rows > max_rows:
        raise RequestError(400, f"a request of {rows} rows exceeds the server's max batch of {max_rows}")
    rid = req.get("id")
    return (str(rid) if rid is not None else None), tensors, rows


def infer_response(name: str, rid: str | None, outputs: Sequence[tuple[str, np.ndarray]]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_name": name,
        "model_version": "1",
        "outputs": [
            {"name": n, "datatype": oip_datatype(a.dtype.name), "shape": list(a.shape), "data": a.reshape(-1).tolist()}
            for n, a in outputs
        ],
    }
    if rid is not None:
        body["id"] = rid
    return body
