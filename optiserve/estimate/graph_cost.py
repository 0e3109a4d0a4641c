"""FLOPs and bytes moved by one batch through an ONNX graph, per op and in total.

The first input to a cross-hardware transfer (issue 6): every input is sized
from the input layout at the given batch (the batch on each input's own batch
axis, unbatched inputs such as a sample rate as they are, every other dynamic
dim resolved), then shapes come from ONNX shape inference, in rounds with the
small shape arithmetic it cannot see through (``Shape`` -> ``Slice`` ->
``Concat`` -> ``Reshape``) folded in between, as a runtime folds it. FLOPs
count a multiply-add as two; bytes count every tensor a node reads and writes
once (weights included), in the element size of the precision asked for, except
the tensors a fusing runtime never writes out (:func:`fused_tensors`).
Constants and folded shape arithmetic cost nothing: no kernel runs for them.

Why fusion is counted: ONNX Runtime runs the CNN's Conv -> BatchNormalization ->
Relu (-> Add) as one fused convolution (its profiler: 97% of the time in Conv, no
BatchNormalization or Relu kernel), so an unfused count made the roofline
memory-bound where the machine is compute-bound, and the transfer moved that
time with the memory bandwidth. On the reference machines (issue 18) the fp32
cross-machine error fell from 24% to 20% with it. An int8-static (QDQ) graph
fuses less: the quantiser folds BatchNormalization and Relu into the quantised
convolution, but residual Adds, GELU's Div/Erf/Mul and the bias Adds stay
kernels of their own (QLinearAdd, QLinearMul, Erf: ORT's profiler on the
quantised variants), so there only those two are counted as fused.

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
from collections import defaultdict
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx

from optiserve.errors import ModelError, UsageError
from optiserve.estimate.kernels import flop_equivalents
from optiserve.estimate.shapes import (
    Shapes,
    attr,
    graph_attr,
    known_constants,
    known_shapes,
    sized,
    subgraphs,
    trip_count,
)
from optiserve.models.graph import default_opset, inspect_model, load_onnx
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
ITEMSIZE = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 0.5}

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
    vector: tuple[float, ...] = ()  # per node, its non-GEMM kernel's work in fp32-GEMM FLOPs (kernels.py)

    def roofline_s(self, flops_per_s: float, bytes_per_s: float, dram_bytes_per_s: float = math.inf) -> float:
        """Each node bound by compute or by memory, whichever is slower on that machine;
        the whole call no faster than reading the weights once at ``dram_bytes_per_s``."""
        floor = self.weight_bytes / dram_bytes_per_s
        if not self.nodes:
            return max(self.flops / flops_per_s, self.bytes_moved / bytes_per_s, floor)
        return max(sum(max(f / flops_per_s, b / bytes_per_s) for f, b in self.nodes), floor)

    def cpu_s(self, flops_per_s: float, vector_flops_per_s: float, dram_bytes_per_s: float = math.inf) -> float:
        """A CPU's time: GEMM-class nodes at the precision's ceiling, every other node's
        vector work at the fp32 GEMM ceiling (``kernels.py``), no faster than reading the
        weights once from DRAM. The tensors of each node are taken to be in cache."""
        if len(self.vector) != len(self.nodes) or not self.nodes:
            return self.roofline_s(flops_per_s, math.inf, dram_bytes_per_s)
        work = sum(
            v / vector_flops_per_s if v else f / flops_per_s for (f, _), v in zip(self.nodes, self.vector, strict=True)
        )
        return max(work, self.weight_bytes / dram_bytes_per_s)

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


class _Tally:
    """Per-node (flops, bytes) and per-op totals, each node scaled by how often it runs."""

    def __init__(self, size: float, opset: int, quantized: bool = False) -> None:
        self.size, self.opset, self.quantized = size, opset, quantized
        self.per_op: MutableMapping[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.nodes: list[tuple[float, float]] = []
        self.vector: list[float] = []

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
        self.vector.extend(v * times for v in other.vector)

    def graph(self, g: onnx.GraphProto, outer: Shapes, consts: Mapping[str, np.ndarray]) -> None:
        shapes = known_shapes(g, outer)
        values = known_constants(g, consts)
        internal = fused_tensors(g, self.quantized)
        for node in g.node:
            if node.op_type in ("If", "Loop", "Scan"):
                self._control(node, shapes, values)
                continue
            first = next((o for o in node.output if o), None)  # an LSTM may omit Y, keeping Y_h
            y = shapes.get(first) if first else None
            if y is None:
                continue
            flops = _node_flops(node, y, shapes)
            touched = [shapes.get(n) for n in [*node.input, *node.output] if n and n not in internal]
            nbytes = float(sum(math.prod(s) for s in touched if s is not None) * self.size)
            self.per_op[node.op_type][0] += flops
            self.per_op[node.op_type][1] += nbytes
            self.nodes.append((flops, nbytes))
            # vector work: every element it computes, and those it reads from memory
            worked = [shapes.get(n) for n in node.output if n] + [
                shapes.get(n) for n in node.input if n and n not in internal
            ]
            per = flop_equivalents(node.op_type, self.quantized)
            self.vector.append(per * float(sum(math.prod(s) for s in worked if s is not None)))

    def _sub(self, g: onnx.GraphProto, shapes: Shapes, values: Mapping[str, np.ndarray]) -> _Tally:
        t = _Tally(self.size, self.opset, self.quantized)
        t.graph(g, shapes, values)
        return t

    def _control(self, node: onnx.NodeProto, shapes: Shapes, values: Mapping[str, np.ndarray]) -> None:
        if node.op_type == "If":
            then_t = self._sub(graph_attr(node, "then_branch"), shapes, values)
            else_t = self._sub(graph_attr(node, "else_branch"), shapes, values)
            cond = values.get(node.input[0])
            if cond is not None and cond.size == 1:
                chosen = then_t if bool(cond.reshape(())) else else_t
            else:
                chosen = max(then_t, else_t, key=lambda t: (t.flops, t.nbytes))
            self.merge(chosen, 1.0)
            return
        body = self._sub(graph_attr(node, "body"), shapes, values)
        trips = trip_count(node, shapes, values, self.opset)
        self.merge(body, 1.0 if trips is None else float(trips))


PRODUCERS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}  # kernels with an epilogue to fuse into
EPILOGUE = ELEMENTWISE | {"BatchNormalization"}  # what a float graph fuses (ORT: FusedConv, BiasGelu, ...)
QDQ_FOLDED = {"BatchNormalization", "Relu", "Clip"}  # what quantisation folds into a QLinearConv/MatMul


def fused_tensors(g: onnx.GraphProto, quantized: bool = False) -> set[str]:
    """The tensors of ``g`` a fusing runtime keeps in registers, never in memory: the
    output of a GEMM, convolution or absorbed node that only absorbed nodes read (an
    epilogue, or a chain of element-wise ops), and is no graph output. ``quantized``:
    an int8 QDQ graph, where only BatchNormalization and Relu/Clip are absorbed."""
    absorbs = QDQ_FOLDED if quantized else EPILOGUE
    readers: dict[str, list[str]] = defaultdict(list)
    for node in g.node:
        for name in node.input:
            if name:
                readers[name].append(node.op_type)
    outputs = {o.name for o in g.output}
    return {
        name
        for node in g.node
        if node.op_type in absorbs or node.op_type in PRODUCERS
        for name in node.output
        if name and name not in outputs and readers.get(name) and all(r in absorbs for r in readers[name])
    }


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
        k = (a[-1] if op == "MatMul" or not attr(node, "transA") else a[-2]) if a else 0
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
        kernel = attr(node, "kernel_shape")
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
    return n + sum(_weight_elements(sub) for sub in subgraphs(g))


def graph_cost(path: Path, batch: int, precision: str = "fp32", layout: InputLayout | None = None) -> GraphCost:
    """Cost of one call of ``batch`` rows. ``layout`` is the profile's recorded one;
    None infers it from the model (old profiles), and where the file leaves a dim
    unresolved only dim 0 of each input is set, as before layouts."""
    if precision not in ITEMSIZE:
        raise ModelError(f"no element size for {precision!r}; known: {', '.join(ITEMSIZE)}")
    raw = load_onnx(path)
    if layout is None:
        layout = model_layout(path)
    model = sized(raw, batch, layout)
    g = model.graph
    opset = default_opset(model)
    size = ITEMSIZE[precision]
    tally = _Tally(size, opset, quantized=precision == "int8")
    tally.graph(g, {}, {})
    total_b = tally.nbytes
    if total_b == 0:
        raise ModelError(f"shape inference could not size any tensor of {path} at batch {batch}")
    shapes = known_shapes(g, {})
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
        tuple(tally.vector),
    )
