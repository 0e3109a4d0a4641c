"""The serving path's own cost, measured through the real server (``profile --serving``).

The planner's pods are not bare sessions: every request also costs the server's
front end (HTTP, decoding this model's inputs, encoding its outputs as JSON) and a
fixed latency outside it (loopback, the client). Both are measured here, once per
profile, by starting ``optiserve serve`` on the model (fp32, batch 1, no batching
delay) and sending it one request at a time in each encoding a client uses:

- ``frontend_ms``: the server's own event-loop time per request, from its
  ``optiserve_frontend_seconds`` histogram (what shares the core with inference);
- ``fixed_ms``: the mean round trip minus that front end and the runtime's time
  per batch (``optiserve_batch_seconds``): what every request pays outside;
- ``inference_ms``: the server's own time per batch-1 call (batch assembly, the
  session, splitting the outputs); beyond the profiled session time it is a per-row
  serving cost.

The same closed loop runs over gRPC (``tritonclient.grpc``, raw tensors) as the third
encoding, ``grpc``: there most of a call's work is grpc.aio's own, outside the handler
the histogram times, so its front end is the server's CPU per call less the batch-1
call (``server_cpu_ms`` is kept for every encoding). On the MLP on a Zen 3 guest that is
about three times the REST front end, which a plan for gRPC clients must charge.

Then a light open-loop run of ``optiserve loadtest`` itself (Locust, the client
``verify`` and users load with) measures ``client.client_ms``, its mean latency. Where
it was measured, the fixed term for that encoding is that latency minus what the
simulator charges a request that never queues (front end + the server's batch-1
call): the client, the loopback, and the server's own open-loop slowdown. (Its
mean latency minus the server's self-reported one, ``client.fixed_ms``, is kept: the
client's share alone.) The closed-loop fixed term is kept for the other encoding.
From 500 light-run requests on, the fixed term is not that mean but its measured
spread (101 quantiles), drawn per request by the simulator: a mean predicted the
p50 high and the p99 low (a detector on a Zen 5 guest at 304 req/s: p99 7.8 ms from
the mean, 9.8 ms from the spread, 10.9 ms measured).

A short saturating closed loop (``SATURATE_CONNECTIONS`` keep-alive connections through the
raw-socket driver, ``optiserve/_socket_driver.py``; Locust and http.client cannot saturate a small
model's server from one core) measures ``saturated.loop_cpu_ms``: the event loop thread's CPU
per request when requests come back to back. A lone request costs the loop far more (cold caches,
a wake-up each): the MLP's JSON front end on a Sapphire Rapids guest, 0.35 ms of the loop's CPU at
380 req/s, 0.14 ms at 6,750 req/s. The simulator's front end is the cheaper of the two, so its
capacity is the server's; what a lone request pays beyond it is in the fixed term.

Between the two, what the front end costs per request falls with load (caches stay warm, one
wake-up serves several requests), so open-loop Poisson runs from the same driver at the light
run's rate and at 10/30/55/80/90% of the saturated rate (``open_loop``) measure, per rate, the loop
thread's CPU and the whole process's beyond its inference calls (the loop and the batcher's
hand-offs: what shares a core with inference). The MLP's JSON front end on a Sapphire Rapids
guest, max batch 1: the loop's CPU 0.47 ms per request at 340 req/s, 0.31 at 1,750, 0.25 at
3,040 (the front-end histogram said 0.24 to 0.14: uvicorn's HTTP parsing lies outside it). The
simulator charges that curve at each replica's simulated rate (``ServingTerms.frontend_curve``,
flat beyond its ends); the light run's fixed term is its latency less the curve
at its own rate.

The planner and ``loadtest --predict-from`` feed these to the queueing simulator
through :func:`serving_terms`, so a plan's p99 includes the server that gets deployed.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil

from optiserve._oip_client import free_port, histogram_mean, server_sums, stop_server
from optiserve._reasons import one_line
from optiserve.types import InputLayout, Profile, Status

REQUESTS = 200  # per encoding; the front end's time per request is steady well before this
# The light Locust run: its spread (not only its mean) goes into every p99, so it runs long enough
# for a tail: 750 requests at up to a fifth of the closed-loop rate, 3 to 30 s (the encoder, an 11 ms call
# on a Sapphire Rapids guest: 17 req/s, 519 requests)
CLIENT_REQUESTS = 750
CLIENT_MAX_S = 30.0
QUANTILES = 101  # of the light run's per-request overhead: its spread, which the p99 feels and a mean hides
# A spread is drawn only from a light run this long (200 requests put 2 in the 1% tail: measured on a Zen 3
# guest, their p99 came out 8.4 ms (MLP) and 46 ms (CNN)); below it the mean is added
TAIL_REQUESTS = 500
# past this many profiled calls the light run's extra is something else than the call (a stall): capped
MAX_PER_CALL_X = 3.0
# The saturating run: enough connections to keep the loop busy, short (its figure is steady in a second)
SATURATE_CONNECTIONS = 32
SATURATE_S = 2.0
# The open-loop runs (the raw-socket driver at Poisson arrivals): the light run's rate and these shares of
# the saturated rate, each long enough for ``OPEN_REQUESTS`` requests (``OPEN_MIN_S`` to ``OPEN_MAX_S``)
OPEN_FRACTIONS = (0.1, 0.3, 0.55, 0.8, 0.9)
OPEN_REQUESTS = 300
OPEN_MIN_S, OPEN_MAX_S = 1.0, 4.0
# the loaded client run (``client_loaded``): this share of the saturated rate, at most this many light rates
LOADED_FRACTION, LOADED_X = 0.1, 10.0
MAX_REFUSED = 0.01  # of an open-loop point's requests: more refused and its CPU per request is the overload's
# what the server's overload gate lets a queue hold (serve/admission.py's MIN_WAIT_S and BATCHES)
GATE_WAIT_S = 0.02
GATE_CALLS = 3


def _closed_loop(url: str, path: str, body: bytes, headers: dict[str, str], n: int) -> list[float]:
    """Round trips of ``n`` requests sent one after another on one kept-alive connection."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=60)
    rtts: list[float] = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"the server answered {resp.status}")
            rtts.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return rtts


def _cpu_s(proc: psutil.Process) -> float:
    """The server process's CPU seconds so far (every thread: the loop, gRPC's, the runtime's)."""
    t = proc.cpu_times()
    return float(t.user + t.system)


def _grpc_figures(url: str, port: int, n: int, proc: psutil.Process) -> dict[str, Any]:
    """The same closed loop through ``tritonclient.grpc`` (raw tensors). Most of a gRPC call's
    work is in grpc.aio's C and Cython layers, outside the handler the front-end histogram
    times, so the front end here is the server's CPU per call less its batch-1 call."""
    import tritonclient.grpc as tc

    from optiserve._oip_client import request_arrays

    inputs, nbytes = [], 0
    for meta, shape, arr in request_arrays(url, "m"):
        inp = tc.InferInput(meta["name"], shape, meta["datatype"])
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
        nbytes += arr.nbytes
    client = tc.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        for _ in range(min(20, n)):
            client.infer("m", inputs)
        before, cpu0 = server_sums(url), _cpu_s(proc)
        rtts = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.infer("m", inputs)
            rtts.append(time.perf_counter() - t0)
        after, cpu1 = server_sums(url), _cpu_s(proc)
    except Exception as exc:  # the REST figures stand without this one
        return {"error": f"gRPC not measured: {one_line(exc)}"}
    finally:
        client.close()
    batch = histogram_mean(before, after, "optiserve_batch_seconds")
    cpu = (cpu1 - cpu0) / n
    front = max(cpu - batch, 0.0)
    rtt = sum(rtts) / len(rtts)
    return {
        "frontend_ms": round(front * 1e3, 4),
        "fixed_ms": round(max(rtt - front - batch, 0.0) * 1e3, 4),
        "round_trip_ms": round(rtt * 1e3, 4),
        "inference_ms": round(batch * 1e3, 4),
        "request_bytes": nbytes,
        "server_cpu_ms": round(cpu * 1e3, 4),
        "frontend_from": "server CPU per call less its batch-1 call",
    }


def _encodings(url: str, name: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    from optiserve._oip_client import payload_for

    return {"json": payload_for(url, name, binary=False), "binary": payload_for(url, name, binary=True)}


def _pinned(cpus: set[int] | None) -> Any:
    """A ``preexec_fn`` that keeps a child on ``cpus`` (None: where the parent runs)."""
    import os

    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def measure_serving(
    model: Path,
    layout: InputLayout,
    threads: int = 1,
    requests: int = REQUESTS,
    custom_ops: tuple[str, ...] = (),
    server_cpus: set[int] | None = None,
    client_cpus: set[int] | None = None,
) -> dict[str, Any]:
    """Per encoding: the front end's ms per request and the fixed ms outside the server.
    ``server_cpus``/``client_cpus`` place the server and the light load test's client apart, as
    a load test that pins them does (None: both where this process runs).
    Never raises: a server that cannot start is recorded as ``{"error": ...}``."""
    from optiserve._oip_client import wait_until_ready

    port, grpc_port = free_port(), free_port()
    args = [sys.executable, "-m", "optiserve", "serve", str(model), "--port", str(port), "--threads", str(threads)]
    args += ["--grpc-port", str(grpc_port)]
    args += ["--max-batch", "1", "--max-delay-ms", "0", "--name", "m"]
    for t in layout.inputs:
        item = [d for i, d in enumerate(t.shape) if i != t.batch_axis]
        if item:
            args += ["--shape", f"{t.name}={','.join(map(str, item))}"]
        args += ["--batch-axis", f"{t.name}={'none' if t.batch_axis is None else t.batch_axis}"]
    for lib in custom_ops:
        args += ["--custom-ops", lib]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_pinned(server_cpus)
    )
    try:
        if not wait_until_ready(url, 120) or server.poll() is not None:
            err = (server.stderr.read() if server.stderr and server.poll() is not None else "") or "not ready in 120 s"
            return {"error": f"the server did not start: {err.strip().splitlines()[-1] if err.strip() else err}"}
        out: dict[str, Any] = {"requests": requests, "threads": threads, "measured_with": "optiserve serve, loopback"}
        if server_cpus or client_cpus:
            out["cpus"] = {"server": sorted(server_cpus or ()), "client": sorted(client_cpus or ())}
        path = "/v2/models/m/infer"
        proc = psutil.Process(server.pid)
        for enc, (body, headers) in _encodings(url, "m").items():
            _closed_loop(url, path, body, headers, min(20, requests))  # warm the connection and the caches
            before, cpu0 = server_sums(url), _cpu_s(proc)
            rtts = _closed_loop(url, path, body, headers, requests)
            after, cpu1 = server_sums(url), _cpu_s(proc)
            n = after["optiserve_frontend_seconds_count"] - before["optiserve_frontend_seconds_count"]
            front = histogram_mean(before, after, "optiserve_frontend_seconds")
            batch = histogram_mean(before, after, "optiserve_batch_seconds")
            rtt = sum(rtts) / len(rtts)
            saturated = _saturated(port, path, body, headers, proc, front + batch)
            rates = [_light_rate(rtt * 1e3)] + [f * float(saturated.get("rate") or 0.0) for f in OPEN_FRACTIONS]
            out[enc] = {
                "saturated": saturated,
                "open_loop": _open_loop(url, port, path, body, headers, proc, rates),
                "frontend_ms": round(front * 1e3, 4),
                "fixed_ms": round(max(rtt - front - batch, 0.0) * 1e3, 4),
                "round_trip_ms": round(rtt * 1e3, 4),
                "inference_ms": round(batch * 1e3, 4),
                "request_bytes": len(body),
                "server_cpu_ms": round((cpu1 - cpu0) / n * 1e3, 4),
            }
        out["grpc"] = _grpc_figures(url, grpc_port, requests, proc)
        auto = client_encoding(layout)
        out["client"] = _client_overhead(url, layout, out, client_cpus, encoding=auto)
        # the other REST encoding too: a load test (or perf_analyzer, binary only) may send it
        other = "json" if auto == "binary" else "binary"
        out[f"client_{other}"] = _client_overhead(url, layout, out, client_cpus, encoding=other)
        # and the same client under load: what a request pays outside the server falls with load as the
        # front end's cost does, so one light run's spread over-charges every loaded rate
        loaded = _loaded_rate(out[auto], float(out["client"].get("rate") or 0.0))
        if loaded:
            out["client_loaded"] = _client_overhead(url, layout, out, client_cpus, encoding=auto, rate=loaded)
        if "frontend_ms" in out["grpc"]:  # the load test's gRPC client (gevent) has its own latency
            out["client_grpc"] = _client_overhead(url, layout, out, client_cpus, grpc_port)
        return out
    except Exception as exc:  # measuring the serving path must never lose the sweep already on disk
        return {"error": one_line(exc)}
    finally:
        stop_server(server)


def _saturated(
    port: int, path: str, body: bytes, headers: dict[str, str], proc: psutil.Process, per_request_s: float
) -> dict[str, Any]:
    """The loop thread's CPU per request under a saturating closed loop (never raises: an error
    is recorded and the light figures stand). No more connections than the server's overload gate
    lets wait (``GATE_WAIT_S`` or ``GATE_CALLS`` calls of queue): a slow model's queue would close its listener."""
    from optiserve._oip_client import wait_until_ready
    from optiserve._socket_driver import drive, request_bytes, run

    per_request_s = max(per_request_s, 1e-6)
    users = max(2, min(SATURATE_CONNECTIONS, int(max(GATE_WAIT_S, GATE_CALLS * per_request_s) / per_request_s)))
    raw = request_bytes(path, body, headers)

    url = f"http://127.0.0.1:{port}"
    try:
        run(drive(port, raw, None, 0.5, 10.0, users=users))  # warm the loop and the sockets
        before, cpu0, all0, wall0 = server_sums(url), _loop_cpu_s(proc), _cpu_s(proc), time.perf_counter()
        r = run(drive(port, raw, None, SATURATE_S, 10.0, users=users))
        cpu1, all1, wall, after = _loop_cpu_s(proc), _cpu_s(proc), time.perf_counter() - wall0, server_sums(url)
    except (OSError, psutil.Error, RuntimeError) as exc:
        return {"error": f"the saturating run failed: {one_line(exc)}"}
    finally:
        wait_until_ready(f"http://127.0.0.1:{port}", 30)  # a gate that closed the listener opens again
    n = r.ok * SATURATE_S
    if n <= 0 or not cpu1 >= cpu0:
        return {"error": f"the saturating run completed no request ({r.failures()})"}
    return {
        "rate": round(r.ok, 1),
        "loop_cpu_ms": round((cpu1 - cpu0) / n * 1e3, 4),
        "loop_busy": round((cpu1 - cpu0) / wall, 3),
        **_beyond_calls(before, after, all1 - all0, n),
        "connections": users,
        "seconds": SATURATE_S,
        "refused": r.refused,  # 503s (the ones still in flight when the loop stops are not failures)
        "measured_with": "raw-socket closed loop (optiserve/_socket_driver.py)",
    }


def _loop_cpu_s(proc: psutil.Process) -> float:
    """The main thread's CPU seconds: uvicorn's event loop (HTTP, parsing, encoding)."""
    return next((t.user_time + t.system_time for t in proc.threads() if t.id == proc.pid), float("nan"))


def _beyond_calls(before: dict[str, float], after: dict[str, float], cpu_s: float, n: float) -> dict[str, float]:
    """The process's CPU per request beyond the time in its inference calls: the front end and the
    batcher's hand-offs, everything that shares the core with the calls ({} without the server's sums)."""
    key = "optiserve_batch_seconds_sum"
    if key not in before or key not in after or n <= 0:
        return {}
    calls = after[key] - before[key]
    return {"cpu_ms": round(cpu_s / n * 1e3, 4), "beyond_calls_ms": round(max(cpu_s - calls, 0.0) / n * 1e3, 4)}


def _open_loop(
    url: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    proc: psutil.Process,
    rates: list[float],
) -> list[dict[str, Any]]:
    """The server's CPU per request under open-loop Poisson arrivals at each of ``rates``: what the
    front end costs falls with load (the MLP's JSON front end on a Sapphire Rapids guest, max batch 1:
    the loop's CPU per request 0.47 ms at 340 req/s, 0.31 at 1,750, 0.25 at 3,040), which neither a
    lone request nor a back-to-back loop shows. A point that failed is left out (never raises)."""
    from optiserve._oip_client import wait_until_ready
    from optiserve._socket_driver import drive, request_bytes, run

    raw = request_bytes(path, body, headers)
    points: list[dict[str, Any]] = []
    for i, rate in enumerate(sorted(r for r in rates if r > 0)):
        seconds = min(max(OPEN_REQUESTS / rate, OPEN_MIN_S), OPEN_MAX_S)
        try:
            before, loop0, cpu0 = server_sums(url), _loop_cpu_s(proc), _cpu_s(proc)
            r = run(drive(port, raw, rate, seconds, 10.0, users=4, seed=i))
            loop1, cpu1, after = _loop_cpu_s(proc), _cpu_s(proc), server_sums(url)
        except (OSError, psutil.Error, RuntimeError) as exc:
            points.append({"rate": round(rate, 2), "left_out": f"the run failed: {one_line(exc)}"})
            wait_until_ready(url, 30)
            continue
        n = r.ok * seconds
        beyond = _beyond_calls(before, after, cpu1 - cpu0, n)
        # a point where the server did not keep up (its overload gate refused more than the odd request
        # of a Poisson burst, or less was served than sent) is left out, said why: its CPU per request is
        # the overload's, not the load's. One refusal in a hundred is kept: the int8 CNN's binary curve on
        # a Zen 5 guest lost every point past 51 req/s in one run and kept them to 146 in the next, and
        # flat from 51 its 1.28 ms front end put the p99 at 98 req/s 21% over the measured
        refusals = r.refused + r.conn_refused
        why = _left_out(r, seconds, bool(beyond) and loop1 >= loop0)
        if why:
            points.append({"rate": round(rate, 2), "left_out": why})
            wait_until_ready(url, 30)
            continue
        points.append(
            {
                "rate": round(rate, 2),
                "served": round(r.ok, 2),
                "requests": round(n),
                "loop_cpu_ms": round((loop1 - loop0) / n * 1e3, 4),
                **beyond,
                "p99_ms": round(r.ok_p99_ms, 3),
                "refused": refusals,
            }
        )
    return points


def _left_out(r: Any, seconds: float, summed: bool) -> str:
    """Why an open-loop point is not on the curve ("" when it is): ``r`` the driver's run, ``summed``
    whether the server's sums answered around it."""
    refusals, sent = r.refused + r.conn_refused, r.sent * seconds
    if refusals > MAX_REFUSED * sent:
        return f"{refusals} of {sent:.0f} refused (503 or connection)"
    if r.ok < 0.95 * r.sent:
        return f"served {r.ok:.0f} of {r.sent:.0f} req/s sent"
    return "" if summed else "the server's sums did not answer"


def _loaded_rate(fig: dict[str, Any], light: float) -> float | None:
    """The loaded client run's rate: ``LOADED_FRACTION`` of the saturated one, at most ``LOADED_X`` times
    the light run's (Locust, one process, queues past about a third of a core: the MLP's JSON at 603 req/s
    on a Zen 5 guest kept it 21% busy); None where that is not well above the light run's."""
    sat = float((fig.get("saturated") or {}).get("rate") or 0.0)
    rate = min(LOADED_FRACTION * sat, LOADED_X * light)
    return rate if light > 0 and rate >= 2 * light else None


def _light_rate(rtt_ms: float) -> float:
    """The light run's rate: a fifth of the closed loop's, at most 100 req/s (requests seldom queue)."""
    return min(100.0, 200.0 / max(rtt_ms, 1e-3))


def _client_overhead(
    url: str,
    layout: InputLayout,
    measured: dict[str, Any],
    client_cpus: set[int] | None = None,
    grpc_port: int | None = None,
    encoding: str | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    """A light open-loop ``optiserve loadtest`` (Locust): its mean latency minus the server's own.
    At about a fifth of the closed-loop rate requests seldom queue, so what is left is the client.
    With ``grpc_port``: the same over gRPC; else in ``encoding`` (None: the one loadtest picks);
    at ``rate`` (None: the light rate)."""
    enc = "grpc" if grpc_port is not None else encoding or client_encoding(layout)
    rtt_ms = float(measured[enc]["round_trip_ms"])
    rate = rate or _light_rate(rtt_ms)
    duration = min(max(3.0, CLIENT_REQUESTS / rate), CLIENT_MAX_S)
    try:
        with tempfile.TemporaryDirectory(prefix="optiserve-serving-") as tmp:
            result = Path(tmp) / "light.json"
            before = server_sums(url)
            args = [sys.executable, "-m", "optiserve", "loadtest", url, "--model", "m", "--rate", f"{rate:.4g}"]
            args += ["--duration", f"{duration:.4g}", "--seed", "7", "--json", str(result)]
            if grpc_port is not None:
                args += ["--encoding", "grpc", "--grpc-port", str(grpc_port)]
            else:
                args += ["--encoding", enc]
            proc = subprocess.run(
                args, capture_output=True, text=True, timeout=duration + 120, preexec_fn=_pinned(client_cpus)
            )
            after = server_sums(url)
            if not result.is_file():
                lines = (proc.stderr or proc.stdout).strip().splitlines()
                return {"error": f"the light load test failed: {lines[-1] if lines else proc.returncode}"}
            data = json.loads(result.read_text())
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return {"error": f"the light load test failed: {one_line(exc)}"}
    lat = data.get("latency_ms") or []
    key = "optiserve_request_latency_seconds_count"
    if key not in before or key not in after:
        return {"error": "the server's /metrics did not answer around the light load test"}
    n = after[key] - before[key]
    if not lat or n <= 0:
        return {"error": "the light load test completed no request"}
    server_s = (after["optiserve_request_latency_seconds_sum"] - before["optiserve_request_latency_seconds_sum"]) / n
    client_ms = sum(lat) / len(lat)
    import numpy as np

    # The server's own batch-1 call and front end during this open-loop run: slower than back to back
    # (caches cold between requests, the client beside it), and what a queue of such requests costs
    # (CNN int8 on a Zen 5 guest: the profiled call 1.69 ms, 2.2 ms in the server at 100-220 req/s)
    batches = after["optiserve_batch_seconds_count"] - before["optiserve_batch_seconds_count"]
    infer_ms = histogram_mean(before, after, "optiserve_batch_seconds") * 1e3 if batches > 0 else None
    front_ms = float(measured[enc]["frontend_ms"])  # gRPC's: its CPU per call, measured closed-loop only
    if grpc_port is None and after["optiserve_frontend_seconds_count"] > before["optiserve_frontend_seconds_count"]:
        front_ms = histogram_mean(before, after, "optiserve_frontend_seconds") * 1e3
    model_ms = front_ms + (infer_ms if infer_ms is not None else float(measured[enc]["inference_ms"]))
    latency = np.asarray(lat, dtype=np.float64)

    def per_request(key: str) -> np.ndarray:  # a Server-Timing metric of every request; None -> NaN
        return np.asarray([np.nan if x is None else x for x in data.get(key) or []], dtype=np.float64)

    def complete(a: np.ndarray) -> bool:
        return a.size == latency.size and bool(np.isfinite(a).all())

    own, queue, call = per_request("server_ms"), per_request("server_queue_ms"), per_request("server_call_ms")
    timed, queued = complete(own), complete(own) and complete(queue)
    called = queued and complete(call) and float(call.mean()) > 0
    factors: list[float] = []
    if called:  # each request's queue wait and its batch's call (Server-Timing): the wait is the simulator's
        # to add; the served calls vary more than the profiled ones back to back (a stall, cold caches), and
        # that spread, over its mean, becomes the simulated calls' own, so a slow call delays the requests
        # behind it; the rest (front end, the loop, the client) is the fixed term's spread
        model_ms = float((own - queue).mean())
        factors = [round(float(x), 4) for x in np.quantile(call / call.mean(), np.linspace(0, 1, QUANTILES))]
        outside = latency - queue - call
        source = "server-timing (less each request's queue wait and call; the calls' spread is their own)"
    elif timed:  # each request's own server time: what is left is outside the server
        outside = latency - own
        model_ms = float(own.mean())
        source = "server-timing"
    else:
        outside = latency - model_ms
        source = "front end + batch-1 call"
    spread = np.quantile(np.maximum(outside, 0.0), np.linspace(0, 1, QUANTILES))
    return {
        "encoding": enc,
        "fixed_ms": round(max(client_ms - server_s * 1e3, 0.0), 4),
        "client_ms": round(client_ms, 4),
        "server_ms": round(server_s * 1e3, 4),
        "frontend_ms": round(front_ms, 4),
        "inference_ms": None if infer_ms is None else round(infer_ms, 4),  # the server's batch-1 call here
        "model_ms": round(model_ms, 4),  # what the quantiles below are the latency beyond (on average)
        "outside_from": source,  # what came off each request's latency: per request, or one mean for all
        "overhead_quantiles_ms": [round(float(x), 4) for x in spread],  # latency - the server's own time
        "queue_ms": round(float(queue.mean()), 4) if queued else None,  # the batcher queue's mean wait here
        "call_factors": factors,  # each request's batch call over their mean: the served calls' spread
        "requests": len(lat),
        "rate": round(rate, 3),
        "late_fraction": data.get("late_fraction"),
        "measured_with": "optiserve loadtest (Locust), light open-loop load",
    }


def client_encoding(layout: InputLayout) -> str:
    """The encoding ``optiserve loadtest`` sends (binary past 4096 input elements)."""
    import math

    elements = sum(math.prod(t.shape) for t in layout.inputs)
    return "binary" if elements > 4096 else "json"


@dataclass(frozen=True)
class ServingTerms:
    """The served path's cost per request, as the simulator takes it (seconds)."""

    frontend_s: float  # the event loop's time per request: a FIFO station before the batcher
    fixed_s: float  # outside the server: the client and the loopback
    per_row_s: float  # the server's time per batch-1 call beyond the profiled session run
    encoding: str
    fixed_from: str  # "load-test client" or "closed loop (http.client)"
    fixed_quantiles_s: tuple[float, ...] = ()  # the fixed term's spread (light load test), when measured
    per_call_s: float = 0.0  # the server's batch-1 call under open-loop load beyond the profiled one, per batch
    # quantiles of the served batch calls over their mean, light open-loop load: each simulated call
    # is scaled by one drawn from these (empty: the profiled calls' own spread only)
    call_factors: tuple[float, ...] = ()
    # (req/s, seconds per request) measured under open-loop load: the event loop's CPU (the front end
    # on a core of its own; ``frontend_s`` is its cheapest) and the whole process's beyond its calls
    # (on a core shared with inference: the loop and the batcher's hand-offs); empty: not measured
    frontend_curve: tuple[tuple[float, float], ...] = ()
    shared_curve: tuple[tuple[float, float], ...] = ()
    # (req/s, quantiles) of the fixed term's spread: the light run's and the loaded run's (``client_loaded``),
    # read in log rate at each replica's rate; empty: ``fixed_quantiles_s`` at every rate
    fixed_curve: tuple[tuple[float, tuple[float, ...]], ...] = ()

    def scaled(self, factor: float) -> ServingTerms:
        """The server's own work (Python on the host CPU) ``factor`` times as long; the fixed part stays."""

        def curve(c: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
            return tuple((r, s * factor) for r, s in c)

        return replace(
            self,
            frontend_s=self.frontend_s * factor,
            per_row_s=self.per_row_s * factor,
            per_call_s=self.per_call_s * factor,
            frontend_curve=curve(self.frontend_curve),
            shared_curve=curve(self.shared_curve),
        )

    def front_end_slows_inference(self) -> bool:
        """Whether the front end, on a station of its own (a core to spare; on a core shared with
        inference it is charged per row instead), still stretches each call while it runs:
        REST's front end is the event loop's Python, holding the GIL the call needs to hand back its
        outputs; gRPC's is mostly grpc's C core on its own threads.

        Measured on a 2-vCPU Zen 5 guest, the int8 CNN over REST (binary), the server's own mean
        batch-1 call at 40 / 158 / 236 req/s: 2.56 / 2.87 / 3.15 ms, with its front end 0.82 /
        0.76 / 0.91 ms: the light run's call times (1 + rate x front end) gives 2.64 / 2.87 /
        3.11 ms. Verify's p99 against the mean of four runs at each REST rate (CNN and detector,
        target and peak): -18 to -1% with the stretch, 0 to +21% with the whole front end charged
        per row (3.4 ms at every rate), -17 to -27% with a plain station."""
        return self.encoding != "grpc"

    def describe(self) -> str:
        spread = ""
        if self.fixed_quantiles_s:
            q = self.fixed_quantiles_s
            spread = f", p99 {q[round(0.99 * (len(q) - 1))] * 1e3:.3g} ms"
        if len(self.fixed_curve) > 1:
            (r0, q0), (r1, q1) = self.fixed_curve[0], self.fixed_curve[-1]
            mean0, mean1 = sum(q0) / len(q0), sum(q1) / len(q1)
            spread += f" (mean {mean0 * 1e3:.3g} ms at {r0:.0f} req/s, {mean1 * 1e3:.3g} at {r1:.0f})"
        slower = f" + {self.per_call_s * 1e3:.3g} ms per call" if self.per_call_s > 0 else ""
        if self.frontend_curve:
            (r0, c0), (r1, c1) = self.frontend_curve[0], self.frontend_curve[-1]
            slower += f", front end {c0 * 1e3:.3g} ms at {r0:.0f} req/s to {c1 * 1e3:.3g} ms at {r1:.0f} (open loop)"
        if self.call_factors:
            f = self.call_factors
            slower += f", calls spread as served (p99 x{f[round(0.99 * (len(f) - 1))]:.3g} of the mean)"
        return (
            f"server front end {self.frontend_s * 1e3:.3g} ms + {self.per_row_s * 1e3:.3g} ms per row{slower}, fixed "
            f"{self.fixed_s * 1e3:.3g} ms{spread} ({self.encoding}; fixed from the {self.fixed_from}"
            + (
                "; the front-end work landing during each call stretches it: the GIL)"
                if self.front_end_slows_inference()
                else ")"
            )
        )


def serving_terms(profile: Profile, encoding: str | None = None) -> ServingTerms | None:
    """The serving terms of a profile (None when ``profile --serving`` did not measure them)."""

    meta = profile.meta
    serving = meta.get("serving") or {}
    if not serving or "error" in serving:
        return None
    if encoding is None:
        layout = meta.get("layout")
        encoding = client_encoding(InputLayout.from_dict(layout)) if layout else "json"
    enc = encoding if "frontend_ms" in (serving.get(encoding) or {}) else "json"
    if encoding == "grpc" and enc != "grpc" and serving.get("binary"):
        enc = "binary"  # a profile from before gRPC was measured: the closest REST encoding (raw tensors)
    fig = serving.get(enc)
    if not fig:
        return None
    client_name = "tritonclient.grpc" if enc == "grpc" else "http.client"
    fixed_curve: tuple[tuple[float, tuple[float, ...]], ...] = ()
    fixed_s, fixed_from = float(fig["fixed_ms"]) / 1e3, f"closed loop ({client_name})"
    spread: tuple[float, ...] = ()
    factors: tuple[float, ...] = ()
    frontend_s, infer_s = float(fig["frontend_ms"]) / 1e3, float(fig.get("inference_ms") or 0.0) / 1e3
    client = _client_figures(serving, enc)
    open_loop = client.get("encoding") == enc and client.get("inference_ms") is not None and "model_ms" in client
    if open_loop:  # the server's own call under the light open-loop run: what a queue of requests costs
        infer_s = float(client["inference_ms"]) / 1e3
        # The front end: the cheaper of back to back and the light run. Its cost per request falls
        # with load (caches warm, wake-ups shared): the MLP's JSON front end on a Zen 5 guest, 0.56 ms
        # in the light run at 100 req/s, 0.34 ms back to back, 0.13-0.14 ms in the server at 1,900
        # req/s; the light run's figure made its station saturate at half the load it served.
        frontend_s = min(frontend_s, float(client["frontend_ms"]) / 1e3)
    lone_s = frontend_s  # a lone request's front end: what the light run's own latency holds
    loaded = (fig.get("saturated") or {}).get("loop_cpu_ms")
    curve, shared = (_curve(fig, "loop_cpu_ms"), _curve(fig, "beyond_calls_ms")) if enc != "grpc" else ((), ())
    if curve:  # measured at the rates a load brings: the front end the simulator charges at each
        frontend_s = min(c for _, c in curve)
    elif enc != "grpc" and isinstance(loaded, int | float) and loaded > 0:
        # the loop's CPU per request back to back: what the front end costs the core under load (a lone
        # request's extra is in the fixed term below, which is its latency less what is charged here)
        frontend_s = min(frontend_s, float(loaded) / 1e3)
    # what the simulator charges the light run's requests for the front end: the curve at its rate
    at_light = _at(curve, float(client.get("rate") or 0.0)) if curve and client.get("rate") else frontend_s
    if client.get("encoding") == enc and "client_ms" in client and "inference_ms" in fig:
        # Everything the light open-loop run's latency holds beyond what the simulator charges a
        # request that never queues (front end + the server's batch-1 call): the client and the
        # loopback, and (in a profile from before the open-loop figures) the server's own open-loop
        # slowdown (a core woken from idle, the client beside it: 22 ms against 19 ms closed-loop for
        # the CNN on a Zen 3 guest), which the server's self-reported latency would leave out.
        model_ms = float(client["model_ms"]) - (lone_s - at_light) * 1e3 if open_loop else (at_light + infer_s) * 1e3
        fixed_ms = float(client["client_ms"]) - model_ms
        tail = int(client.get("requests") or 0) >= TAIL_REQUESTS
        quantiles = [float(x) for x in client.get("overhead_quantiles_ms") or ()]
        if open_loop and client.get("call_factors") and client.get("queue_ms") is not None:
            # the light run's mean latency less its queue wait, less what the simulator charges a request
            # that never queues: the fixed term's mean, whatever part of the server's work its own
            # Server-Timing window leaves out (gRPC's C core reads and writes the message outside it,
            # and that work is in the front end the simulator charges: counted once, not twice)
            fixed_ms = float(client["client_ms"]) - float(client["queue_ms"]) - (at_light + infer_s) * 1e3
            if tail and quantiles:
                quantiles = _shifted(quantiles, fixed_ms)
                factors = tuple(float(x) for x in client["call_factors"])
        fixed_s, fixed_from = max(fixed_ms, 0.0) / 1e3, "load-test client, open loop"
        if tail:
            spread = tuple(q / 1e3 for q in quantiles)
            # the loaded run, made the same way, is the spread's second point
            loaded = _loaded_spread(serving.get("client_loaded") or {}, enc, curve, frontend_s, infer_s)
            if factors and loaded is not None and loaded[0] > float(client.get("rate") or 0.0) > 0:
                fixed_curve = ((float(client["rate"]), spread), loaded)
    elif client.get("encoding") == enc and "fixed_ms" in client:
        fixed_s, fixed_from = float(client["fixed_ms"]) / 1e3, "load-test client"
    per_row, per_call = 0.0, 0.0
    base = _profiled_batch1_s(profile, int(serving.get("threads") or 1)) if infer_s > 0 else None
    if base is not None:
        if open_loop:  # once per batch: cold caches and the hand-off are per call, not per row
            per_call = min(max(infer_s - base, 0.0), MAX_PER_CALL_X * base)
        else:
            per_row = max(infer_s - base, 0.0)
    return ServingTerms(
        frontend_s, fixed_s, per_row, enc, fixed_from, spread, per_call, factors, curve, shared, fixed_curve
    )


def _shifted(quantiles: list[float], mean_ms: float) -> list[float]:
    """A client run's outside-the-server quantiles moved to ``mean_ms`` on average (none below 0)."""
    import numpy as np

    shift = mean_ms - float(np.mean(quantiles))
    return [max(q + shift, 0.0) for q in quantiles]


def _loaded_spread(
    client: dict[str, Any], enc: str, curve: tuple[tuple[float, float], ...], front_s: float, infer_s: float
) -> tuple[float, tuple[float, ...]] | None:
    """(req/s, quantiles in s) of the loaded client run's fixed term, made as the light run's is: its
    latency less its queue wait and what the simulator charges a request at its rate (the front-end
    ``curve`` there, ``front_s`` without one, and the light run's batch-1 call, which the simulator
    charges at every rate); None where it did not run in ``enc``, or too short for a tail."""
    needed = ("client_ms", "queue_ms", "rate", "overhead_quantiles_ms")
    if client.get("encoding") != enc or any(client.get(k) is None for k in needed):
        return None
    if int(client.get("requests") or 0) < TAIL_REQUESTS or not client["overhead_quantiles_ms"]:
        return None
    rate = float(client["rate"])
    charged_s = (_at(curve, rate) if curve else front_s) + infer_s
    fixed_ms = float(client["client_ms"]) - float(client["queue_ms"]) - charged_s * 1e3
    quantiles = _shifted([float(x) for x in client["overhead_quantiles_ms"]], fixed_ms)
    return rate, tuple(q / 1e3 for q in quantiles)


def _curve(fig: dict[str, Any], key: str) -> tuple[tuple[float, float], ...]:
    """(req/s, seconds) of ``key`` per request at the open-loop points; () from fewer than two. The
    saturated closed loop is not one: back to back costs less than the same rate open loop (the MLP,
    binary, on a Sapphire Rapids guest: 0.19 ms beyond its calls at 4,700 req/s closed loop, 0.22 ms
    at 3,760 open loop, and about 0.22 under perf_analyzer's Poisson load at 4,000)."""
    # (a point left out carries its rate and why, no figures)
    points = [(float(p["rate"]), float(p[key]) / 1e3) for p in fig.get("open_loop") or () if p.get(key) is not None]
    if len(points) < 2:
        return ()
    points.sort()
    return tuple(p for i, p in enumerate(points) if i == 0 or p[0] > points[i - 1][0])


def _at(curve: tuple[tuple[float, float], ...], rate: float) -> float:
    """The curve's cost at ``rate`` as the simulator reads it (linear in log rate, flat beyond its ends)."""
    from optiserve._curves import curve_at

    return curve_at(curve, rate)


def _client_figures(serving: dict[str, Any], enc: str) -> dict[str, Any]:
    """The light open-loop run in ``enc``: ``client`` (the encoding loadtest picks), ``client_grpc``
    or ``client_binary``/``client_json`` (the other REST one); {} when none ran in it."""
    for key in ("client", f"client_{enc}"):
        fig = serving.get(key) or {}
        if fig.get("encoding") == enc:
            return fig
    return {}


def _profiled_batch1_s(profile: Profile, threads: int) -> float | None:
    """The profiled mean of the call the serving stage ran: fp32, batch 1, its threads."""
    import numpy as np

    for m in profile.measurements:
        c = m.config
        ran = str(c.precision) == "fp32" and c.batch_size == 1 and c.threads == threads and not c.preprocess
        if ran and m.status is Status.OK and m.samples_ns:
            return float(np.mean(m.samples_ns)) / 1e9
    return None


def describe(meta: dict[str, Any]) -> str | None:
    """One summary line for ``show``."""
    s = meta.get("serving")
    if not s:
        return None
    if "error" in s:
        return f"serving path not measured: {s['error']}"

    def loaded(fig: dict[str, Any]) -> str:
        sat = fig.get("saturated") or {}
        said = f"{sat['loop_cpu_ms']:.3g} ms saturated" if "loop_cpu_ms" in sat else ""
        pts = [p for p in fig.get("open_loop") or [] if "loop_cpu_ms" in p]  # not the points left out
        if len(pts) >= 2:
            lo, hi = pts[0], pts[-1]
            curve = f"{lo['loop_cpu_ms']:.3g} ms at {lo['rate']:.0f} req/s"
            curve += f" to {hi['loop_cpu_ms']:.3g} at {hi['rate']:.0f}"
            said += (", " if said else "") + curve + " open loop"
        return f" ({said})" if said else ""

    parts = [
        f"{enc} {s[enc]['frontend_ms']:.3g} ms front end{loaded(s[enc])} + {s[enc]['fixed_ms']:.3g} ms fixed"
        for enc in ("json", "binary", "grpc")
        if "frontend_ms" in (s.get(enc) or {})
    ]
    client = s.get("client") or {}
    if "fixed_ms" in client:
        parts.append(f"load-test client {client['fixed_ms']:.3g} ms fixed ({client['encoding']})")
    if client.get("inference_ms") is not None and "model_ms" in client:  # the server's own figures, open loop
        parts.append(
            f"under light open-loop load ({client.get('requests')} requests): the server's batch-1 call "
            f"{client['inference_ms']:.3g} ms, front end {client['frontend_ms']:.3g} ms"
        )
    return "serving path (optiserve serve, per request): " + "; ".join(parts)
