"""The synthetic zoo, built with ``onnx.helper`` from seeded random weights (no torch).

Each builder returns a checked ``ModelProto`` with a dynamic batch dim named
``batch``. The architectures are the usual serving shapes: a tabular MLP, a
ResNet-18-style CNN at half width, and a 4-layer BERT-style encoder.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization; ORT's quantizers and fusions all know it


class _Graph:
    """Small accumulator so builders read as a list of layers."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(value, n))
        return n

    def normal(self, prefix: str, shape: tuple[int, ...], std: float) -> str:
        return self.const(prefix, (self.rng.standard_normal(shape) * std).astype(np.float32))

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def model(
        self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="optiserve")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def build_mlp(seed: int = 0, features: int = 64, hidden: int = 256, classes: int = 10) -> onnx.ModelProto:
    g = _Graph(seed)
    x = "features"
    dims = [features, hidden, hidden, classes]
    for i, (cin, cout) in enumerate(itertools.pairwise(dims)):
        w = g.normal("w", (cout, cin), math.sqrt(2.0 / cin))
        b = g.normal("b", (cout,), 0.01)
        x = g.op("Gemm", [x, w, b], transB=1)
        if i < len(dims) - 2:
            x = g.op("Relu", [x])
    g.nodes[-1].output[0] = "logits"
    return g.model(
        "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
    )


def _conv_bn(g: _Graph, x: str, cin: int, cout: int, k: int, stride: int, gamma: float = 1.0) -> str:
    w = g.normal("conv_w", (cout, cin, k, k), math.sqrt(2.0 / (cin * k * k)))
    y = g.op("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
    scale = g.const("bn_s", (gamma * (1 + 0.1 * g.rng.standard_normal(cout))).astype(np.float32))
    bias = g.normal("bn_b", (cout,), 0.05)
    mean = g.normal("bn_m", (cout,), 0.05)
    var = g.const("bn_v", (1 + 0.2 * g.rng.random(cout)).astype(np.float32))
    return g.op("BatchNormalization", [y, scale, bias, mean, var], epsilon=1e-5)


def build_cnn(
    seed: int = 0, widths: tuple[int, ...] = (32, 64, 128, 256), blocks: int = 2, classes: int = 1000
) -> onnx.ModelProto:
    """ResNet-18 layout (basic blocks, 2 per stage) at half width, 224x224 input."""
    g = _Graph(seed)
    x = g.op("Relu", [_conv_bn(g, "pixels", 3, widths[0], 7, 2)])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = widths[0]
    for stage, cout in enumerate(widths):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            y = g.op("Relu", [_conv_bn(g, x, cin, cout, 3, stride)])
            y = _conv_bn(g, y, cout, cout, 3, 1, gamma=0.5)
            skip = x if stride == 1 and cin == cout else _conv_bn(g, x, cin, cout, 1, stride)
            x = g.op("Relu", [g.op("Add", [y, skip])])
            cin = cout
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    w = g.normal("fc_w", (classes, cin), math.sqrt(1.0 / cin))
    x = g.op("Gemm", [x, w, g.normal("fc_b", (classes,), 0.01)], transB=1)
    g.nodes[-1].output[0] = "logits"
    return g.model(
        "cnn",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
    )


def _layer_norm(g: _Graph, x: str, hidden: int) -> str:
    gamma = g.const("ln_g", np.ones(hidden, np.float32))
    beta = g.const("ln_b", np.zeros(hidden, np.float32))
    return g.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-12)


def _dense(g: _Graph, x: str, cin: int, cout: int) -> str:
    return g.op("Add", [g.op("MatMul", [x, g.normal("w", (cin, cout), 0.02)]), g.normal("b", (cout,), 0.02)])


def build_encoder(
    seed: int = 0,
    vocab: int = 8192,
    seq: int = 128,
    hidden: int = 256,
    heads: int = 4,
    layers: int = 4,
    ffn: int = 1024,
    classes: int = 2,
) -> onnx.ModelProto:
    """BERT-style encoder: token + position embeddings, post-LN blocks, a CLS classifier."""
    g = _Graph(seed)
    head_dim = hidden // heads
    emb = g.op("Gather", [g.normal("word_emb", (vocab, hidden), 0.02), "input_ids"], axis=0)
    x = _layer_norm(g, g.op("Add", [emb, g.normal("pos_emb", (seq, hidden), 0.02)]), hidden)
    # mask (B,S) int -> additive bias (B,1,1,S): 0 where attended, -1e4 where padded
    m = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    m = g.op(
        "Mul",
        [g.op("Sub", [g.const("one", np.array(1, np.float32)), m]), g.const("neg", np.array(-10000.0, np.float32))],
    )
    bias = g.op("Unsqueeze", [m, g.const("axes", np.array([1, 2], np.int64))])
    split = g.const("heads_shape", np.array([0, 0, heads, head_dim], np.int64))
    merge = g.const("merge_shape", np.array([0, 0, hidden], np.int64))
    scale = g.const("scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
    for _ in range(layers):
        q = g.op("Transpose", [g.op("Reshape", [_dense(g, x, hidden, hidden), split])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [_dense(g, x, hidden, hidden), split])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [_dense(g, x, hidden, hidden), split])], perm=[0, 2, 1, 3])
        s = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), bias])
        a = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
        a = g.op("Reshape", [g.op("Transpose", [a], perm=[0, 2, 1, 3]), merge])
        x = _layer_norm(g, g.op("Add", [x, _dense(g, a, hidden, hidden)]), hidden)
        f = _dense(g, x, hidden, ffn)
        erf = g.op("Erf", [g.op("Div", [f, g.const("sqrt2", np.array(math.sqrt(2.0), np.float32))])])
        f = g.op(
            "Mul",
            [
                g.op("Mul", [f, g.const("half", np.array(0.5, np.float32))]),
                g.op("Add", [erf, g.const("one", np.array(1.0, np.float32))]),
            ],
        )
        x = _layer_norm(g, g.op("Add", [x, _dense(g, f, ffn, hidden)]), hidden)
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="out_hidden"))
    cls = g.op("Gather", [x, g.const("cls", np.array(0, np.int64))], axis=1)
    pooled = g.op("Tanh", [_dense(g, cls, hidden, hidden)])
    _dense(g, pooled, hidden, classes)
    g.nodes[-1].output[0] = "logits"
    return g.model(
        "encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", seq]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", seq]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", seq, hidden]),
        ],
    )
