from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optiserve.errors import ModelError
from optiserve.estimate.graph_cost import graph_cost
from optiserve.models.zoo import build_zoo, save_atomic


def _one_conv(tmp_path: Path) -> Path:
    w = numpy_helper.from_array(np.zeros((16, 3, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g = helper.make_graph(
        [node],
        "c",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16, 32, 32])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "conv.onnx"
    save_atomic(m, path)
    return path


def test_conv_flops_and_bytes_have_the_known_answer(tmp_path: Path) -> None:
    path = _one_conv(tmp_path)
    c = graph_cost(path, batch=2)
    assert c.flops == 2 * (2 * 16 * 32 * 32) * (3 * 3 * 3)  # 2 x outputs x (Cin x kh x kw)
    assert c.bytes_moved == 4 * (2 * 3 * 32 * 32 + 16 * 3 * 3 * 3 + 2 * 16 * 32 * 32)
    assert graph_cost(path, batch=2, precision="int8").bytes_moved == c.bytes_moved / 4
    assert graph_cost(path, batch=4).flops == 2 * c.flops


def test_zoo_models_scale_with_batch(tmp_path: Path) -> None:
    (mlp,) = build_zoo(tmp_path, ["mlp"])
    one, eight = graph_cost(mlp, 1), graph_cost(mlp, 8)
    assert one.flops == pytest.approx(2 * (64 * 256 + 256 * 256 + 256 * 10), rel=0.02)  # Gemms dominate
    assert eight.flops == pytest.approx(8 * one.flops, rel=0.01)
    assert eight.intensity > one.intensity  # weights are read once per batch: batching raises intensity
    assert set(one.by_op) >= {"Gemm", "Relu"}


def test_unknown_precision(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no element size"):
        graph_cost(_one_conv(tmp_path), 1, precision="fp8")
    onnx.checker.check_model(onnx.load(str(_one_conv(tmp_path))))
