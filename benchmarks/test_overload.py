"""Goodput under overload: the server keeps serving near its capacity while refusing the excess fast.

The server (``optiserve serve``, a subprocess) is pinned to CPU 0; the load comes
from this process pinned to CPU 1. Capacity is measured first (closed loop, 32
connections: all 200s per second); then open-loop Poisson arrivals at 1.5x, 3x
and 5x that, each request on an idle keep-alive connection or a new one (up to
1,000: real clients do not wait for each other). Goodput is 200s per second
answered within ``BOUND_S`` (0.5 s) of their scheduled send: a 200 that came
seconds late is not good. Refusals come two ways: a 503 (which closes its
connection) or, while the server's overload gate has closed its listener, a
connection the kernel refuses; both are counted and timed from the scheduled
send and from the attempt. The asserted refusal latency is the latter: at 5x
the MLP's rate the driver's own core runs late (its lag is printed and
recorded), and that is not the server's. The server's RSS is recorded too.

The driver (``optiserve/_socket_driver.py``: raw protocol on uvloop) prints what it really
sent; a factor it could not offer is marked ``DRIVER SHORT`` and the highest
factor reached is in the record, so a result is judged against real load. A
factor the driver fell short of while the server's core had room (under 90%
busy) measures the driver, not the server: it is named in the record and left
out of the asserted worst, as over gRPC. Why: on the Zen 5 guest the MLP's
capacity is 7,350-7,960 req/s, and at 3x and 5x the one-core driver sent 2.1-2.5x
with the server's core 37-60% idle.

Asserts goodput >= 90% of capacity and refusal p99 < 50 ms at every factor offered (worst recorded),
RSS growth < 512 MB.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Generator
from pathlib import Path

import numpy as np
import psutil
import pytest

from benchmarks.grpc_driver import drive_grpc, infer_request
from optiserve._oip_client import payload_for
from optiserve._socket_driver import MAX_CONNECTIONS, drive, request_bytes, run
from optiserve.models.zoo import build_zoo

BOUND_S = 0.5  # goodput: 200s answered within this of their scheduled send
CAPACITY_CALLERS = 12  # gRPC closed loop: within the shedding limits of max batch 8 (16 calls in Python, 8 pending)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo")
    build_zoo(out, ["mlp", "cnn"])
    return out


def _server(model: Path, port: int, grpc_port: int | None = None) -> Generator[subprocess.Popen[bytes], None, None]:
    cmd = [sys.executable, "-m", "optiserve", "serve", str(model), "--port", str(port), "--max-batch", "8"]
    cmd += ["--max-connections", str(MAX_CONNECTIONS + 100)]
    if grpc_port is not None:
        cmd += ["--grpc-port", str(grpc_port)]
    cpus = sorted(os.sched_getaffinity(0))
    proc = subprocess.Popen(["taskset", "-c", str(cpus[0]), *cmd], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.3)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(20)


CASES = [("mlp", False), ("cnn", True), ("cnn", False)]


@pytest.mark.parametrize("model,binary", CASES, ids=["mlp-json", "cnn-binary", "cnn-json"])
def test_goodput_under_overload(zoo: Path, model: str, binary: bool, record_ratio) -> None:  # type: ignore[no-untyped-def]
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs: one for the server, one for the load")
    port = _free_port()
    gen = _server(zoo / f"{model}.onnx", port)
    proc = next(gen)
    kind = "binary" if binary else "json"
    try:
        os.sched_setaffinity(0, {cpus[1]})
        body, headers = payload_for(f"http://127.0.0.1:{port}", model, binary=binary)
        raw = request_bytes(f"/v2/models/{model}/infer", body, headers)
        rss = psutil.Process(proc.pid)
        run(drive(port, raw, None, 1.0, BOUND_S))  # warm
        cap = run(drive(port, raw, None, 4.0, BOUND_S))
        capacity = cap.ok
        assert capacity > 0, f"no 200s at all in the capacity run: {cap}"
        rss0 = rss.memory_info().rss
        print(f"\n{model} {kind}: capacity {capacity:.0f} req/s (closed loop, 32 conns, p50 {cap.ok_p50_ms:.1f} ms)")
        worst, worst_503, reached, worst_sched, worst_lag, worst_idle = 1.0, 0.0, 0.0, 0.0, 0.0, 0.0
        invalid: list[str] = []
        for factor in (1.5, 3.0, 5.0):
            cpu0 = sum(rss.cpu_times()[:2])
            r = run(drive(port, raw, factor * capacity, 5.0, BOUND_S))
            busy = min(1.0, (sum(rss.cpu_times()[:2]) - cpu0) / 5.0)  # the server's core over the 5 s offered
            share = r.goodput / capacity
            p99 = r.refusal_from_attempt_p99_ms  # either kind, the server's part (the driver's lag apart)
            mb = rss.memory_info().rss / 2**20
            short = "" if r.sent >= 0.9 * r.offered else f" DRIVER SHORT ({r.sent / capacity:.1f}x sent)"
            worst_idle = max(worst_idle, 1.0 - busy) if short else worst_idle
            if short and busy < 0.9:  # the driver's limit, not the server's: named, not asserted
                sent = r.sent / capacity
                invalid.append(f"{factor}x ({sent:.1f}x sent, server core {busy:.0%}, goodput {share:.0%})")
            else:
                worst = min(worst, share)
                worst_503 = max(worst_503, 0.0 if np.isnan(p99) else p99)
                for x in (r.refused_p99_ms, r.conn_refused_p99_ms):
                    worst_sched = max(worst_sched, 0.0 if np.isnan(x) else x)
                worst_lag = max(worst_lag, 0.0 if np.isnan(r.driver_lag_p99_ms) else r.driver_lag_p99_ms)
                reached = max(reached, r.sent / capacity)
            print(
                f"  {factor}x: offered {r.offered:.0f}/s sent {r.sent:.0f}/s{short} goodput {r.goodput:.0f}/s "
                f"({share:.0%}; 200s {r.ok:.0f}/s) 503s {r.refused} conns refused {r.conn_refused} "
                f"failed {r.failed} p99 ok {r.ok_p99_ms:.0f} ms, 503 {r.refused_p99_ms:.1f} ms, "
                f"refused conn {r.conn_refused_p99_ms:.1f} ms (from the attempt, either: "
                f"{r.refusal_from_attempt_p99_ms:.1f} ms; driver lag p99 {r.driver_lag_p99_ms:.1f} ms), "
                f"RSS {mb:.0f} MB; server CPU {busy:.0%}; failed: {r.failures()}"
            )
        grown = (rss.memory_info().rss - rss0) / 2**20
        detail = f"worst of 1.5/3/5x offered; highest sent {reached:.1f}x; RSS +{grown:.0f} MB"
        if invalid:
            detail += f"; not offered (driver short, server core idle), left out: {', '.join(invalid)}"
        elif worst_idle > 0:
            detail += f"; with the driver short the server's core was up to {worst_idle:.0%} idle"
        if reached == 0:  # no factor was offered: nothing measured, which is not a pass
            worst, worst_503 = float("nan"), float("nan")
            detail += "; NO FACTOR OFFERED: the driver fell short at every one"
        record_ratio(f"overload goodput / capacity, {model} {kind}", worst, ">= 0.90", worst >= 0.9, detail)
        record_ratio(
            f"overload refusal p99 ms, {model} {kind}",
            worst_503,
            "< 50",
            worst_503 < 50,
            f"503s and refused connections, from the attempt; from the schedule {worst_sched:.0f} ms "
            f"(driver lag p99 up to {worst_lag:.0f} ms)",
        )
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{model}/stats").read())
        assert stats["model_stats"][0]["inference_stats"]["success"]["count"] > 0
        assert grown < 512, f"RSS grew {grown:.0f} MB under overload"
    finally:
        os.sched_setaffinity(0, set(cpus))
        gen.close()


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_grpc_goodput_under_overload(zoo: Path, model: str, record_ratio) -> None:  # type: ignore[no-untyped-def]
    """The same overload over gRPC (raw tensors, as tritonclient sends): the C core refuses past the
    server's shedding limits (``grpc_server.SheddingLimits``) before any Python runs. A factor whose
    driver ran more than 50 ms behind its schedule (p99) was not offered: it is printed and named in
    the record, and left out of the asserted worst (Python's gRPC client tops out near 3,000 calls/s
    on one core, under 5x the MLP's gRPC capacity)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs: one for the server, one for the load")
    port, grpc_port = _free_port(), _free_port()
    gen = _server(zoo / f"{model}.onnx", port, grpc_port)
    proc = next(gen)
    try:
        os.sched_setaffinity(0, {cpus[1]})
        request = asyncio.run(infer_request(grpc_port, model))
        rss = psutil.Process(proc.pid)
        run(drive_grpc(grpc_port, request, None, 1.0, BOUND_S, users=CAPACITY_CALLERS))  # warm
        # the median of three closed-loop runs: one 4 s run of the MLP gave 1,192-1,386 or 1,733-2,427
        # req/s (two modes, same code, same machine), and the ratios below divide by it
        caps = sorted(
            (run(drive_grpc(grpc_port, request, None, 2.0, BOUND_S, users=CAPACITY_CALLERS)) for _ in range(3)),
            key=lambda c: c.ok,
        )
        cap = caps[1]
        capacity = cap.ok
        assert capacity > 0, f"no answers at all in the capacity run: {cap}"
        rss0 = rss.memory_info().rss
        print(
            f"\n{model} grpc: capacity {capacity:.0f} req/s "
            f"(closed loop, {CAPACITY_CALLERS} callers, p50 {cap.ok_p50_ms:.1f} ms; median of "
            f"{', '.join(f'{c.ok:.0f}' for c in caps)})"
        )
        worst, worst_refusal, reached, worst_idle = 1.0, 0.0, 0.0, 0.0
        invalid: list[str] = []
        for factor in (1.5, 3.0, 5.0):
            cpu0 = sum(rss.cpu_times()[:2])
            r = run(drive_grpc(grpc_port, request, factor * capacity, 5.0, BOUND_S))
            busy = min(1.0, (sum(rss.cpu_times()[:2]) - cpu0) / 5.0)
            share = r.goodput / capacity
            p99 = r.refusal_from_attempt_p99_ms
            short = "" if r.driver_lag_p99_ms < 50 else f" DRIVER SHORT (lag p99 {r.driver_lag_p99_ms:.0f} ms)"
            if short:  # Python's gRPC client fell behind its schedule: not a measurement of the server
                invalid.append(f"{factor}x (driver lag p99 {r.driver_lag_p99_ms:.0f} ms, goodput {share:.0%})")
                worst_idle = max(worst_idle, 1.0 - busy)
            else:
                worst = min(worst, share)
                worst_refusal = max(worst_refusal, 0.0 if np.isnan(p99) else p99)
                reached = max(reached, r.sent / capacity)
            print(
                f"  {factor}x: offered {r.offered:.0f}/s sent {r.sent:.0f}/s{short} goodput {r.goodput:.0f}/s "
                f"({share:.0%}; OK {r.ok:.0f}/s) refused {r.refused} failed {r.failed} p99 ok {r.ok_p99_ms:.0f} ms, "
                f"refused {r.refused_p99_ms:.1f} ms ({p99:.1f} ms from the send; driver lag p99 "
                f"{r.driver_lag_p99_ms:.1f} ms), RSS {rss.memory_info().rss / 2**20:.0f} MB; server CPU {busy:.0%}; "
                f"{r.failures()}"
            )
        grown = (rss.memory_info().rss - rss0) / 2**20
        detail = (
            f"worst of the factors offered, up to {reached:.1f}x; capacity {capacity:.0f} req/s; RSS +{grown:.0f} MB"
        )
        if invalid:
            detail += f"; not offered, left out: {', '.join(invalid)}, server core up to {worst_idle:.0%} idle"
        if reached == 0:  # no factor was offered: nothing measured, which is not a pass
            worst, worst_refusal = float("nan"), float("nan")
            detail += "; NO FACTOR OFFERED: the driver fell behind at every one"
        record_ratio(f"overload goodput / capacity, {model} grpc", worst, ">= 0.90", worst >= 0.9, detail)
        record_ratio(
            f"overload refusal p99 ms, {model} grpc", worst_refusal, "< 50", worst_refusal < 50, "from the send"
        )
        assert grown < 512, f"RSS grew {grown:.0f} MB under overload"
    finally:
        os.sched_setaffinity(0, set(cpus))
        gen.close()
