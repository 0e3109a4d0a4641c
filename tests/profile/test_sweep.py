from pathlib import Path

import pytest

from optiserve.errors import UnknownNameError, UsageError
from optiserve.profile.sweep import SweepSpec, build_spec
from optiserve.types import Precision


def test_cli_overrides_yaml(tmp_path: Path) -> None:
    f = tmp_path / "sweep.yaml"
    f.write_text("batch: [1, 2]\nthreads: [1]\nbudget: 3\nmin-samples: 50\n")
    spec = build_spec(f, {"batch": "4,8", "precision": "fp32"})
    assert spec.batch == [4, 8] and spec.threads == [1] and spec.budget == 3 and spec.min_samples == 50
    assert spec.precision == [Precision.FP32]


def test_cross_product_and_options() -> None:
    spec = build_spec(None, {"batch": "1,2", "threads": "1,2", "option": "graph_optimization=all|basic"})
    configs = spec.configs()
    assert len(configs) == 8
    assert {dict(c.options)["graph_optimization"] for c in configs} == {"all", "basic"}
    assert len({c.key for c in configs}) == 8


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"batch": "1,x"}, "malformed --batch '1,x'"),
        ({"batch": "0"}, "malformed --batch"),
        ({"batch": ""}, "malformed --batch"),
        ({"threads": "two"}, "malformed --threads"),
        ({"precision": "fp64"}, "valid precisions: auto, fp32, fp16"),
        ({"calibrator": "kl"}, "valid calibrators: minmax, entropy, percentile"),
        ({"budget": "-1"}, "malformed --budget"),
    ],
)
def test_malformed_values_name_the_flag(overrides: dict[str, str], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        build_spec(None, overrides)


def test_unknown_runtime_and_option_list_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="onnxruntime-cpu"):
        build_spec(None, {"runtime": "tvm"}).configs()
    with pytest.raises(UnknownNameError, match="graph_optimization"):
        build_spec(None, {"option": "turbo=on"}).configs()
    with pytest.raises(UsageError, match="KEY=V1"):
        build_spec(None, {"option": "turbo"}).configs()


def test_bad_sweep_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        build_spec(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch: [1, 2\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        build_spec(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(UsageError, match="mapping"):
        build_spec(bad)
    bad.write_text("batches: [1]\n")
    with pytest.raises(UsageError, match="batches"):
        build_spec(bad)


def test_defaults_cover_the_issue_sweep() -> None:
    spec = SweepSpec()
    assert spec.batch == [1, 2, 4, 8, 16] and 1 in spec.threads
