import pytest

from optiserve.errors import UnknownNameError
from optiserve.runtimes.onnxruntime_cpu import OnnxRuntimeCPU
from optiserve.runtimes.registry import availability, check_options, get_runtime, runtime_names


def test_registry_errors_list_valid_names() -> None:
    with pytest.raises(UnknownNameError) as exc:
        get_runtime("tensorflow")
    assert all(name in str(exc.value) for name in runtime_names()) and "\n" not in str(exc.value)
    assert availability()["onnxruntime-cpu"] is None


def test_option_values_are_checked() -> None:
    rt = OnnxRuntimeCPU()
    with pytest.raises(UnknownNameError) as exc:
        check_options(rt, {"graph_optimization": "max"})
    assert "extended" in str(exc.value)
    merged = check_options(rt, {"execution_mode": "parallel", "inter_op_threads": "2"})
    assert merged["execution_mode"] == "parallel" and merged["graph_optimization"] == "all"


def test_session_options_map_to_onnxruntime() -> None:
    import onnxruntime as ort

    so = OnnxRuntimeCPU().session_options(2, {"graph_optimization": "basic", "execution_mode": "parallel"})
    assert so.intra_op_num_threads == 2
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL
