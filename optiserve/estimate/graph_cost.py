"""FLOPs and bytes moved by one batch through an ONNX graph, per op and in total.

The first input to a cross-hardware transfer (issue 6): shapes come from ONNX
shape inference at the given batch size; FLOPs count a multiply-add as two;
bytes count every tensor a node reads and writes once (weights included), in
the element size of the precision asked for — the traffic an unfused
execution moves, an upper bound a fused runtime beats.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import shape_inference

from optiserve.errors import ModelError
from optiserve.models.graph import load_onnx

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
    "Clip",
    "LeakyRelu",
    "HardSigmoid",
    "Cast",
    "Where",
    "Neg",
    "Abs",
    "Max",
    "Min",
    "Sum",
}
ITEMSIZE = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 0.5}


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


def _with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    del m.graph.value_info[:]
    return shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)


def graph_cost(path: Path, batch: int, precision: str = "fp32") -> GraphCost:
    if precision not in ITEMSIZE:
        raise ModelError(f"no element size for {precision!r}; known: {', '.join(ITEMSIZE)}")
    model = _with_batch(load_onnx(path), batch)
    g = model.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    for init in g.initializer:
        shapes[init.name] = tuple(init.dims)
    size = ITEMSIZE[precision]
    per_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    nodes: list[tuple[float, float]] = []
    for node in g.node:
        outs = [shapes.get(o) for o in node.output]
        if not outs or outs[0] is None:
            continue
        y = outs[0]
        flops = 0.0
        if node.op_type == "Conv":
            w = shapes.get(node.input[1])
            if w:
                flops = 2.0 * math.prod(y) * math.prod(w[1:])
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0])
            k = (a[-1] if node.op_type == "MatMul" or not _attr(node, "transA") else a[-2]) if a else 0
            flops = 2.0 * math.prod(y) * k
        elif node.op_type in ELEMENTWISE or node.op_type in ("BatchNormalization", "LayerNormalization", "Softmax"):
            flops = {"BatchNormalization": 2.0, "LayerNormalization": 8.0, "Softmax": 5.0}.get(node.op_type, 1.0)
            flops *= math.prod(y)
        elif node.op_type in ("MaxPool", "AveragePool"):
            kernel = _attr(node, "kernel_shape")
            window = math.prod(int(v) for v in kernel) if isinstance(kernel, list) else 1
            flops = float(math.prod(y) * window)
        elif node.op_type in ("GlobalAveragePool", "ReduceMean"):
            x = shapes.get(node.input[0])
            flops = float(math.prod(x)) if x else 0.0
        touched = [shapes.get(n) for n in [*node.input, *node.output] if n]
        nbytes = sum(math.prod(s) for s in touched if s is not None) * size
        per_op[node.op_type][0] += flops
        per_op[node.op_type][1] += nbytes
        nodes.append((flops, float(nbytes)))
    total_f = sum(v[0] for v in per_op.values())
    total_b = sum(v[1] for v in per_op.values())
    if total_b == 0:
        raise ModelError(f"shape inference could not size any tensor of {path} at batch {batch}")
    inits = {i.name for i in g.initializer}
    io = sum(math.prod(shapes[v.name]) * 4 for v in [*g.input, *g.output] if v.name in shapes and v.name not in inits)
    weights = sum(math.prod(i.dims) for i in g.initializer) * size
    return GraphCost(
        batch, total_f, total_b, {k: (v[0], v[1]) for k, v in per_op.items()}, tuple(nodes), float(io), float(weights)
    )


def _attr(node: onnx.NodeProto, name: str) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None
