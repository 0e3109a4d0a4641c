"""Read what a profiler needs from an ONNX file: digest, inputs, outputs, family."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from optiserve.errors import ModelError

Dim = int | str | None  # fixed size, symbolic name, or unknown
# dim_param spellings exporters use for "unknown": never a shared name, so two of
# them in one graph are two independent dims, not one tied dim.
ANONYMOUS_DIMS = frozenset({"?", "-1", "None", "unk", "unknown"})


@dataclass(frozen=True)
class InputSpec:
    """One graph input: its name, NumPy dtype and declared dims (symbolic ones by name)."""

    name: str
    dtype: str
    dims: tuple[Dim, ...]

    @property
    def has_dynamic_batch(self) -> bool:
        return bool(self.dims) and not isinstance(self.dims[0], int)


@dataclass(frozen=True)
class ModelInfo:
    """What the profiler records about a model file."""

    path: Path
    sha256: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    opset: int
    op_counts: tuple[tuple[str, int], ...]
    gather_bounds: tuple[tuple[str, int], ...]  # input name -> table size it indexes
    output_specs: tuple[InputSpec, ...] = ()  # outputs with their declared dims (dtype as for inputs)

    @property
    def family(self) -> str:
        """Coarse family (cnn, transformer, mlp, other): later issues pick defaults by it."""
        ops = dict(self.op_counts)
        if ops.get("Conv", 0) >= 3:
            return "cnn"
        if ops.get("Softmax", 0) and (ops.get("LayerNormalization", 0) or ops.get("Erf", 0)):
            return "transformer"
        if ops.get("Gemm", 0) or ops.get("MatMul", 0):
            return "mlp"
        return "other"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset of the default ONNX domain (0 when it imports none)."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def subgraphs_of(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs a node holds: If branches, Loop and Scan bodies."""
    out: list[onnx.GraphProto] = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        out.extend(a.graphs)
    return out


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """A graph and every subgraph in it, depth first."""
    yield graph
    for node in graph.node:
        for sub in subgraphs_of(node):
            yield from all_graphs(sub)


def external_data_files(model: onnx.ModelProto, folder: Path) -> list[Path]:
    """Files beside the model that hold its external-data tensors (sorted, unique), subgraphs included."""
    names: set[str] = set()
    tensors: list[onnx.TensorProto] = []
    for g in all_graphs(model.graph):
        tensors.extend(g.initializer)
        for node in g.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    tensors.append(a.t)
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for kv in t.external_data:
                if kv.key == "location":
                    names.add(kv.value)
    return [folder / n for n in sorted(names)]


def model_sha256(path: Path, model: onnx.ModelProto | None = None) -> str:
    """Digest of the model file, and of its external-data files when it has any:
    two models that differ only in their weights never share a digest."""
    path = Path(path)
    model = model if model is not None else load_onnx(path)
    extra = external_data_files(model, path.parent)
    if not extra:
        return file_sha256(path)
    h = hashlib.sha256(file_sha256(path).encode())
    for f in extra:
        if not f.exists():
            raise ModelError(f"{path} keeps weights in {f.name}, which is missing beside it")
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def require_sha256(path: Path, expected: str, what: str, doing: str = "", got: str | None = None) -> None:
    """Refuse a model file whose digest is not ``expected``: the variant measured is the one
    planned, shipped and served. ``got`` saves hashing again where the caller has it."""
    got = got if got is not None else model_sha256(path)
    if got != expected.lower():
        raise ModelError(f"{path} is not {what} (SHA-256 {got[:16]}..., expected {expected[:16]}...): refusing{doing}")


def _dims(value_info: onnx.ValueInfoProto) -> tuple[Dim, ...]:
    out: list[Dim] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param and d.dim_param.strip() not in ANONYMOUS_DIMS:
            out.append(d.dim_param)
        else:
            out.append(None)
    return tuple(out)


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load a model or raise a one-line ``ModelError`` saying why not."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"model path is a directory, not an ONNX file: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except MemoryError:
        raise
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise ModelError(f"{path} is not an ONNX model: its graph has no nodes")
    return model


def inspect_model(path: Path) -> ModelInfo:
    path = Path(path)
    model = load_onnx(path)
    g = model.graph
    init_names = {i.name for i in g.initializer}
    inputs = []
    for vi in g.input:
        if vi.name in init_names:
            continue  # old IR: initializers listed as inputs
        elem = vi.type.tensor_type.elem_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name
        except Exception:
            raise ModelError(f"input {vi.name!r} has an unsupported element type {elem}") from None
        inputs.append(InputSpec(vi.name, dtype, _dims(vi)))
    counts: dict[str, int] = {}
    bounds: dict[str, int] = {}
    init_shapes = {i.name: tuple(i.dims) for i in g.initializer}
    input_names = {i.name for i in inputs}
    for node in g.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in input_names:
            table = init_shapes.get(node.input[0])
            if table:
                bounds[node.input[1]] = min(bounds.get(node.input[1], table[0]), table[0])
    opset = default_opset(model)
    out_specs = []
    for vi in g.output:
        try:
            odt = np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)).name
        except Exception:
            odt = "object"
        out_specs.append(InputSpec(vi.name, odt, _dims(vi)))
    return ModelInfo(
        path=path,
        sha256=model_sha256(path, model),
        inputs=tuple(inputs),
        outputs=tuple(o.name for o in g.output),
        opset=opset,
        op_counts=tuple(sorted(counts.items())),
        gather_bounds=tuple(sorted(bounds.items())),
        output_specs=tuple(out_specs),
    )
