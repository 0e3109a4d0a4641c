"""FLOPs and bytes moved by one batch through an ONNX graph, per op and in total.

The first input to a cross-hardware transfer (issue 6): every input is sized
from the input layout at the given batch (the batch on each input's own batch
axis, unbatched inputs such as a sample rate as they are, every other dynamic
dim resolved), then shapes come from ONNX shape inference, in rounds with the
small shape arithmetic it cannot see through (``Shape`` -> ``Slice`` ->
``Concat`` -> ``Reshape``) folded in between, as a runtime folds it. FLOPs
count a multiply-add as two; bytes count every tensor a node reads and writes
once (weights included), in the element size of the precision asked for — the
traffic an unfused execution moves, an upper bound a fused runtime beats.
Constants and folded shape arithmetic cost nothing: no kernel runs for them.

Control flow is costed through its subgraphs, whose nodes count like any other:

- ``If``: the branch a constant condition selects; else the costlier branch
  (more FLOPs, then more bytes), since the condition is data (silero's
  ``sr == 16000``) and a plan must not promise the cheaper path.
- ``Loop``: the body times its trip count ``M`` when ``M`` is a constant,
  else once (a data-dependent count cannot be known before running; one
  iteration is a lower bound). An early exit through ``cond`` is not seen, so
  a constant ``M`` is an upper bound.
- ``Scan``: the body times the scan axis' length, known once the inputs are
  sized; else once.

Loop-carried values are assumed to keep their shape across iterations, which
ONNX's own inference will not assume (it leaves them unsized).
"""

from __future__ import annotations

import math
from collections import ChainMap, defaultdict
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from optiserve.errors import ModelError, UsageError
from optiserve.models.graph import default_opset, inspect_model, load_onnx, subgraphs_of
from optiserve.models.layout import infer_layout
from optiserve.types import InputLayout

ELEMENTWISE = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Erf",
    "Sqrt",
    "Pow",
    "Exp",
    "Log",
    "Reciprocal",
    "Clip",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Gelu",
    "Cast",
    "Where",
    "Neg",
    "Abs",
    "Max",
    "Min",
    "Sum",
}
REDUCE = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2"}
RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_NEVER_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
_FOLD_ELEMENTS = 4096  # shape arithmetic is tiny; anything bigger is real work, left to the runtime
_NO_COUNT = 2**31
_MAX_FOLD_ROUNDS = 64  # each round sizes at least one more Reshape; real models need a handful
ITEMSIZE = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 0.5}

Shapes = Mapping[str, tuple[int, ...]]
_V = TypeVar("_V")


@dataclass(frozen=True)
class GraphCost:
    batch: int
    flops: float
    bytes_moved: float
    by_op: dict[str, tuple[float, float]] = field(default_factory=dict)  # op type -> (flops, bytes)
    nodes: tuple[tuple[float, float], ...] = ()  # per node (flops, bytes): what a roofline sums over
    io_bytes: float = 0.0  # graph inputs and outputs at this batch: what crosses to a device and back
    weight_bytes: float = 0.0  # initialisers in the precision asked for: what a device must hold

    def roofline_s(self, flops_per_s: float, bytes_per_s: float) -> float:
        """Each node bound by compute or by memory, whichever is slower on that machine."""
        if not self.nodes:
            return max(self.flops / flops_per_s, self.bytes_moved / bytes_per_s)
        return sum(max(f / flops_per_s, b / bytes_per_s) for f, b in self.nodes)

    @property
    def intensity(self) -> float:
        """FLOPs per byte: which side of a roofline's ridge the graph sits on."""
        return self.flops / self.bytes_moved if self.bytes_moved else math.inf


def model_layout(path: Path) -> InputLayout | None:
    """The layout inferred from the model file alone, for profiles that predate
    recording one; None when the file leaves a dim unresolved (then only dim 0 is set)."""
    try:
        return infer_layout(inspect_model(path))
    except (ModelError, UsageError):
        return None


def profile_layout(meta: Mapping[str, Any], path: Path) -> InputLayout | None:
    """The layout a profile recorded (``meta["layout"]``), else the model's own (older profiles)."""
    recorded = meta.get("layout")
    if isinstance(recorded, Mapping) and recorded.get("inputs"):
        return InputLayout.from_dict(dict(recorded))
    return model_layout(path)


def _subgraphs(g: onnx.GraphProto) -> list[onnx.GraphProto]:
    return [sub for node in g.node for sub in subgraphs_of(node)]


def _clear_value_info(g: onnx.GraphProto) -> None:
    """Drop shapes recorded at export (often symbolic or stale), in subgraphs too."""
    del g.value_info[:]
    for sub in _subgraphs(g):
        _clear_value_info(sub)


def _sized(model: onnx.ModelProto, batch: int, layout: InputLayout | None) -> onnx.ModelProto:
    """A copy with every input's shape fixed from ``layout`` at ``batch`` and shapes
    inferred, in rounds: infer, fold what became computable, infer again."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name in inits:
            continue  # old IR lists initialisers as inputs
        tt = vi.type.tensor_type
        dims = tt.shape.dim
        try:
            want = layout.get(vi.name).at(batch) if layout is not None else None
        except KeyError:
            want = None
        if want is None:  # no layout for this input: the batch on dim 0, as before layouts
            if dims and not _fixed(dims[0]):
                dims[0].dim_value = batch
            continue
        if tt.HasField("shape") and len(dims) != len(want):
            raise ModelError(f"the layout gives input {vi.name!r} {len(want)} dims but the model has {len(dims)}")
        tt.shape.Clear()
        tt.shape.SetInParent()  # a 0-d input keeps an empty (known) shape
        for d in want:
            tt.shape.dim.add().dim_value = d
    for vi in m.graph.output:  # declared symbolic (or Paddle's -1) dims would survive inference's merge
        dims = vi.type.tensor_type.shape.dim
        if any(not _fixed(d) for d in dims):
            vi.type.tensor_type.ClearField("shape")
    opset = default_opset(m)
    _constants_to_initializers(m.graph)
    _strip_weights(m.graph)
    _clear_value_info(m.graph)
    for _ in range(_MAX_FOLD_ROUNDS):  # each round keeps the shapes of the last: they only get sharper
        m = _infer(m, batch)
        if not _fold(m.graph, {}, {}, opset):
            break
    return m


def _fixed(d: onnx.TensorShapeProto.Dimension, empty: bool = False) -> bool:
    """A dim with a size: exporters write -1 (Paddle) or 0 for "any"; a known 0 is an empty tensor."""
    return d.HasField("dim_value") and (d.dim_value > 0 or (empty and d.dim_value == 0))


def _infer(m: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises its own InferenceError and plain RuntimeErrors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"shape inference failed at batch {batch}: {first[:200]}") from None


def _constants_to_initializers(g: onnx.GraphProto) -> None:
    """``Constant`` nodes become initialisers: no kernel runs for them, and shape
    inference's data propagation reads initialisers, not ``Constant`` outputs."""
    keep: list[onnx.NodeProto] = []
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            g.initializer.append(t)
        else:
            keep.append(node)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)
    for sub in _subgraphs(g):
        _constants_to_initializers(sub)


def _strip_weights(g: onnx.GraphProto) -> None:
    """Drop the data of tensors too big to be shape arithmetic: inference reads only their
    dims, and each round would otherwise copy every weight through protobuf."""
    for t in g.initializer:
        if math.prod(t.dims) > _FOLD_ELEMENTS:
            for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(name)
    for sub in _subgraphs(g):
        _strip_weights(sub)


def _fold(g: onnx.GraphProto, outer_shapes: Shapes, outer_values: Mapping[str, np.ndarray], opset: int) -> bool:
    """Evaluate the small shape arithmetic (``Shape`` -> ``Slice`` -> ``Concat`` -> ``Reshape``)
    that ONNX's data propagation leaves unknown, and keep the results as initialisers,
    so the next round of inference sizes what follows. True when anything was folded."""
    shapes = _known(g, outer_shapes)
    values = _constants(g, outer_values, limit=_FOLD_ELEMENTS)
    outputs = {o.name for o in g.output}  # kept as nodes: a graph output must be produced by one
    nodes: list[onnx.NodeProto] = []
    changed = False
    for node in g.node:
        cond = values.get(node.input[0]) if node.op_type == "If" else None
        if cond is not None and cond.size == 1:  # a constant condition: the chosen branch is the graph
            branch = _graph_attr(node, "then_branch" if bool(cond.reshape(())) else "else_branch")
            nodes.extend(_inline(branch, node, g))
            changed = True
            continue
        got = None if outputs & set(node.output) else _evaluate(node, shapes, values, opset)
        if got is None:
            if node.op_type in ("Loop", "Scan"):
                changed |= _seed_body(node, shapes, opset)
            for sub in subgraphs_of(node):
                changed |= _fold(sub, shapes, values, opset)
            if node.op_type == "Loop":
                changed |= _loop_outputs(node, shapes, values, g)
            nodes.append(node)
            continue
        for name, arr in zip(node.output, got, strict=False):
            if name:
                values[name] = arr
                g.initializer.append(numpy_helper.from_array(np.asarray(arr), name))
        changed = True
    if changed:
        del g.node[:]
        g.node.extend(nodes)
    return changed


def _seed_body(node: onnx.NodeProto, shapes: Shapes, opset: int) -> bool:
    """Give a Loop or Scan body's inputs the shapes of the values fed to them. ONNX's
    Loop inference drops loop-carried shapes (they may change per iteration); a cost
    assumes they do not, the common case. True when a declared shape changed."""
    body = _graph_attr(node, "body")
    fed: list[tuple[tuple[int, ...] | None, onnx.ValueInfoProto]] = []
    if node.op_type == "Loop":
        fed = [(shapes.get(x), vi) for x, vi in zip(node.input[2:], body.input[2:], strict=False)]
    else:
        n_scan = _attr(node, "num_scan_inputs")
        if opset < 9 or not isinstance(n_scan, int):
            return False  # Scan-8 keeps a batch axis inside its body: left to ONNX
        n_state = len(node.input) - n_scan
        fed = [(shapes.get(x), vi) for x, vi in zip(node.input[:n_state], body.input[:n_state], strict=False)]
        axes = _attr(node, "scan_input_axes")
        for k, (x, vi) in enumerate(zip(node.input[n_state:], body.input[n_state:], strict=False)):
            s = shapes.get(x)
            ax = int(axes[k]) if isinstance(axes, list) and k < len(axes) else 0
            if s is not None and -len(s) <= ax < len(s):
                ax %= len(s)
                fed.append((s[:ax] + s[ax + 1 :], vi))
    changed = False
    for s, vi in fed:
        if s is None or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        have = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if tuple(have) == s and tt.HasField("shape"):
            continue
        if tt.HasField("shape") and (
            len(have) != len(s) or any(h not in (-1, v) for h, v in zip(have, s, strict=True))
        ):
            continue  # declared differently: the body says what it takes
        tt.ClearField("shape")
        tt.shape.SetInParent()
        for d in s:
            tt.shape.dim.add().dim_value = d
        changed = True
    return changed


def _loop_outputs(node: onnx.NodeProto, shapes: Shapes, values: Mapping[str, np.ndarray], g: onnx.GraphProto) -> bool:
    """Shapes of a Loop's outputs, which ONNX leaves unknown: a carried value whose body
    output keeps its input's shape has it after the loop too; a scan output stacks the
    body's per-iteration value ``M`` times when ``M`` is a constant."""
    body = _graph_attr(node, "body")
    inner = _known(body, shapes)
    n_carried = len(node.input) - 2
    trip = _trip_count(node, shapes, values, 0)
    changed = False
    for k, (name, out) in enumerate(zip(node.output, body.output[1:], strict=False)):
        s = inner.get(out.name)
        if not name or name in shapes or s is None:
            continue
        if k < n_carried:
            if inner.get(body.input[2 + k].name) != s:
                continue
        elif trip is None:
            continue
        else:
            s = (trip, *s)
        g.value_info.append(onnx.helper.make_tensor_value_info(name, out.type.tensor_type.elem_type, list(s)))
        changed = True
    return changed


def _inline(branch: onnx.GraphProto, node: onnx.NodeProto, into: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes of ``branch`` standing in for the ``If`` ``node``: shape inference
    cannot size an If whose branches differ in shape, even when the condition is known."""
    into.initializer.extend(branch.initializer)
    made = {o for n in branch.node for o in n.output}
    rename: dict[str, str] = {}
    tail: list[onnx.NodeProto] = []
    for inner, outer in zip(branch.output, node.output, strict=False):
        if not outer:
            continue
        if inner.name in made and inner.name not in rename:
            rename[inner.name] = outer
        else:  # an outer value or an initialiser passed straight through
            tail.append(onnx.helper.make_node("Identity", [rename.get(inner.name, inner.name)], [outer]))
    out: list[onnx.NodeProto] = []
    for n in branch.node:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        _rename(c, rename)
        out.append(c)
    return out + tail


def _rename(node: onnx.NodeProto, rename: Mapping[str, str]) -> None:
    node.input[:] = [rename.get(i, i) for i in node.input]
    node.output[:] = [rename.get(o, o) for o in node.output]
    for sub in subgraphs_of(node):  # subgraphs may read the renamed values from the outer scope
        for n in sub.node:
            _rename(n, rename)
        for vi in sub.output:
            vi.name = rename.get(vi.name, vi.name)


def _evaluate(
    node: onnx.NodeProto, shapes: Shapes, values: Mapping[str, np.ndarray], opset: int
) -> list[np.ndarray] | None:
    """The outputs of a node computable now, if small; None otherwise."""
    if node.domain not in ("", "ai.onnx") or subgraphs_of(node) or node.op_type in _NEVER_FOLD:
        return None
    if node.op_type in ("Shape", "Size"):
        x = shapes.get(node.input[0])
        if x is None:
            return None
        if node.op_type == "Size":
            return [np.array(math.prod(x), np.int64)]
        start, end = _attr(node, "start"), _attr(node, "end")
        lo = int(start) if isinstance(start, int) else 0
        hi = int(end) if isinstance(end, int) else len(x)
        return [np.array(x[lo:hi], np.int64)]
    names = [n for n in node.input if n]
    if (not names and node.op_type != "Constant") or any(n not in values for n in names):
        return None
    feeds = {n: values[n] for n in dict.fromkeys(names)}
    try:
        from onnx.reference import ReferenceEvaluator

        g = onnx.helper.make_graph(
            [node],
            "fold",
            [
                onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                for n, a in feeds.items()
            ],
            [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o],
        )
        # a model, not the bare node: the node alone runs at the newest opset (Unsqueeze-13, not -11)
        m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", opset)])
        outs = ReferenceEvaluator(m).run(None, feeds)
    except Exception:  # an op the reference runtime lacks or rejects: leave it to inference
        return None
    arrays = [np.asarray(o) for o in outs]
    return arrays if all(a.size <= _FOLD_ELEMENTS for a in arrays) else None


def _known(g: onnx.GraphProto, outer: Shapes) -> ChainMap[str, tuple[int, ...]]:
    """Static shapes visible inside ``g``: its own, then the enclosing scopes'."""
    own: dict[str, tuple[int, ...]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(_fixed(d, empty=True) for d in tt.shape.dim):
            own[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
    for init in g.initializer:
        own[init.name] = tuple(init.dims)
    return ChainMap(own, *_scopes(outer))


def _scopes(outer: Mapping[str, _V]) -> list[MutableMapping[str, _V]]:
    return list(outer.maps) if isinstance(outer, ChainMap) else [dict(outer)]


def _constants(g: onnx.GraphProto, outer: Mapping[str, np.ndarray], limit: int = 1) -> ChainMap[str, np.ndarray]:
    """Initialisers of at most ``limit`` elements (``Constant`` nodes are initialisers by
    now), then the enclosing scopes': If conditions, Loop counts, shape arithmetic."""
    own = {
        i.name: numpy_helper.to_array(i)
        for i in g.initializer
        if math.prod(i.dims) <= limit and i.data_location != onnx.TensorProto.EXTERNAL
    }
    return ChainMap(own, *_scopes(outer))


def _attr(node: onnx.NodeProto, name: str) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def _graph_attr(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    g = _attr(node, name)
    if not isinstance(g, onnx.GraphProto):
        raise ModelError(f"{node.op_type} node {node.name!r} has no {name} subgraph")
    return g


class _Tally:
    """Per-node (flops, bytes) and per-op totals, each node scaled by how often it runs."""

    def __init__(self, size: float, opset: int) -> None:
        self.size, self.opset = size, opset
        self.per_op: MutableMapping[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.nodes: list[tuple[float, float]] = []

    @property
    def flops(self) -> float:
        return sum(f for f, _ in self.nodes)

    @property
    def nbytes(self) -> float:
        return sum(b for _, b in self.nodes)

    def merge(self, other: _Tally, times: float) -> None:
        for op, (f, b) in other.per_op.items():
            self.per_op[op][0] += f * times
            self.per_op[op][1] += b * times
        self.nodes.extend((f * times, b * times) for f, b in other.nodes)

    def graph(self, g: onnx.GraphProto, outer: Shapes, consts: Mapping[str, np.ndarray]) -> None:
        shapes = _known(g, outer)
        values = _constants(g, consts)
        for node in g.node:
            if node.op_type in ("If", "Loop", "Scan"):
                self._control(node, shapes, values)
                continue
            first = next((o for o in node.output if o), None)  # an LSTM may omit Y, keeping Y_h
            y = shapes.get(first) if first else None
            if y is None:
                continue
            flops = _node_flops(node, y, shapes)
            touched = [shapes.get(n) for n in [*node.input, *node.output] if n]
            nbytes = float(sum(math.prod(s) for s in touched if s is not None) * self.size)
            self.per_op[node.op_type][0] += flops
            self.per_op[node.op_type][1] += nbytes
            self.nodes.append((flops, nbytes))

    def _sub(self, g: onnx.GraphProto, shapes: Shapes, values: Mapping[str, np.ndarray]) -> _Tally:
        t = _Tally(self.size, self.opset)
        t.graph(g, shapes, values)
        return t

    def _control(self, node: onnx.NodeProto, shapes: Shapes, values: Mapping[str, np.ndarray]) -> None:
        if node.op_type == "If":
            then_t = self._sub(_graph_attr(node, "then_branch"), shapes, values)
            else_t = self._sub(_graph_attr(node, "else_branch"), shapes, values)
            cond = values.get(node.input[0])
            if cond is not None and cond.size == 1:
                chosen = then_t if bool(cond.reshape(())) else else_t
            else:
                chosen = max(then_t, else_t, key=lambda t: (t.flops, t.nbytes))
            self.merge(chosen, 1.0)
            return
        body = self._sub(_graph_attr(node, "body"), shapes, values)
        trips = _trip_count(node, shapes, values, self.opset)
        self.merge(body, 1.0 if trips is None else float(trips))


def _trip_count(node: onnx.NodeProto, shapes: Shapes, values: Mapping[str, np.ndarray], opset: int) -> int | None:
    """How often a Loop or Scan body runs, when known before running. A Loop's ``M``
    of 2**31 or more is no count: exporters write int64's maximum for a while loop."""
    if node.op_type == "Loop":
        m = values.get(node.input[0]) if node.input and node.input[0] else None
        if m is None or m.size != 1 or not 0 <= int(m.reshape(())) < _NO_COUNT:
            return None
        return int(m.reshape(()))
    n_scan = _attr(node, "num_scan_inputs")
    if not isinstance(n_scan, int) or n_scan < 1:
        return None
    x = shapes.get(node.input[len(node.input) - n_scan])
    if x is None:
        return None
    if opset < 9:  # Scan-8: [batch, sequence, ...], the body runs per row and step
        return x[0] * x[1] if len(x) >= 2 else None
    axes = _attr(node, "scan_input_axes")
    axis = int(axes[0]) if isinstance(axes, list) and axes else 0
    return x[axis] if -len(x) <= axis < len(x) else None


def _node_flops(node: onnx.NodeProto, y: tuple[int, ...], shapes: Shapes) -> float:
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = shapes.get(node.input[3 if op == "QLinearConv" else 1])
        return 2.0 * math.prod(y) * math.prod(w[1:]) if w else 0.0
    if op == "ConvTranspose":  # every input element scatters into Cout/group x kernel outputs
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        return 2.0 * math.prod(x) * math.prod(w[1:]) if x and w else 0.0
    if op in ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"):
        a = shapes.get(node.input[0])
        k = (a[-1] if op == "MatMul" or not _attr(node, "transA") else a[-2]) if a else 0
        return 2.0 * math.prod(y) * k
    if op in RECURRENT_GATES:  # input and recurrent matmuls per step; gate arithmetic left out
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        if not x or not w or len(x) < 3 or len(w) < 3:
            return 0.0
        steps_rows = x[0] * x[1]  # seq x batch in either layout
        directions, gates_h, inp = w[0], w[1], w[2]
        hidden = gates_h // RECURRENT_GATES[op]
        return 2.0 * steps_rows * directions * gates_h * (inp + hidden)
    if op in ELEMENTWISE or op in ("BatchNormalization", "LayerNormalization", "Softmax"):
        return {"BatchNormalization": 2.0, "LayerNormalization": 8.0, "Softmax": 5.0}.get(op, 1.0) * math.prod(y)
    if op in ("MaxPool", "AveragePool"):
        kernel = _attr(node, "kernel_shape")
        window = math.prod(int(v) for v in kernel) if isinstance(kernel, list) else 1
        return float(math.prod(y) * window)
    if op in REDUCE:
        x = shapes.get(node.input[0])
        return float(math.prod(x)) if x else 0.0
    return 0.0


def _weight_elements(g: onnx.GraphProto) -> int:
    """Initialisers and ``Constant`` tensors, in subgraphs too (a model wrapped in one If keeps all there)."""
    n = sum(int(math.prod(i.dims)) for i in g.initializer)
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            n += int(math.prod(node.attribute[0].t.dims))
    return n + sum(_weight_elements(sub) for sub in _subgraphs(g))


def graph_cost(path: Path, batch: int, precision: str = "fp32", layout: InputLayout | None = None) -> GraphCost:
    """Cost of one call of ``batch`` rows. ``layout`` is the profile's recorded one;
    None infers it from the model (old profiles), and where the file leaves a dim
    unresolved only dim 0 of each input is set, as before layouts."""
    if precision not in ITEMSIZE:
        raise ModelError(f"no element size for {precision!r}; known: {', '.join(ITEMSIZE)}")
    raw = load_onnx(path)
    if layout is None:
        layout = model_layout(path)
    model = _sized(raw, batch, layout)
    g = model.graph
    opset = default_opset(model)
    size = ITEMSIZE[precision]
    tally = _Tally(size, opset)
    tally.graph(g, {}, {})
    total_b = tally.nbytes
    if total_b == 0:
        raise ModelError(f"shape inference could not size any tensor of {path} at batch {batch}")
    shapes = _known(g, {})
    inits = {i.name for i in g.initializer}
    io = sum(math.prod(shapes[v.name]) * 4 for v in [*g.input, *g.output] if v.name in shapes and v.name not in inits)
    weights = _weight_elements(raw.graph) * size  # before folding: folded shapes are no weights
    return GraphCost(
        batch,
        tally.flops,
        total_b,
        {k: (v[0], v[1]) for k, v in tally.per_op.items()},
        tuple(tally.nodes),
        float(io),
        float(weights),
    )
