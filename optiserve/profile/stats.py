"""Statistics for latency samples: percentiles, a distribution-free CI for the p99,
and pyperf-style checks that say when a figure should not be trusted."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from optiserve.types import LatencyStats

Z95 = 1.959963984540054


def quantile_ci(sorted_x: np.ndarray, q: float, z: float = Z95) -> tuple[float, float]:
    """Order-statistic confidence interval for the q-quantile (normal approx. to the
    binomial). Needs no assumption about the latency distribution. With too few
    samples to bound it (about 600 for the p99) the upper bound is ``inf``: the
    data cannot say how bad the tail is, and the interval says so."""
    n = len(sorted_x)
    if n == 0:
        return (math.nan, math.nan)
    half = z * math.sqrt(n * q * (1 - q))
    lo = max(math.floor(n * q - half), 0)
    hi = math.ceil(n * q + half)
    return float(sorted_x[lo]), (float(sorted_x[hi]) if hi <= n - 1 else math.inf)


def block_quantile_ci(
    x: np.ndarray, q: float, block: int, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Moving-block bootstrap interval for the q-quantile of ``x`` in time order.

    Why not ``quantile_ci``: latencies under load are not independent; a host stall or a burst
    delays every request for a while, so the order-statistic interval is too narrow (measured on a
    Zen 4 guest: the same rate's p99 moved 17-36% between 20 s runs, outside each run's interval).
    Resampling blocks of ``block`` consecutive requests keeps that dependence in the interval."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n == 0:
        return (math.nan, math.nan)
    block = max(1, min(int(block), n))
    k = math.ceil(n / block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - block + 1, size=(resamples, k))
    idx = (starts[:, :, None] + np.arange(block)).reshape(resamples, k * block)[:, :n]
    stats = np.quantile(x[idx], q, axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(stats, [tail, 1 - tail])
    return float(lo), float(hi)


def p99_ci_rel(samples_ns: Sequence[int] | np.ndarray) -> float:
    """Relative half-width of the p99's 95% CI (``inf`` with under 2 samples)."""
    x = np.sort(np.asarray(samples_ns, dtype=np.float64))
    if len(x) < 2:
        return math.inf
    lo, hi = quantile_ci(x, 0.99)
    p99 = float(np.quantile(x, 0.99))
    return (hi - lo) / (2 * p99) if p99 > 0 else math.inf


def summarize(samples_ns: Sequence[int] | np.ndarray) -> LatencyStats:
    x = np.sort(np.asarray(samples_ns, dtype=np.float64)) / 1e6  # ms
    if len(x) == 0:
        raise ValueError("no samples")
    p = np.quantile(x, [0.5, 0.9, 0.95, 0.99, 0.999])
    lo, hi = quantile_ci(x, 0.99)
    return LatencyStats(
        n=len(x),
        mean=float(x.mean()),
        std=float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        min=float(x[0]),
        max=float(x[-1]),
        p50=float(p[0]),
        p90=float(p[1]),
        p95=float(p[2]),
        p99=float(p[3]),
        p999=float(p[4]),
        p99_ci_low=lo,
        p99_ci_high=hi,
    )


def samples_for_target(n: int, rel: float, target: float) -> int:
    """CI width shrinks like 1/sqrt(n): how many samples reach ``target`` (pyperf's
    ``_bench`` gives the same advice for its runs)."""
    if not math.isfinite(rel) or rel <= target:
        return n
    return math.ceil(n * (rel / target) ** 2)


def stability_warnings(
    stats: LatencyStats,
    *,
    target_ci: float,
    warmup_stable: bool,
    stop_reason: str,
    foreign_cpu: float | None = None,
) -> list[str]:
    """Human-readable complaints, in pyperf's spirit: say why a figure is shaky."""
    out: list[str] = []
    cv = stats.std / stats.mean if stats.mean > 0 else 0.0
    if cv > 0.10:
        out.append(f"noisy: std is {cv:.0%} of the mean")
    if stats.min > 0 and stats.p50 / stats.min > 1.5:
        out.append(f"median is {stats.p50 / stats.min:.1f}x the minimum: interference or frequency scaling")
    if not warmup_stable:
        out.append("warm-up never stabilised within its budget")
    rel = stats.p99_ci_rel
    if not math.isfinite(rel):
        out.append(
            f"p99 has no upper confidence bound from {stats.n} samples (about 600 needed, "
            f"{stop_reason}); treat it as a lower bound"
        )
    elif rel > target_ci:
        need = samples_for_target(stats.n, rel, target_ci)
        out.append(
            f"p99 CI is +/-{rel:.0%} (target {target_ci:.0%}) after {stats.n} samples; "
            f"about {need} samples would reach it ({stop_reason})"
        )
    if stats.n < 1000:
        out.append(f"p99.9 from {stats.n} samples is an extrapolation; trust p99 and below")
    if foreign_cpu is not None and foreign_cpu > 0.10:
        out.append(f"machine was busy: other processes used {foreign_cpu:.0%} of the CPUs while measuring")
    return out
