"""Predicted vs measured latency under load: the server on the MLP and the CNN at
10%, 50% and 80% of the capacity measured on this machine, each rate load-tested
for ~3000 requests, so the measured p99 has a usable confidence interval (printed).

Method: the server is pinned to CPU 0 and the Locust client to CPU 1 (on two
cores they otherwise fight for the CPU); the profile is measured on CPU 0 with
the server's thread count, and its serving stage (``profile --serving``: the
real server's front end, per-row and fixed costs, the server on CPU 0 and the
light Locust run on CPU 1) is added to it. A saturating run measures capacity,
used only to choose the rates.

The asserted prediction is ``loadtest --predict-from``'s own path
(``serve/prediction.forecast``) on that profile: **nothing fitted to the
runs**. Beside it the hand-fitted path is reported (not asserted): per-row CPU
fitted so the simulator's capacity equals the measured one, plus per-request
overheads drawn from a light run. Target: |p99 error| <= 15% at every rate.
Asserts it: a missed rate fails the test (after every rate of the model is
recorded, in the run's record as table ``rates``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import benchmarks.load_fidelity as lf
from benchmarks.record import REPORT
from optiserve.estimate import BatchingPolicy, poisson_arrivals
from optiserve.models.zoo import build_zoo
from optiserve.profile.stats import quantile_ci
from optiserve.serve.prediction import ServedConfig, forecast, server_model

DURATION_S = 20.0

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs: server and client apart")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_predicted_vs_measured_under_load(name: str, tmp_path: Path, record_ratio, record_rows) -> None:  # type: ignore[no-untyped-def]
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = {cpus[0]}, {cpus[1]}
    lf.CLIENT_CPUS = client_cpu
    (model,) = build_zoo(tmp_path, [name])
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, server_cpu)
    try:
        service = lf.profile_service(model, tmp_path / "profile", threads=1, batches="1,2,4,8", budget=2)
    finally:
        os.sched_setaffinity(0, mine)
    lf.add_serving_terms(model, tmp_path / "profile", 1, server_cpu, client_cpu)
    served = ServedConfig(threads=1, max_batch=8, max_delay_ms=2.0, server_cpus=len(server_cpu))
    terms = server_model(tmp_path / "profile", served)
    policy = BatchingPolicy(max_batch=8, max_delay_s=0.002)
    server = lf.Server(model, 1, 8, 2.0, cpus=server_cpu)
    try:
        cal = lf.calibrate(server, name, service, policy, tmp_path)
        for frac in (0.1, 0.5, 0.8):
            rate = cal.capacity * frac
            duration = min(max(DURATION_S, 3000 / rate), 60.0)  # ~3000 requests: a p99 worth comparing
            fitted = lf.predict(cal.service, policy, rate, duration, 1, cal.overhead_ms)
            n = int(np.ceil(rate * duration))
            predicted = forecast(poisson_arrivals(rate, n, 1), tmp_path / "profile", served).record
            run = lf.load(server.url, name, rate, duration, 1, tmp_path / "r.json")
            lat = np.sort(np.asarray(run["latency_ms"]))
            lo, hi = quantile_ci(lat, 0.99)
            err = (predicted["p99_ms"] - run["p99_ms"]) / run["p99_ms"]
            fitted_err = (fitted["p99_ms"] - run["p99_ms"]) / run["p99_ms"]
            record_ratio(
                f"{name} {frac:.0%} load ({rate:.0f}/s): predicted/measured p99",
                predicted["p99_ms"] / run["p99_ms"],
                "0.85-1.15",
                abs(err) <= 0.15,
                f"p50 pred {predicted['p50_ms']:.1f} meas {run['p50_ms']:.1f}; p99 pred {predicted['p99_ms']:.1f} "
                f"meas {run['p99_ms']:.1f} (95% CI {lo:.1f}-{hi:.1f}, n={lat.size}); late {run['late_fraction']:.1%}; "
                f"client busy {run.get('client_busy', float('nan')):.0%}; profile's serving terms: {terms.basis}",
            )
            record_ratio(
                f"{name} {frac:.0%} load: hand-fitted predicted/measured p99",
                fitted["p99_ms"] / run["p99_ms"],
                REPORT,
                True,
                f"capacity {cal.capacity:.0f}/s, fitted {cal.cpu_per_request_s * 1e3:.2f} ms/row, "
                f"overhead p50 {np.median(cal.overhead_ms):.1f} ms",
            )
            record_rows(
                "rates",
                [
                    {
                        "model": name,
                        "load": frac,
                        "rate": rate,
                        "requests": int(lat.size),
                        "p50_predicted_ms": predicted["p50_ms"],
                        "p50_measured_ms": run["p50_ms"],
                        "p99_predicted_ms": predicted["p99_ms"],
                        "p99_measured_ms": run["p99_ms"],
                        "p99_ci_ms": [lo, hi],
                        "p99_error": err,
                        "p99_fitted_ms": fitted["p99_ms"],
                        "p99_fitted_error": fitted_err,
                        "late_fraction": run["late_fraction"],
                        "client_busy": run.get("client_busy"),
                        "capacity": cal.capacity,
                    }
                ],
            )
    finally:
        server.stop()
