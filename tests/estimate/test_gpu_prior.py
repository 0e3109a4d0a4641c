"""The GPU prior: fitted to the published results it names, and used by the accelerator curve."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from optiserve.estimate.catalog import load_catalog
from optiserve.estimate.gpu_prior import prior, published_efficiency
from optiserve.estimate.gpu_prior_data import RESNET50_OFFLINE
from optiserve.estimate.targets import LAUNCH_S, CurveBuilder, device_ceiling
from optiserve.types import Precision


def test_prior_is_the_geometric_mean_and_its_band_covers_every_published_result() -> None:
    p = prior("int8-static")
    assert p is not None and prior("fp16") is None  # only int8 has published GPU results here
    effs = [published_efficiency(r) for r in RESNET50_OFFLINE]
    assert p.efficiency == pytest.approx(float(np.exp(np.mean(np.log(effs)))))
    assert all(abs(e / p.efficiency - 1) <= p.band for e in effs)
    assert all(r.source.startswith("https://github.com/mlcommons/") for r in RESNET50_OFFLINE)


def test_int8_gpu_curve_uses_the_prior_not_the_cpu_efficiency(tmp_path: Path, mlp_path: Path) -> None:
    """Issue 18: the CPU's efficiency carried to tensor cores predicted GPUs 2-9x too slow."""
    from tests.estimate.test_targets import CATALOG, D, _profile

    p = tmp_path / "lab.yaml"
    p.write_text(CATALOG)
    cat = load_catalog([p], builtin=False)
    base = _profile(mlp_path, cat)
    int8 = [replace(m, config=replace(m.config, precision=Precision.INT8_STATIC)) for m in base.measurements]
    prof = replace(base, measurements=(*base.measurements, *int8))
    builder = CurveBuilder(prof, mlp_path, cat, cat.get("src"))
    gpu = cat.get("gpu")
    curve = builder.curve(gpu, "int8-static", 2)
    assert "GPU prior" in curve.basis
    c = builder.cost(16, "int8-static")
    dev = device_ceiling(gpu, 1, "int8")
    pr = prior("int8-static")
    assert pr is not None
    want = pr.device_s(c, dev) + D + len(c.nodes) * LAUNCH_S + 2 * c.io_bytes / 16e9
    assert curve.service.mean(16) == pytest.approx(want, rel=0.05)
    assert "GPU prior" not in builder.curve(gpu, "fp32", 2).basis  # fp32: uncalibrated, old model
