"""Real model-zoo architectures that ship inside the ``onnx`` package, made runnable.

``onnx/backend/test/data/light/light_*.onnx`` are the ONNX model zoo's graphs
(ResNet-50, SqueezeNet, DenseNet-121, ...) with every weight replaced by a
``ConstantOfShape``. We swap each for a seeded initializer whose values suit its
role (He-normal conv/gemm weights, sane BatchNorm statistics), declare a dynamic
batch, and keep the batch dynamic only when a batch-2 run reproduces batch-1
rows: a graph whose reshapes pin the batch stays at batch 1, honestly.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, version_converter

from optiserve.errors import ModelError

LIGHT_MODELS = {
    "resnet50": "ResNet-50 v1 (ONNX model zoo graph, seeded weights)",
    "squeezenet": "SqueezeNet 1.0 (ONNX model zoo graph, seeded weights)",
    "densenet121": "DenseNet-121 (ONNX model zoo graph, seeded weights)",
    "shufflenet": "ShuffleNet (ONNX model zoo graph, seeded weights)",
    "inception_v1": "GoogLeNet / Inception v1 (ONNX model zoo graph, seeded weights)",
}
TARGET_OPSET = 13  # per-channel QDQ quantisation needs 13


def light_model_path(name: str) -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


def _init_for(role: tuple[str, int] | None, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    op, idx = role or ("", -1)
    if op == "BatchNormalization" and idx in (1, 2, 3, 4):
        base = {1: 1.0, 2: 0.0, 3: 0.0, 4: 1.0}[idx]
        jitter = rng.random(shape) * 0.2 if idx == 4 else rng.standard_normal(shape) * 0.05
        return (base + jitter).astype(np.float32)
    if op in ("Conv", "Gemm", "MatMul") and idx == 1 and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else int(shape[0] if op == "MatMul" else shape[1])
        return (rng.standard_normal(shape) * math.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
    if op == "Mul":  # DenseNet's per-channel scale after BN
        return (1.0 + rng.standard_normal(shape) * 0.05).astype(np.float32)
    return (rng.standard_normal(shape) * 0.01).astype(np.float32)


def _materialise(model: onnx.ModelProto, seed: int) -> None:
    g = model.graph
    rng = np.random.default_rng(seed)
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    roles: dict[str, tuple[str, int]] = {}
    for node in g.node:
        for idx, name in enumerate(node.input):
            roles.setdefault(name, (node.op_type, idx))
    keep, new_inits = [], []
    for node in g.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in consts:
            shape = tuple(int(d) for d in consts[node.input[0]].reshape(-1))
            value = _init_for(roles.get(node.output[0]), shape, rng)
            new_inits.append(numpy_helper.from_array(value, node.output[0]))
        else:
            keep.append(node)
    used = {n for node in keep for n in node.input}
    old = [i for i in g.initializer if i.name in used]
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    g.initializer.extend(old + new_inits)
    # The light graphs' remaining BN tensors are placeholders: give every BN sane statistics.
    for i, init in enumerate(g.initializer):
        role = roles.get(init.name)
        if role and role[0] == "BatchNormalization" and role[1] in (1, 2, 3, 4):
            shape = tuple(int(d) for d in init.dims)
            g.initializer[i].CopyFrom(numpy_helper.from_array(_init_for(role, shape, rng), init.name))
    init_names = {i.name for i in g.initializer}
    real_inputs = [i for i in g.input if i.name not in init_names and i.name in used]
    del g.input[:]
    g.input.extend(real_inputs)
    del g.value_info[:]


def _calibrate_batchnorm(model: onnx.ModelProto, seed: int = 0) -> None:
    """Set every BatchNorm's running mean/var to the statistics its input really has,
    as training would; without it residual sums grow through the depth and the
    softmax saturates. One run of a probe graph in which each BN normalises with
    its input's own channel statistics gives every layer's statistics at once."""
    import onnxruntime as ort
    from onnx import helper

    g = model.graph
    bns = [n for n in g.node if n.op_type == "BatchNormalization"]
    if not bns:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    nodes, stats = [], []
    for node in probe.graph.node:
        if node.op_type != "BatchNormalization":
            nodes.append(node)
            continue
        x, tag = node.input[0], node.output[0]
        m0, mk, d, d2, v0 = (f"{tag}__{s}" for s in ("mean", "mean_k", "diff", "sq", "var"))
        nodes += [
            helper.make_node("ReduceMean", [x], [m0], axes=[0, 2, 3], keepdims=0),
            helper.make_node("ReduceMean", [x], [mk], axes=[0, 2, 3], keepdims=1),
            helper.make_node("Sub", [x, mk], [d]),
            helper.make_node("Mul", [d, d], [d2]),
            helper.make_node("ReduceMean", [d2], [v0], axes=[0, 2, 3], keepdims=0),
        ]
        bn = onnx.NodeProto()
        bn.CopyFrom(node)
        bn.input[3], bn.input[4] = m0, v0
        nodes.append(bn)
        stats.append((node, m0, v0))
    del probe.graph.node[:]
    probe.graph.node.extend(nodes)
    for _, m0, v0 in stats:
        probe.graph.output.extend([onnx.ValueInfoProto(name=m0), onnx.ValueInfoProto(name=v0)])
    inp = g.input[0]
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    names = [n for _, m0, v0 in stats for n in (m0, v0)]
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
        values = dict(zip(names, sess.run(names, {inp.name: x}), strict=True))
    except Exception:
        return  # a graph this probe cannot express keeps its placeholder statistics
    inits = {i.name: i for i in g.initializer}
    for node, m0, v0 in stats:
        for idx, key in ((3, m0), (4, v0)):
            inits[node.input[idx]].CopyFrom(numpy_helper.from_array(values[key].astype(np.float32), node.input[idx]))


def _set_batch(model: onnx.ModelProto, dyn: bool) -> None:
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            if dyn:
                dims[0].dim_param = "batch"
            else:
                dims[0].dim_value = 1


def _unpin_reshapes(model: onnx.ModelProto) -> None:
    """Reshape targets like [1, -1] pin the batch; ``0`` copies it instead."""
    consts = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = node.attribute[0].t
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in consts:
            tensor = consts[node.input[1]]
            arr = numpy_helper.to_array(tensor).copy()
            if arr.ndim == 1 and arr.size >= 2 and arr[0] == 1:
                arr[0] = 0
                tensor.CopyFrom(numpy_helper.from_array(arr, tensor.name))


def _batch_is_sound(model: onnx.ModelProto) -> bool:
    import onnxruntime as ort

    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [2, *[d if isinstance(d, int) else 1 for d in inp.shape[1:]]]
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        both = sess.run(None, {inp.name: x})[0]
        one = sess.run(None, {inp.name: x[1:2]})[0]
        return both.shape[0] == 2 and bool(np.allclose(both[1:2], one, rtol=1e-3, atol=1e-4))
    except Exception:
        return False


def build_light(name: str, seed: int = 0) -> onnx.ModelProto:
    path = light_model_path(name)
    if not path.exists():
        raise ModelError(f"this onnx package has no {path.name}; rebuild with another onnx version")
    model = onnx.load(str(path))
    _materialise(model, seed)
    model.ir_version = max(model.ir_version, 7)  # initializers need not be inputs
    with contextlib.suppress(Exception):  # a graph the converter refuses keeps its opset
        model = version_converter.convert_version(model, TARGET_OPSET)
    del model.graph.value_info[:]  # the converter pins inferred shapes at batch 1
    _unpin_reshapes(model)
    _calibrate_batchnorm(model, seed=seed)
    _set_batch(model, dyn=True)
    if not _batch_is_sound(model):
        _set_batch(model, dyn=False)
    onnx.checker.check_model(model)
    model.producer_name = "optiserve"
    return model
