"""Open Inference Protocol v2 (KServe / Triton REST) tensors: JSON or binary in, NumPy out, and back.

Every way a request can be wrong raises ``RequestError`` with the HTTP status
and a message; the server turns it into a 4xx and goes on.

JSON is read and written with orjson (depth-limited: 100,000 nested ``[`` is a
400, not a recursion). Non-finite floats follow Triton, whose RapidJSON reader
and writer run with ``kParseNanAndInfFlag`` / ``kWriteNanAndInfFlag``: requests
may carry ``NaN``/``Infinity``/``-Infinity`` and responses write those tokens
(tritonclient's python-rapidjson reads them); binary outputs (Triton's binary
tensor extension) carry any value as raw bytes. Bodies may be gzip or deflate
(zlib) compressed, as tritonclient's ``request_compression_algorithm`` sends them.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from optiserve.models.graph import InputSpec
from optiserve.types import InputLayout

DATATYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
NP_TO_OIP = {np.dtype(v).name: k for k, v in DATATYPES.items()}
ENCODINGS = ("gzip", "deflate")


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Tensor:
    name: str
    array: np.ndarray


@dataclass(frozen=True)
class OutputRequest:
    """One entry of the request's ``outputs``: which output, and whether it goes back as raw bytes."""

    name: str
    binary: bool | None = None  # None: the request's default


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    tensors: tuple[Tensor, ...]
    rows: int
    outputs: tuple[OutputRequest, ...] = ()  # empty: every output
    binary_output: bool = False  # ``parameters.binary_data_output``: the default for outputs


def oip_datatype(dtype: str) -> str:
    return NP_TO_OIP.get(np.dtype(dtype).name, "BYTES")


def loads(body: bytes | bytearray | memoryview) -> Any:
    """JSON as Triton reads it: strict, depth-limited, but NaN/Infinity allowed."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raw = bytes(body)
        if b"NaN" in raw or b"Infinity" in raw:  # orjson refuses these tokens; Triton takes them
            try:
                return json.loads(raw)
            except (ValueError, RecursionError):
                pass
        raise RequestError(400, f"malformed JSON: {exc}") from None


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` decoded per ``Content-Encoding``; a bomb stops at ``limit`` bytes (413)."""
    enc = (encoding or "identity").strip().lower()
    if enc == "identity":
        return body
    if enc not in ENCODINGS:
        raise RequestError(415, f"Content-Encoding {enc!r} is not supported; use gzip, deflate or identity")
    d = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RequestError(400, f"body is not valid {enc}: {exc}") from None
    if len(out) > limit:
        raise RequestError(413, f"decompressed body exceeds the limit of {limit} bytes")
    if not d.eof:
        raise RequestError(400, f"body is not valid {enc}: truncated stream")
    return out


def compress(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """(body, Content-Encoding) for the first of gzip/deflate the client accepts, else as is."""
    wanted = {p.split(";")[0].strip().lower() for p in (accept_encoding or "").split(",")}
    if "gzip" in wanted:
        return gzip.compress(body, compresslevel=1), "gzip"
    if "deflate" in wanted:
        return zlib.compress(body, 1), "deflate"
    return body, None


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


def _flag(params: Any, key: str) -> bool | None:
    if not isinstance(params, dict) or key not in params:
        return None
    value = params[key]
    if not isinstance(value, bool):
        raise RequestError(400, f"parameter {key!r} must be true or false, got {value!r}")
    return value


def _output_requests(req: Mapping[str, Any]) -> tuple[OutputRequest, ...]:
    outs = req.get("outputs")
    if outs is None:
        return ()
    if not isinstance(outs, list):
        raise RequestError(400, "'outputs' must be a list")
    found = []
    for o in outs:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise RequestError(400, "each requested output needs a 'name'")
        found.append(OutputRequest(o["name"], _flag(o.get("parameters"), "binary_data")))
    return tuple(found)


def parse_request(
    body: bytes | bytearray,
    inputs: Sequence[InputSpec],
    max_rows: int,
    header_length: int | None = None,
    layout: InputLayout | None = None,
) -> InferRequest:
    """The request, inputs in the model's order, rows counted along each input's batch axis.

    Rows count along each input's batch axis (``layout``; axis 0 when not given);
    inputs without one (scalars) are taken as sent and do not count. Dims the
    graph fixes must match; dims it leaves open may take any size.

    ``header_length`` (from ``Inference-Header-Content-Length``) selects Triton's
    binary tensor extension: a JSON header of that many bytes, then each input
    with ``parameters.binary_data_size`` as raw little-endian bytes, in order
    (read in place: the arrays are views of ``body``)."""
    view = memoryview(body)
    binary = view[:0]
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise RequestError(400, f"Inference-Header-Content-Length {header_length} exceeds the body")
        view, binary = view[:header_length], view[header_length:]
    req = loads(view)
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
        arr, offset = _tensor(spec, t, axis, binary, offset)
        if axis is not None:
            if rows is not None and arr.shape[axis] != rows:
                raise RequestError(400, "all batched inputs must have the same batch size")
            rows = arr.shape[axis]
        tensors.append(Tensor(spec.name, arr))
    if rows is None:
        rows = 1  # nothing batched: the request is one call as sent
    if rows < 1:
        raise RequestError(400, "a request needs at least one row")
    if rows > max_rows:
        raise RequestError(400, f"a request of {rows} rows exceeds the server's max batch of {max_rows}")
    rid = req.get("id")
    binary_out = _flag(req.get("parameters"), "binary_data_output") or False
    return InferRequest(str(rid) if rid is not None else None, tuple(tensors), rows, _output_requests(req), binary_out)


def _tensor(
    spec: InputSpec, t: Mapping[str, Any], axis: int | None, binary: memoryview, offset: int
) -> tuple[np.ndarray, int]:
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
    params = t.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    arr: np.ndarray
    if size is not None:
        dtype = np.dtype(DATATYPES[expected]).newbyteorder("<")
        if type(size) is not int or size < 0 or size > len(binary) - offset:
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
    return arr.reshape(shape), offset


def parse_infer_request(
    body: bytes | bytearray,
    inputs: Sequence[InputSpec],
    max_rows: int,
    header_length: int | None = None,
    layout: InputLayout | None = None,
) -> tuple[str | None, list[Tensor], int]:
    """(request id, input tensors in the model's order, rows in the batch): ``parse_request`` in short."""
    r = parse_request(body, inputs, max_rows, header_length, layout)
    return r.id, list(r.tensors), r.rows


def select_outputs(
    outputs: Sequence[tuple[str, np.ndarray]], wanted: Sequence[OutputRequest], binary_default: bool
) -> list[tuple[str, np.ndarray, bool]]:
    """(name, array, as binary) for each output the request asked for (all when it named none)."""
    if not wanted:
        return [(n, a, binary_default) for n, a in outputs]
    known = dict(outputs)
    unknown = [w.name for w in wanted if w.name not in known]
    if unknown:
        raise RequestError(400, f"unknown output {', '.join(map(repr, unknown))}; the model has {list(known)}")
    return [(w.name, known[w.name], binary_default if w.binary is None else w.binary) for w in wanted]


def encode_response(
    name: str, rid: str | None, outputs: Sequence[tuple[str, np.ndarray, bool]], version: str = "1"
) -> tuple[bytes, int | None]:
    """(body, JSON header length when some output is binary, else None)."""
    entries: list[dict[str, Any]] = []
    parts: list[bytes] = []
    finite = True
    for n, a, binary in outputs:
        e: dict[str, Any] = {"name": n, "datatype": oip_datatype(a.dtype.name), "shape": list(a.shape)}
        if binary:
            raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
            e["parameters"] = {"binary_data_size": len(raw)}
            parts.append(raw)
        else:
            flat = np.ascontiguousarray(a).reshape(-1)
            if flat.dtype.kind == "f" and not np.isfinite(flat).all():
                finite = False
            e["data"] = flat
        entries.append(e)
    body: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": entries}
    if rid is not None:
        body["id"] = rid
    if finite:
        header = dumps(body)
    else:  # NaN/Infinity tokens as Triton's RapidJSON writes them (orjson would write null)
        for e in entries:
            if "data" in e:
                e["data"] = e["data"].tolist()
        header = json.dumps(body, separators=(",", ":")).encode()
    if not parts:
        return header, None
    return header + b"".join(parts), len(header)


def infer_response(name: str, rid: str | None, outputs: Sequence[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """The JSON response as a dict (every output as ``data``)."""
    body, _ = encode_response(name, rid, [(n, a, False) for n, a in outputs])
    return dict(loads(body))
