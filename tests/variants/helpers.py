"""Small real models for the variant tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def slow_to_calibrate(path: Path, adds: int = 1500) -> Path:
    """A chain of ``adds`` Add nodes then a MatMul: tiny, but int8-static calibration
    records every one of those activations, so its build takes many seconds."""
    nodes, x = [], "x"
    for i in range(adds):
        nodes.append(helper.make_node("Add", [x, "b"], [f"a{i}"]))
        x = f"a{i}"
    nodes.append(helper.make_node("MatMul", [x, "w"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [
            numpy_helper.from_array(np.full(16, 1e-3, np.float32), "b"),
            numpy_helper.from_array(np.eye(16, dtype=np.float32), "w"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path
