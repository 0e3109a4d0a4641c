"""``one_line``: the cause of a failure in one readable line, from real back-end errors."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from optiserve._reasons import one_line
from optiserve.errors import VariantError


def _error(call: object) -> BaseException:
    try:
        call()  # type: ignore[operator]
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def test_an_invalid_graph_names_the_attribute_not_the_temp_path(tmp_path: Path) -> None:
    """The opset-11 per-channel QDQ failure: DequantizeLinear has no ``axis`` before opset 13."""
    nodes = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0)]
    inits = [
        numpy_helper.from_array(np.zeros((2, 2), np.int8), "q"),
        numpy_helper.from_array(np.ones(2, np.float32), "s"),
        numpy_helper.from_array(np.zeros(2, np.int8), "z"),
    ]
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], inits)
    path = tmp_path / "0123456789abcdef01234567.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    exc = _error(lambda: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    assert str(tmp_path) in str(exc)
    line = one_line(exc)
    assert line.startswith("InvalidGraph: ") and "Unrecognized attribute: axis for operator DequantizeLinear" in line
    assert "\n" not in line and str(tmp_path) not in line and "[ONNXRuntimeError]" not in line and len(line) <= 300
    assert "0123456789abcdef01234567.onnx" in line or "Error Unrecognized" in line


def test_a_multi_line_runtime_error_keeps_its_detail_line() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    exc = _error(lambda: sess.run(None, {"x": np.zeros((1, 4), np.float32)}))
    assert "\n" in str(exc)
    line = one_line(exc)
    assert line.startswith("InvalidArgument: Got invalid dimensions for input: x")
    assert "Got: 4 Expected: 3" in line and "Please fix" not in line and "\n" not in line


def test_cpp_positions_are_dropped_from_a_kernel_failure() -> None:
    shape = numpy_helper.from_array(np.array([4], np.int64), "s")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    line = one_line(_error(lambda: sess.run(None, {"x": np.zeros((1, 3), np.float32)})))
    assert "Reshape node" in line and "cannot be reshaped" in line
    assert ".h:" not in line and "onnxruntime::" not in line


def test_a_traceback_in_a_message_gives_its_last_error_line() -> None:
    text = 'Traceback (most recent call last):\n  File "x.py", line 3, in <module>\n    go()\nValueError: bad input'
    assert one_line(RuntimeError(text)) == "RuntimeError: ValueError: bad input"


def test_paths_in_temp_and_cache_folders_become_file_names() -> None:
    tmp = Path(tempfile.gettempdir()) / "ort.quant.x1" / "augmented_model.onnx"
    scratch = "/srv/cache/variants/.0123456789abcdef01234567.k2j/work/pre.onnx"
    line = one_line(OSError(f"cannot write {tmp} or {scratch}; model /srv/models/m.onnx"))
    assert line == "OSError: cannot write augmented_model.onnx or pre.onnx; model /srv/models/m.onnx"


def test_own_errors_empty_messages_and_limits() -> None:
    assert one_line(VariantError("building fp16 stopped after 600 s (time limit)")) == (
        "building fp16 stopped after 600 s (time limit)"
    )
    assert one_line(KeyboardInterrupt()) == "KeyboardInterrupt"
    try:
        try:
            raise MemoryError("std::bad_alloc")
        except MemoryError as inner:
            raise RuntimeError() from inner
    except RuntimeError as exc:
        assert one_line(exc) == "MemoryError: std::bad_alloc"
    long = one_line(ValueError("x" * 1000), limit=80)
    assert len(long) == 80 and long.endswith("...")


@pytest.mark.parametrize("limit", [60, 300])
def test_a_long_line_keeps_the_error_at_its_end(limit: int) -> None:
    msg = "Load model from m.onnx failed:This is an invalid model. In Node, " + "(a, b) -> (c), " * 30
    line = one_line(RuntimeError(msg + "Error Unrecognized attribute: axis"), limit=limit)
    assert len(line) <= limit
    if limit == 300:
        assert line.endswith("Error Unrecognized attribute: axis") and " ... " in line


def test_nested_onnxruntime_failures_keep_the_innermost_node() -> None:
    """A failure inside If/Loop bodies is reported once per enclosing node; the cause is the innermost."""

    class InvalidArgument(Exception):
        pass

    text = (
        "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running If node. "
        "Name:'If_0' Status Message: Non-zero status code returned while running If node. Name:'If_0_else/dec/If_1' "
        "Status Message: Non-zero status code returned while running LSTM node. Name:'If_0_else/dec/rnn/LSTM' "
        "Status Message: Input X must have 3 dimensions only. Actual:{1,1,1,128,2}"
    )
    assert one_line(InvalidArgument(text)) == (
        "InvalidArgument: LSTM node 'LSTM': Input X must have 3 dimensions only. Actual:{1,1,1,128,2}"
    )
