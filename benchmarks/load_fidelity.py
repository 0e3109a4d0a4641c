"""Shared by the fidelity benchmark: profile, serve, load-test, predict (not a test module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optiserve._oip_client import free_port
from optiserve.estimate import BatchingPolicy, ServiceModel, poisson_arrivals, simulate
from optiserve.profile.profiler import run_sweep
from optiserve.profile.serving import measure_serving
from optiserve.profile.store import ParquetStore, load_profile
from optiserve.profile.sweep import build_spec
from optiserve.serve.loadtest import wait_until_ready
from optiserve.serve.prediction import measured_overheads, per_item_cost_for_capacity, simulated_ms, with_overheads
from optiserve.types import InputLayout


def profile_service(model: Path, out: Path, threads: int, batches: str, budget: float = 2.0) -> ServiceModel:
    spec = build_spec(None, {"batch": batches, "threads": str(threads), "budget": str(budget), "warmup": "1"})
    prof = run_sweep(model, spec, out, overwrite=True)
    return ServiceModel.from_profile(prof)


def add_serving_terms(
    model: Path, profile: Path, threads: int, server_cpus: set[int], client_cpus: set[int]
) -> dict[str, Any]:
    """``profile --serving``'s stage on a finished profile, with the server and the client on the
    CPUs the load tests use: what the prediction then reads from the profile, nothing fitted."""
    prof = load_profile(profile)
    layout = InputLayout.from_dict(prof.meta["layout"])
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, client_cpus)  # the closed-loop requests run in this process
    try:
        serving = measure_serving(model, layout, threads, server_cpus=server_cpus, client_cpus=client_cpus)
    finally:
        os.sched_setaffinity(0, mine)
    if "error" in serving:
        raise RuntimeError(f"serving stage failed: {serving['error']}")
    ParquetStore(profile).update_meta(serving=serving)
    return serving


class Server:
    def __init__(
        self, model: Path, threads: int, max_batch: int, max_delay_ms: float, cpus: set[int] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "optiserve",
                "serve",
                str(model),
                "--port",
                str(self.port),
                "--threads",
                str(threads),
                "--max-batch",
                str(max_batch),
                "--max-delay-ms",
                str(max_delay_ms),
                "--max-queue",
                "4096",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        if not wait_until_ready(self.url, 120):
            self.stop()
            raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


CLIENT_CPUS: set[int] | None = None  # set by the benchmark: keep the load generator off the server's core


def load(url: str, model: str, rate: float, duration: float, seed: int, out: Path) -> dict[str, Any]:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "optiserve",
            "loadtest",
            url,
            "--model",
            model,
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--seed",
            str(seed),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=duration + 180,
        preexec_fn=(lambda: os.sched_setaffinity(0, CLIENT_CPUS)) if CLIENT_CPUS else None,
    )
    return json.loads(out.read_text())


def predict(
    service: ServiceModel,
    policy: BatchingPolicy,
    rate: float,
    duration: float,
    seed: int,
    overhead_ms: np.ndarray | None = None,
) -> dict[str, Any]:
    """Simulated latencies for the load test's own schedule (same seed), plus an
    overhead drawn from the calibration run's measured per-request overheads."""
    n = int(np.ceil(rate * duration))
    r = simulate(poisson_arrivals(rate, n, seed), service, policy, seed)
    lat = with_overheads(r.latency_s * 1e3, overhead_ms, seed)
    return {
        "p50_ms": float(np.quantile(lat, 0.5)),
        "p99_ms": float(np.quantile(lat, 0.99)),
        "util": r.summary["utilisation"],
        "mean_batch": r.summary["mean_batch"],
        "latency_ms": lat,
    }


def metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


@dataclass(frozen=True)
class Calibration:
    cpu_per_request_s: float  # per-request work besides inference, fitted to the measured capacity
    service: ServiceModel  # the profile's service times plus that CPU, per row: one core does both
    capacity: float  # requests/s measured at saturation (the model's if that is lower)
    overhead_ms: np.ndarray  # per request: measured minus simulated at low load (network, client)
    rate: float


def calibrate(server: Server, name: str, service: ServiceModel, policy: BatchingPolicy, work: Path) -> Calibration:
    """Two measured runs: a saturating one for the capacity, a light one for the
    server's CPU per request and for the overhead the simulator does not model."""
    model_cap = service.capacity(policy.max_batch, policy.instances)
    sat = load(server.url, name, min(2 * model_cap, 4000.0), 3, 98, work / "saturation.json")
    capacity = min(model_cap, sat["achieved_rate"])
    per_request = per_item_cost_for_capacity(service, policy, capacity)
    shared = service.plus_per_item(per_request)
    rate = 0.05 * capacity
    duration = min(max(6.0, 400 / rate), 30.0)
    light = load(server.url, name, rate, duration, 99, work / "calibration.json")
    sim = simulated_ms(poisson_arrivals(rate, int(np.ceil(rate * duration)), 99), shared, policy, 99)
    overhead = measured_overheads(light["latency_ms"], light["index"], sim)
    return Calibration(per_request, shared, float(capacity), overhead, rate)
