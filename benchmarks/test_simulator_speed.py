"""The simulator must fit inside an optimizer loop: 1e6 requests well under a second.
Asserts it with batching to 8; batch 1 (one event per request, the slow end) only reports."""

from __future__ import annotations

import time

import numpy as np
import pytest

from optiserve.estimate import BatchingPolicy, ServiceModel, poisson_arrivals, simulate

CASES = {
    "b<=8, 2 ms delay": (
        ServiceModel({1: np.full(4, 1e-3), 8: np.full(4, 4e-3)}),
        BatchingPolicy(max_batch=8, max_delay_s=0.002),
        1500,
    ),
    "batch 1": (ServiceModel({1: np.full(4, 1e-3)}), BatchingPolicy(max_batch=1), 800),
}


@pytest.mark.parametrize("case", list(CASES))
def test_million_requests(case: str, record_ratio) -> None:  # type: ignore[no-untyped-def]
    svc, policy, rate = CASES[case]
    arr = poisson_arrivals(rate, 1_000_000, seed=5)
    simulate(arr[:100], svc, policy)  # compile
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        simulate(arr, svc, policy)
        times.append(time.perf_counter() - t0)
    best = float(np.median(times))
    asserted = case.startswith("b<=8")
    record_ratio(
        f"simulator seconds per 1e6 requests ({case})",
        best,
        "< 1.0" if asserted else "report",
        best < 1.0,
        f"{1e6 / best / 1e6:.1f} M simulated requests/s at {rate}/s offered",
    )
