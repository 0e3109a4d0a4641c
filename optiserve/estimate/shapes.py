"""Shapes for costing: every input sized from the layout at a batch, then ONNX shape
inference in rounds with the small shape arithmetic it cannot see through folded in
between (``Shape`` -> ``Slice`` -> ``Concat`` -> ``Reshape``), as a runtime folds it;
control-flow bodies seeded from their node's inputs. ``graph_cost`` counts on them."""

from __future__ import annotations

import math
from collections import ChainMap
from collections.abc import Mapping, MutableMapping
from typing import TypeVar

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from optiserve.errors import ModelError
from optiserve.models.graph import default_opset, subgraphs_of
from optiserve.types import InputLayout

Shapes = Mapping[str, tuple[int, ...]]
_V = TypeVar("_V")
_NO_COUNT = 2**31
_NEVER_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
_FOLD_ELEMENTS = 4096  # shape arithmetic is tiny; anything bigger is real work, left to the runtime
_MAX_FOLD_ROUNDS = 64  # each round sizes at least one more Reshape; real models need a handful


def subgraphs(g: onnx.GraphProto) -> list[onnx.GraphProto]:
    return [sub for node in g.node for sub in subgraphs_of(node)]


def _clear_value_info(g: onnx.GraphProto) -> None:
    """Drop shapes recorded at export (often symbolic or stale), in subgraphs too."""
    del g.value_info[:]
    for sub in subgraphs(g):
        _clear_value_info(sub)


def sized(model: onnx.ModelProto, batch: int, layout: InputLayout | None) -> onnx.ModelProto:
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
        m = infer_shapes(m, batch)
        if not fold(m.graph, {}, {}, opset):
            break
    return m


def _fixed(d: onnx.TensorShapeProto.Dimension, empty: bool = False) -> bool:
    """A dim with a size: exporters write -1 (Paddle) or 0 for "any"; a known 0 is an empty tensor."""
    return d.HasField("dim_value") and (d.dim_value > 0 or (empty and d.dim_value == 0))


def infer_shapes(m: onnx.ModelProto, batch: int) -> onnx.ModelProto:
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
    for sub in subgraphs(g):
        _constants_to_initializers(sub)


def _strip_weights(g: onnx.GraphProto) -> None:
    """Drop the data of tensors too big to be shape arithmetic: inference reads only their
    dims, and each round would otherwise copy every weight through protobuf."""
    for t in g.initializer:
        if math.prod(t.dims) > _FOLD_ELEMENTS:
            for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(name)
    for sub in subgraphs(g):
        _strip_weights(sub)


def fold(g: onnx.GraphProto, outer_shapes: Shapes, outer_values: Mapping[str, np.ndarray], opset: int) -> bool:
    """Evaluate the small shape arithmetic (``Shape`` -> ``Slice`` -> ``Concat`` -> ``Reshape``)
    that ONNX's data propagation leaves unknown, and keep the results as initialisers,
    so the next round of inference sizes what follows. True when anything was folded."""
    shapes = known_shapes(g, outer_shapes)
    values = known_constants(g, outer_values, limit=_FOLD_ELEMENTS)
    outputs = {o.name for o in g.output}  # kept as nodes: a graph output must be produced by one
    nodes: list[onnx.NodeProto] = []
    changed = False
    for node in g.node:
        cond = values.get(node.input[0]) if node.op_type == "If" else None
        if cond is not None and cond.size == 1:  # a constant condition: the chosen branch is the graph
            branch = graph_attr(node, "then_branch" if bool(cond.reshape(())) else "else_branch")
            nodes.extend(_inline(branch, node, g))
            changed = True
            continue
        got = None if outputs & set(node.output) else _evaluate(node, shapes, values, opset)
        if got is None:
            if node.op_type in ("Loop", "Scan"):
                changed |= _seed_body(node, shapes, opset)
            for sub in subgraphs_of(node):
                changed |= fold(sub, shapes, values, opset)
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
    body = graph_attr(node, "body")
    fed: list[tuple[tuple[int, ...] | None, onnx.ValueInfoProto]] = []
    if node.op_type == "Loop":
        fed = [(shapes.get(x), vi) for x, vi in zip(node.input[2:], body.input[2:], strict=False)]
    else:
        n_scan = attr(node, "num_scan_inputs")
        if opset < 9 or not isinstance(n_scan, int):
            return False  # Scan-8 keeps a batch axis inside its body: left to ONNX
        n_state = len(node.input) - n_scan
        fed = [(shapes.get(x), vi) for x, vi in zip(node.input[:n_state], body.input[:n_state], strict=False)]
        axes = attr(node, "scan_input_axes")
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
    body = graph_attr(node, "body")
    inner = known_shapes(body, shapes)
    n_carried = len(node.input) - 2
    trip = trip_count(node, shapes, values, 0)
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
        start, end = attr(node, "start"), attr(node, "end")
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


def known_shapes(g: onnx.GraphProto, outer: Shapes) -> ChainMap[str, tuple[int, ...]]:
    """Static shapes visible inside ``g``: its own, then the enclosing scopes'."""
    own: dict[str, tuple[int, ...]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(_fixed(d, empty=True) for d in tt.shape.dim):
            own[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
    for init in g.initializer:
        own[init.name] = tuple(init.dims)
    return ChainMap(own, *scopes(outer))


def scopes(outer: Mapping[str, _V]) -> list[MutableMapping[str, _V]]:
    return list(outer.maps) if isinstance(outer, ChainMap) else [dict(outer)]


def known_constants(g: onnx.GraphProto, outer: Mapping[str, np.ndarray], limit: int = 1) -> ChainMap[str, np.ndarray]:
    """Initialisers of at most ``limit`` elements (``Constant`` nodes are initialisers by
    now), then the enclosing scopes': If conditions, Loop counts, shape arithmetic."""
    own = {
        i.name: numpy_helper.to_array(i)
        for i in g.initializer
        if math.prod(i.dims) <= limit and i.data_location != onnx.TensorProto.EXTERNAL
    }
    return ChainMap(own, *scopes(outer))


def attr(node: onnx.NodeProto, name: str) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def graph_attr(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    g = attr(node, name)
    if not isinstance(g, onnx.GraphProto):
        raise ModelError(f"{node.op_type} node {node.name!r} has no {name} subgraph")
    return g


def trip_count(node: onnx.NodeProto, shapes: Shapes, values: Mapping[str, np.ndarray], opset: int) -> int | None:
    """How often a Loop or Scan body runs, when known before running. A Loop's ``M``
    of 2**31 or more is no count: exporters write int64's maximum for a while loop."""
    if node.op_type == "Loop":
        m = values.get(node.input[0]) if node.input and node.input[0] else None
        if m is None or m.size != 1 or not 0 <= int(m.reshape(())) < _NO_COUNT:
            return None
        return int(m.reshape(()))
    n_scan = attr(node, "num_scan_inputs")
    if not isinstance(n_scan, int) or n_scan < 1:
        return None
    x = shapes.get(node.input[len(node.input) - n_scan])
    if x is None:
        return None
    if opset < 9:  # Scan-8: [batch, sequence, ...], the body runs per row and step
        return x[0] * x[1] if len(x) >= 2 else None
    axes = attr(node, "scan_input_axes")
    axis = int(axes[0]) if isinstance(axes, list) and axes else 0
    return x[axis] if -len(x) <= axis < len(x) else None
