"""Shared by the fidelity benchmark: profile, serve, load-test, predict (not a test module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from optiserve._oip_client import free_port
from optiserve._socket_driver import drive, request_bytes, run
from optiserve.estimate import BatchingPolicy, ServiceModel, poisson_arrivals, simulate
from optiserve.profile.profiler import run_sweep
from optiserve.profile.serving import measure_serving
from optiserve.profile.store import ParquetStore, load_profile
from optiserve.profile.sweep import build_spec
from optiserve.serve.loadtest import LATE_MS, MAX_LATE, wait_until_ready
from optiserve.serve.prediction import (
    ServedConfig,
    measured_overheads,
    per_item_cost_for_capacity,
    server_model,
    simulated_ms,
    with_overheads,
)
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


def calibrate(
    server: Server, name: str, service: ServiceModel, policy: BatchingPolicy, work: Path, measured: float
) -> Calibration:
    """The hand-fitted path (reported beside the profile's): the CPU per row that brings the model's
    capacity down to the ``measured`` one, and the overhead a light Locust run has beyond it."""
    model_cap = service.capacity(policy.max_batch, policy.instances)
    capacity = min(model_cap, measured)
    per_request = per_item_cost_for_capacity(service, policy, capacity)
    shared = service.plus_per_item(per_request)
    rate = 0.05 * capacity
    duration = min(max(6.0, 400 / rate), 30.0)
    light = load(server.url, name, rate, duration, 99, work / "calibration.json")
    sim = simulated_ms(poisson_arrivals(rate, int(np.ceil(rate * duration)), 99), shared, policy, 99)
    overhead = measured_overheads(light["latency_ms"], light["index"], sim)
    return Calibration(per_request, shared, float(capacity), overhead, rate)


def closed_loop_capacity(server: Server, name: str, binary: bool, connections: int = 32) -> float:
    """200s per second under a saturating closed loop from the raw-socket driver (on the client's
    CPU): the server's capacity, which Locust (one Python process) cannot reach for a small model."""
    from optiserve._oip_client import payload_for

    raw = request_bytes(f"/v2/models/{name}/infer", *payload_for(server.url, name, binary=binary))
    mine = os.sched_getaffinity(0)
    if CLIENT_CPUS:
        os.sched_setaffinity(0, CLIENT_CPUS)
    try:
        run(drive(server.port, raw, None, 1.0, 10.0, users=connections))  # warm
        return run(drive(server.port, raw, None, 4.0, 10.0, users=connections)).ok
    finally:
        os.sched_setaffinity(0, mine)


LATENCY_X = 4.0  # open-loop capacity: the highest rate whose p99 stays within this many light-load p99s


def open_loop_capacity(server: Server, name: str, binary: bool, closed: float, steps: int = 6) -> float:
    """The highest Poisson rate the server holds: bisected between 30% and 100% of the ``closed``-loop
    capacity, 3 s a step (raw-socket driver, the client's CPU); a rate is held when every request was
    answered 200 (no 503 from the overload gate), at least 99% of what was sent was served in the
    window, and its p99 stayed within ``LATENCY_X`` times the p99 at 10%. Open loop holds less than a
    closed loop: the MLP on a Sapphire Rapids guest under perf_analyzer's Poisson load, closed-loop
    capacity 5,194 req/s: p50 2.3 ms at 2,597 req/s, 4.1 at 4,155 and 8.1 at 4,674 (p99 32 ms) with
    no 503, the queue held outside the batcher's gate."""
    from optiserve._oip_client import payload_for

    wait_until_ready(server.url, 30)  # the closed loop's queue may have closed the gate's listener
    raw = request_bytes(f"/v2/models/{name}/infer", *payload_for(server.url, name, binary=binary))
    mine = os.sched_getaffinity(0)
    if CLIENT_CPUS:
        os.sched_setaffinity(0, CLIENT_CPUS)

    def step(rate: float) -> Any:
        r = run(drive(server.port, raw, rate, 3.0, 10.0, users=8, seed=int(rate)))
        wait_until_ready(server.url, 30)  # a gate that closed the listener opens again
        return r

    def holds(rate: float) -> bool:
        r = step(rate)
        answered = r.refused == 0 and r.failed == 0 and r.conn_refused == 0 and r.ok >= 0.99 * r.sent
        return answered and r.ok_p99_ms <= bound_ms

    try:
        # a latency bound, as MLPerf's server scenario has one: the p99 at 10% of the closed loop, x LATENCY_X
        bound_ms = LATENCY_X * step(0.1 * closed).ok_p99_ms
        lo, hi = 0.3 * closed, closed
        if holds(hi):
            return hi
        for _ in range(steps):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if holds(mid) else (lo, mid)
        return lo
    finally:
        os.sched_setaffinity(0, mine)


PERF_ANALYZER = Path(__file__).resolve().parents[1] / ".venv" / "perf_analyzer" / "perf_analyzer"


@dataclass(frozen=True)
class PaRun:
    """Triton's perf_analyzer on a given schedule (``--request-intervals``), each request as it went."""

    sent_s: np.ndarray  # each request's send time, from the first
    latency_ms: np.ndarray
    exit_status: str  # how perf_analyzer exited (one window is never "stable" by its rule)
    # sends more than ``loadtest``'s LATE_MS after their schedule (from the first send): past its MAX_LATE
    # the client fell behind and its latencies hold its own queueing, as a Locust run's would (not judged)
    late_fraction: float = 0.0

    @property
    def valid(self) -> bool:
        return self.late_fraction <= MAX_LATE

    def p99_ms(self) -> float:
        return float(np.quantile(self.latency_ms, 0.99))


def perf_analyzer(url: str, model: str, schedule_s: np.ndarray, work: Path) -> PaRun:
    """Binary tensors over HTTP (perf_analyzer's only REST form), async, its default random data; the
    gaps of ``schedule_s`` as its request intervals, one count window of them all. (Three windows put
    stalls of up to 230 ms into the MLP's latencies near their boundaries, where perf_analyzer reads
    the server's statistics: p99 19 ms at 3,000 req/s, 5.3 ms from one window. One window is never
    "stable" by its rule, so its exit status says little; the export is what is read.)"""
    gaps = np.diff(np.concatenate([[0.0], schedule_s])) * 1e6
    intervals, export = work / "intervals.txt", work / "pa-export.json"
    intervals.write_text("".join(f"{max(1, round(g))}\n" for g in gaps))
    export.unlink(missing_ok=True)
    cmd = [str(PERF_ANALYZER), "-m", model, "-i", "http", "-u", url.removeprefix("http://"), "-a"]
    cmd += ["--request-intervals", str(intervals), "--measurement-mode", "count_windows"]
    cmd += ["--measurement-request-count", str(len(schedule_s)), "--max-trials", "1"]
    cmd += ["--profile-export-file", str(export)]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=(lambda: os.sched_setaffinity(0, CLIENT_CPUS)) if CLIENT_CPUS else None,
    )
    if not export.is_file():
        raise RuntimeError(f"perf_analyzer wrote no export: {(proc.stdout + proc.stderr)[-800:]}")
    requests = [r for e in json.loads(export.read_text())["experiments"] for r in e["requests"]]
    done = [r for r in requests if r.get("response_timestamps")]
    t = np.asarray([r["timestamp"] for r in done], dtype=np.float64)
    lat = np.asarray([r["response_timestamps"][-1] - r["timestamp"] for r in done], dtype=np.float64) / 1e6
    order = np.argsort(t)
    if len(done) < len(requests):
        raise RuntimeError(f"perf_analyzer: {len(requests) - len(done)} of {len(requests)} requests unanswered")
    sent = (t[order] - t[order][0]) / 1e9
    # perf_analyzer cycles the intervals file until its count is reached, so it may send more than the
    # schedule: the sends the schedule covers are the ones checked
    planned = np.asarray(schedule_s, dtype=np.float64)
    k = min(sent.size, planned.size)
    late = float(((sent[:k] - (planned[:k] - planned[0])) > LATE_MS / 1e3).mean()) if k else 1.0
    return PaRun(sent, lat[order], f"perf_analyzer exit {proc.returncode}", late)


def server_only_ms(profile: Path, served: ServedConfig, sent_s: np.ndarray, encoding: str) -> np.ndarray:
    """The profile's served model on these send times, without the fixed term (the load-test
    client's latency outside the server, which another client does not pay)."""
    model = server_model(profile, served, encoding=encoding)
    policy = replace(model.policy, fixed_s=0.0, fixed_spread_s=(), fixed_spread_curve=())
    return simulated_ms(sent_s, model.service, policy, 1)
