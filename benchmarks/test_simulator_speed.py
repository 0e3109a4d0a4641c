"""The simulator must fit inside an optimizer loop: 1e6 requests well under a second."""

from __future__ import annotations

import time

import numpy as np

from optiserve.estimate import BatchingPolicy, ServiceModel, poisson_arrivals, simulate


def test_million_requests(record_ratio) -> None:  # type: ignore[no-untyped-def]
    svc = ServiceModel({1: np.full(4, 1e-3), 8: np.full(4, 4e-3)})
    arr = poisson_arrivals(1500, 1_000_000, seed=5)
    policy = BatchingPolicy(max_batch=8, max_delay_s=0.002)
    simulate(arr[:100], svc, policy)  # compile
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        simulate(arr, svc, policy)
        times.append(time.perf_counter() - t0)
    best = float(np.median(times))
    record_ratio(
        "simulator seconds per 1e6 requests (b<=8, 2 ms delay)",
        best,
        "< 1.0",
        best < 1.0,
        f"{1e6 / best / 1e6:.1f} M simulated requests/s",
    )
