import pytest

from optiserve.errors import UnknownNameError
from optiserve.types import BenchConfig, Precision


def test_config_key_is_stable_and_distinguishes_options() -> None:
    a = BenchConfig("onnxruntime-cpu", Precision.FP32, 4, 2, (("graph_optimization", "all"),))
    b = BenchConfig.from_dict(a.to_dict())
    c = BenchConfig("onnxruntime-cpu", Precision.FP32, 4, 2, (("graph_optimization", "basic"),))
    assert a == b and a.key == b.key
    assert a.key != c.key
    assert len(a.key) == 16


def test_precision_parse_lists_valid_names() -> None:
    assert Precision.parse(" FP32 ") is Precision.FP32
    with pytest.raises(UnknownNameError) as exc:
        Precision.parse("fp64")
    assert "int8-static" in str(exc.value) and "fp64" in str(exc.value)
