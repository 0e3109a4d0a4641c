"""``compare`` of profiles of two different models is not a regression gate: refused with
one line unless asked for; different machines still only warn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from optiserve.errors import UsageError
from optiserve.profile.stats import summarize
from optiserve.profile.store import ParquetStore
from optiserve.report import compare
from optiserve.types import BenchConfig, Measurement, Precision, Status


def _profile(folder: Path, model: str, sha: str, hardware: str = "hw0") -> Path:
    store = ParquetStore(folder)
    store.create({"model": {"name": model, "sha256": sha}, "hardware": {"id": hardware}})
    for batch in (1, 2):
        ns = tuple(int(v) for v in np.random.default_rng(batch).lognormal(np.log(2e6), 0.05, 500))
        cfg = BenchConfig("onnxruntime-cpu", Precision.FP32, batch, 1)
        store.append(Measurement(cfg, Status.OK, stats=summarize(ns), samples_ns=ns))
    return folder


@pytest.fixture
def two_models(tmp_path: Path) -> tuple[Path, Path]:
    return _profile(tmp_path / "cnn", "cnn", "a" * 64), _profile(tmp_path / "encoder", "encoder", "b" * 64)


def test_different_models_are_refused(two_models: tuple[Path, Path]) -> None:
    with pytest.raises(UsageError, match="different models") as exc:
        compare(*two_models)
    assert "cnn" in str(exc.value) and "encoder" in str(exc.value) and "--allow-different-models" in str(exc.value)


def test_allowed_explicitly_with_a_warning(two_models: tuple[Path, Path]) -> None:
    result = compare(*two_models, allow_different_models=True)
    assert len(result.rows) == 2 and any("different models" in w for w in result.warnings)


def test_same_model_on_other_machine_only_warns(tmp_path: Path) -> None:
    base = _profile(tmp_path / "a", "cnn", "a" * 64, "hw0")
    new = _profile(tmp_path / "b", "cnn", "a" * 64, "hw1")
    result = compare(base, new)
    assert any("different machines" in w for w in result.warnings) and not any("models" in w for w in result.warnings)


def test_cli_exit_codes(two_models: tuple[Path, Path]) -> None:
    from optiserve.cli import app

    run = CliRunner().invoke
    res = run(app, ["compare", *map(str, two_models)])
    assert res.exit_code == 2 and "different models" in res.output and "PASS" not in res.output, res.output
    assert "Traceback" not in res.output
    res = run(app, ["compare", *map(str, two_models), "--allow-different-models"])
    assert res.exit_code == 0 and "different models" in res.output, res.output
