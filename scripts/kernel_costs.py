#!/usr/bin/env python3
"""Measure ``optiserve/estimate/kernels.py``'s table on this machine (quiet, 1 thread).

    .venv/bin/python scripts/kernel_costs.py

Per op, ONNX Runtime's kernel time per element it touches (inputs and outputs), in
fp32-GEMM FLOP equivalents: the op's best call times the same thread's MatMul 512^3
rate, over the element count. fp32, and as the QDQ graph ``DequantizeLinear -> op ->
QuantizeLinear`` that ORT's QDQ transformer fuses where it has a QLinear kernel. The
ops and GEMM interleave over 5 rounds (a slow phase spoils one round of each, not one
op). Prints the table as Python for kernels.py, then each row.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from optiserve.profile.ceilings import best_seconds

RNG = np.random.default_rng(0)
ENC = (8, 128, 256)  # the encoder's activations at batch 8
SOFTMAX = (8, 4, 128, 128)  # its attention scores
CNN = (8, 64, 56, 56)  # a ResNet stage at batch 8
ROUNDS, SECONDS = 5, 0.1


def _vec(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


CASES: dict[str, tuple[tuple[int, ...], list[tuple[str, np.ndarray]], dict[str, Any]]] = {
    "Add": (ENC, [("b", _vec(ENC[-1:]))], {}),
    "Sub": (ENC, [("b", _vec(ENC[-1:]))], {}),
    "Mul": (ENC, [("b", _vec(ENC[-1:]))], {}),
    "Div": (ENC, [("b", np.array(1.41, np.float32))], {}),
    "Pow": (ENC, [("b", np.array(2.0, np.float32))], {}),
    "Sqrt": (ENC, [], {}),
    "Erf": (ENC, [], {}),
    "Tanh": (ENC, [], {}),
    "Sigmoid": (ENC, [], {}),
    "Relu": (CNN, [], {}),
    "Softmax": (SOFTMAX, [], {"axis": -1}),
    "LayerNormalization": (ENC, [("g", np.ones(ENC[-1], np.float32)), ("bb", np.zeros(ENC[-1], np.float32))], {}),
    "ReduceMean": (ENC, [], {"axes": [-1]}),
    "Transpose": ((8, 128, 4, 64), [], {"perm": [0, 2, 1, 3]}),
    "MaxPool": (CNN, [], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "GlobalAveragePool": (CNN, [], {}),
    "BatchNormalization": (CNN, [(n, np.ones(CNN[1], np.float32)) for n in ("g", "bb", "m", "v")], {}),
}


def _model(nodes: list[onnx.NodeProto], x: onnx.ValueInfoProto, y: int, inits: list[onnx.TensorProto]) -> bytes:
    out = helper.make_tensor_value_info("y" if y == TensorProto.FLOAT else "yq", y, None)
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [out], inits), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return bytes(m.SerializeToString())


def _session(model: bytes) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads, o.log_severity_level = 1, 1, 3
    return ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])


def _best(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> float:
    return best_seconds(functools.partial(sess.run, None, feeds), SECONDS, 1)


def main() -> None:
    gemm = _session(
        _model(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [512, 512]),
            TensorProto.FLOAT,
            [numpy_helper.from_array(_vec((512, 512)), "w")],
        )
    )
    gemm_feed = {"x": _vec((512, 512))}
    runs = {}
    for op, (shape, extra, attrs) in CASES.items():
        node = helper.make_node(op, ["x"] + [n for n, _ in extra], ["y"], **attrs)
        inits = [numpy_helper.from_array(v, n) for n, v in extra]
        fp32 = _session(_model([node], helper.make_tensor_value_info("x", TensorProto.FLOAT, shape), 1, inits))
        x = _vec(shape)
        touched = x.size + sum(v.size for _, v in extra) + fp32.run(None, {"x": x})[0].size
        scale = [numpy_helper.from_array(np.array(0.05, np.float32), "s")]
        scale.append(numpy_helper.from_array(np.array(128, np.uint8), "z"))
        nodes = [helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"])]
        qinits = list(scale)
        for n, v in extra:
            if v.size > 1 and op in ("Add", "Sub", "Mul"):  # a quantised second operand, as QDQ leaves it
                nodes.append(helper.make_node("DequantizeLinear", [n + "q", "s", "z"], [n]))
                qinits.append(numpy_helper.from_array(np.full(v.shape, 130, np.uint8), n + "q"))
            else:
                qinits.append(numpy_helper.from_array(v, n))
        nodes += [node, helper.make_node("QuantizeLinear", ["y", "s", "z"], ["yq"])]
        xq_info = helper.make_tensor_value_info("xq", TensorProto.UINT8, shape)
        qdq = _session(_model(nodes, xq_info, TensorProto.UINT8, qinits))
        xq = RNG.integers(0, 255, shape, dtype=np.uint8)
        runs[op] = (fp32, {"x": x}, qdq, {"xq": xq}, touched)
    best = {op: [float("inf"), float("inf")] for op in runs}
    gemm_s = float("inf")
    for _ in range(ROUNDS):
        gemm_s = min(gemm_s, _best(gemm, gemm_feed))
        for op, (fp32, feed, qdq, qfeed, _) in runs.items():
            best[op][0] = min(best[op][0], _best(fp32, feed))
            best[op][1] = min(best[op][1], _best(qdq, qfeed))
    rate = 2 * 512**3 / gemm_s
    print(f"# fp32 GEMM {rate / 1e9:.0f} GFLOP/s, onnxruntime {ort.__version__}")
    print("FLOP_EQUIVALENTS = {")
    for op, (*_, touched) in runs.items():
        print(f'    "{op}": ({best[op][0] * rate / touched:.1f}, {best[op][1] * rate / touched:.1f}),')
    print("}")


if __name__ == "__main__":
    main()
