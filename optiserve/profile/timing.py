"""The measuring loop: warm up until timings stop drifting, then sample until the
p99's confidence interval is tight enough or the budget is spent (pyperf's
discipline, applied to per-call latency rather than loop averages).

The timed region is exactly one ``call()`` between two ``perf_counter_ns``
reads; bookkeeping happens between chunks, outside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from optiserve.profile.stats import p99_ci_rel


@dataclass(frozen=True)
class TimingPolicy:
    budget_s: float = 10.0  # measuring time per config, after warm-up
    warmup_max_s: float = 5.0
    warmup_min_iters: int = 5
    stable_tol: float = 0.05  # window medians within 5% of each other
    stable_windows: int = 3
    target_ci: float = 0.05  # relative half-width of the p99's 95% CI
    min_samples: int = 100
    max_samples: int = 200_000


@dataclass(frozen=True)
class WarmupResult:
    iterations: int
    stable: bool
    per_call_s: float


def warm_up(call: Callable[[], object], policy: TimingPolicy) -> WarmupResult:
    """Run windows of calls until the last ``stable_windows`` window medians agree."""
    pc = time.perf_counter_ns
    start = pc()
    deadline = start + int(policy.warmup_max_s * 1e9)
    t0 = pc()
    call()  # first call: allocations, lazy init; never representative
    first = (pc() - t0) / 1e9
    iters = 1
    medians: list[float] = []
    per_call = first
    while True:
        window = max(3, min(50, math.ceil(0.05 / max(per_call, 1e-7))))
        times = []
        for _ in range(window):
            t0 = pc()
            call()
            times.append(pc() - t0)
        iters += window
        med = float(np.median(times)) / 1e9
        medians.append(med)
        per_call = med
        recent = medians[-policy.stable_windows :]
        stable = (
            len(recent) == policy.stable_windows
            and iters >= policy.warmup_min_iters
            and (max(recent) - min(recent)) <= policy.stable_tol * min(recent)
        )
        if stable:
            return WarmupResult(iters, True, per_call)
        if pc() >= deadline:
            return WarmupResult(iters, False, per_call)


def measure(call: Callable[[], object], policy: TimingPolicy, per_call_s: float) -> tuple[np.ndarray, str]:
    """Sample per-call latency (ns). Returns the samples and why sampling stopped:
    ``ci-reached``, ``budget`` or ``max-samples``."""
    pc = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    deadline = pc() + int(policy.budget_s * 1e9)
    chunk = max(10, min(policy.min_samples, math.ceil(0.25 / max(per_call_s, 1e-7))))
    while True:
        for _ in range(chunk):
            t0 = pc()
            call()
            append(pc() - t0)
        n = len(samples)
        if n >= policy.min_samples and p99_ci_rel(samples) <= policy.target_ci:
            reason = "ci-reached"
            break
        if n >= policy.max_samples:
            reason = "max-samples"
            break
        now = pc()
        if now >= deadline:
            reason = "budget"
            break
        # grow the chunk geometrically so the CI check costs O(n log n) overall,
        # but never plan past the deadline
        left = (deadline - now) / 1e9
        chunk = max(10, min(n // 4 + 1, math.ceil(left / max(per_call_s, 1e-7)), policy.max_samples - n))
    return np.asarray(samples, dtype=np.int64), reason
