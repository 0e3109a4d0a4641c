"""Honest check of the roofline transfer where two 'machines' exist here: the CNN
profiled with 1 thread predicts the 2-thread profile (same CPU, twice the compute,
the measured two-thread copy bandwidth). Only reports: the error per batch size and
its mean, against no target (the planner's same-generation band of 20% is a prior)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from optiserve.estimate.graph_cost import graph_cost
from optiserve.estimate.transfer import Ceiling, fit_transfer
from optiserve.models.zoo import build_zoo
from optiserve.profile.store import load_profile

REPO = Path(__file__).resolve().parents[1]
MATMUL = """
import time, numpy as np
a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
a @ a
t = time.perf_counter(); n = 0
while time.perf_counter() - t < 1.0:
    a @ a; n += 1
print(2 * 1024**3 * n / (time.perf_counter() - t))
"""


def _gflops(threads: int) -> float:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", MATMUL], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def _copy_bandwidth(parallel: bool) -> float:
    import numba

    @numba.njit(parallel=parallel)
    def copy(src, dst):  # type: ignore[no-untyped-def]
        for c in numba.prange(64):
            lo = c * (src.size // 64)
            dst[lo : lo + src.size // 64] = src[lo : lo + src.size // 64]

    src = np.ones(64 << 20, np.uint8)
    dst = np.empty_like(src)
    copy(src, dst)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        copy(src, dst)
        times.append(time.perf_counter() - t0)
    return 2 * src.nbytes / float(np.median(times))


def test_one_thread_predicts_two(tmp_path: Path, record_ratio) -> None:  # type: ignore[no-untyped-def]
    prof = load_profile(REPO / "profiles" / "reference" / "cnn-default")
    (model,) = build_zoo(tmp_path, ["cnn"])
    from optiserve.models.graph import inspect_model

    assert inspect_model(model).sha256 == prof.meta["model"]["sha256"], "zoo build differs from the profiled CNN"
    one = Ceiling("1 thread", _gflops(1), _copy_bandwidth(False))
    two = Ceiling("2 threads", _gflops(2), _copy_bandwidth(True))
    rows = {(m.config.threads, m.config.batch_size): m for m in prof.ok}
    batches = sorted(b for t, b in rows if t == 1)
    costs = {b: graph_cost(model, b) for b in batches}
    fit = fit_transfer([costs[b] for b in batches], [rows[(1, b)].stats.mean / 1e3 for b in batches], one)  # type: ignore[union-attr]
    errors = []
    for b in batches:
        pred, band = fit.predict(costs[b], two)
        meas = rows[(2, b)].stats.mean / 1e3  # type: ignore[union-attr]
        errors.append((pred - meas) / meas)
        record_ratio(
            f"transfer cnn b={b}: predicted/measured mean, 1 -> 2 threads",
            pred / meas,
            "report",
            True,
            f"pred {pred * 1e3:.2f} ms (+/-{band:.0%} fit band), measured {meas * 1e3:.2f} ms",
        )
    record_ratio(
        "transfer cnn 1 -> 2 threads: mean |error|",
        float(np.mean(np.abs(errors))),
        "report",
        True,
        f"efficiency {fit.efficiency:.2f}, overhead {fit.overhead_s * 1e3:.2f} ms; ceilings "
        f"{one.flops_per_s / 1e9:.0f}/{two.flops_per_s / 1e9:.0f} GFLOP/s, "
        f"{one.bytes_per_s / 1e9:.1f}/{two.bytes_per_s / 1e9:.1f} GB/s (measured here)",
    )


def test_planner_path_one_thread_predicts_two(tmp_path: Path, record_ratio) -> None:  # type: ignore[no-untyped-def]
    """The same check through what `optiserve plan` uses: catalog ceilings of the entry matched
    to this machine (no micro-benchmark), fit on 1 thread, predicted at 2, per precision."""
    from optiserve.estimate.catalog import load_catalog
    from optiserve.estimate.source import source_entry
    from optiserve.estimate.targets import PRECISION_COST, CurveBuilder, cpu_ceiling

    prof = load_profile(REPO / "profiles" / "reference" / "cnn-int8")
    (model,) = build_zoo(tmp_path, ["cnn"])
    cat = load_catalog()
    src, _ = source_entry(cat, prof.meta["hardware"], None)
    builder = CurveBuilder(prof, model, cat, src)
    for precision in builder.precisions:
        fit = builder.fit(precision, 1)
        two = cpu_ceiling(src, 2, PRECISION_COST[precision][1])
        errs = []
        for b in builder.batches(precision, 2):
            pred, _ = fit.predict(builder.cost(b, precision), two)
            meas = float(np.mean(builder.curve(src, precision, 2).service.samples[b]))
            # curve() on the source itself is the measured samples scaled by 1 (same ceilings)
            errs.append((pred - meas) / meas)
        record_ratio(
            f"transfer (planner path) cnn {precision} 1 -> 2 threads: mean |err|",
            float(np.mean(np.abs(errs))),
            "report",
            True,
            f"source {src.key}; per batch {[f'{e:+.0%}' for e in errs]}",
        )
