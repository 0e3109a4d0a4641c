"""Open-loop load test on Locust (headless, as a library).

Send times are scheduled before the run (Poisson, gamma or a replayed trace);
each request's latency counts from its *scheduled* time, so a client that falls
behind cannot hide queueing. A send that leaves more than ``late_ms`` after its
schedule is late; a run with more than 1% late sends is flagged invalid.

Locust monkey-patches the standard library with gevent on import, so this
module must run in its own process: ``optiserve loadtest`` is one.
"""

from __future__ import annotations

import gc
import itertools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np

from optiserve._oip_client import grpc_request_for, payload_for, wait_until_ready
from optiserve.errors import UsageError
from optiserve.serve.server_timing import metric_ms

__all__ = [
    "CLIENT_BUSY_WARN",
    "MAX_ERROR_RATE",
    "MAX_REQUESTS",
    "LoadResult",
    "payload_for",
    "run_loadtest",
    "wait_until_ready",
]

MAX_REQUESTS = 500_000
MAX_ERROR_RATE = 0.001  # more failed requests than this fails a run, whatever its latency
LATE_MS = 5.0  # a send this far behind its schedule is late
MAX_LATE = 0.01  # more late sends than this and the run is invalid: the client fell behind
# Past this share of the run on a CPU, the one-process client's own queueing shows in the tail (MLP on a
# Zen 3 2-vCPU guest, client on its own core: busy 0.14 at 100 req/s, 0.50 at 900, 0.65 at 1200, where
# the p99 went from 10 to 13 to 20 ms with late sends still under 1%; on a Sapphire Rapids guest at 48%
# busy the slowest 1% spent 3.5 ms in the server and 24.6 ms outside it, late sends 0.4%)
CLIENT_BUSY_WARN = 0.35
GRPC_CHANNELS = 4  # a few clients' connections, as a fleet opens them (one HTTP/2 connection each)
# a gRPC status -> the HTTP status it counts as (the errors name the gRPC code)
GRPC_STATUS = {"UNAVAILABLE": 503, "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "DEADLINE_EXCEEDED": 504,
               "INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "UNAUTHENTICATED": 401, "UNIMPLEMENTED": 501}  # fmt: skip


@dataclass(frozen=True)
class LoadResult:
    url: str
    scheduled: int
    completed: int
    errors: dict[str, int]
    latency_ms: np.ndarray = field(repr=False)  # from scheduled send to response, successes only
    index: np.ndarray = field(repr=False)  # schedule position of each latency
    late_fraction: float
    duration_s: float
    target_rate: float
    client_cpu_s: float = 0.0  # this process's CPU over the run: the client's own share of the measured latency
    # the server's own time per latency (its Server-Timing header or gRPC trailer, ms; NaN where it sent none)
    server_ms: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    # of which its wait in the batcher queue (the Server-Timing ``queue`` metric, ms; NaN where not sent)
    queue_ms: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    # and its batch's runtime call (the ``call`` metric, ms)
    call_ms: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    @property
    def client_cpu_ms(self) -> float:
        """The client's CPU per request sent (ms)."""
        sent = self.scheduled - self.errors.get("not sent", 0)
        return self.client_cpu_s / sent * 1e3 if sent else 0.0

    @property
    def client_busy(self) -> float:
        """The share of the run the client's one process was on a CPU: past ``CLIENT_BUSY_WARN`` its
        own queueing (responses of one batch handled one after another) shows in the measured tail."""
        return self.client_cpu_s / self.duration_s if self.duration_s else 0.0

    @property
    def valid(self) -> bool:
        return self.late_fraction <= MAX_LATE

    @property
    def failed(self) -> int:
        """Requests scheduled that got no 200: refused, errors, timeouts, never sent."""
        return self.scheduled - self.completed

    @property
    def error_rate(self) -> float:
        return self.failed / self.scheduled if self.scheduled else 0.0

    def tail_split(self) -> tuple[float, float] | None:
        """The slowest 1% of requests: their mean time in the server (its Server-Timing) and outside it
        (the client, the loopback); None where the server sent no timing. A tail mostly outside a
        server that is fast on its side is the client's, whatever the late sends say."""
        own = self.server_ms
        if own.size != self.latency_ms.size or not own.size:
            return None
        slow = np.argsort(self.latency_ms)[-max(1, own.size // 100) :]
        inside = own[slow]
        if np.isnan(inside).any():
            return None
        return float(inside.mean()), float((self.latency_ms[slow] - inside).mean())

    def verdict_latencies(self) -> np.ndarray:
        """Latencies for a verdict: a failed request counts as over any target (never left out)."""
        return np.concatenate([self.latency_ms, np.full(self.failed, np.inf)])

    def summary(self) -> dict[str, Any]:
        lat = self.latency_ms
        pct = np.quantile(lat, [0.5, 0.95, 0.99, 0.999]) if lat.size else np.full(4, math.nan)
        return {
            "url": self.url,
            "target_rate": self.target_rate,
            "achieved_rate": self.completed / self.duration_s if self.duration_s else 0.0,
            "scheduled": self.scheduled,
            "completed": self.completed,
            "errors": self.errors,
            "failed": self.failed,
            "error_rate": self.error_rate,
            "p50_ms": float(pct[0]),
            "p95_ms": float(pct[1]),
            "p99_ms": float(pct[2]),
            "p999_ms": float(pct[3]),
            "late_fraction": self.late_fraction,
            "valid": self.valid,
            "client_cpu_ms": round(self.client_cpu_ms, 4),
            "client_busy": round(self.client_busy, 4),
            **self._tail_fields(),
        }

    def _tail_fields(self) -> dict[str, float]:
        split = self.tail_split()
        if split is None:
            return {}
        return {"tail_server_ms": round(split[0], 4), "tail_outside_ms": round(split[1], 4)}


def run_loadtest(
    url: str,
    model: str,
    schedule_s: np.ndarray,
    users: int,
    late_ms: float = LATE_MS,
    timeout_s: float = 30.0,
    samples: Mapping[str, np.ndarray] | None = None,
    binary: bool | None = None,
    grpc_port: int | None = None,
) -> LoadResult:
    """Send one request at each scheduled time (seconds from start) and collect latencies
    (``binary``: the tensor encoding both ways; None: binary past 4096 input elements;
    ``grpc_port``: send ``ModelInfer`` over gRPC to the URL's host on that port instead, raw
    tensors as ``tritonclient.grpc`` sends them; the URL still answers the model's metadata)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"not an http(s) URL: {url!r}")
    if schedule_s.size == 0 or schedule_s.size > MAX_REQUESTS:
        raise UsageError(f"a load test sends between 1 and {MAX_REQUESTS} requests, not {schedule_s.size}")
    if grpc_port is not None and not 0 < grpc_port < 65536:
        raise UsageError(f"--grpc-port must be a port number, not {grpc_port}")
    body, headers = payload_for(url, model, samples=samples, binary=binary) if grpc_port is None else (b"", {})
    request = grpc_request_for(url, model, samples=samples) if grpc_port is not None else None

    import gevent
    from locust import FastHttpUser, User, constant, task
    from locust.env import Environment
    from locust.exception import StopUser

    n = int(schedule_s.size)
    results: list[tuple[float, float, float, int, float, float, float]] = []  # + server, queue, call ms
    cursor = [0]  # next request to send, shared by the users (gevent: no preemption here)
    clock = {"t0": 0.0}
    path = f"{parsed.path.rstrip('/')}/v2/models/{model}/infer"

    def next_slot() -> float:
        """The next scheduled send time, once it has come (``StopUser`` when the schedule is done)."""
        i = cursor[0]
        if i >= n:
            raise StopUser()
        cursor[0] = i + 1
        due = clock["t0"] + float(schedule_s[i])
        delay = due - time.perf_counter()
        if delay > 0:
            gevent.sleep(delay)
        return due

    class OpenLoop(FastHttpUser):  # type: ignore[misc]
        host = f"{parsed.scheme}://{parsed.netloc}"
        wait_time = constant(0)
        network_timeout = timeout_s
        connection_timeout = timeout_s

        @task  # type: ignore[untyped-decorator]
        def send(self) -> None:
            due = next_slot()
            sent = time.perf_counter()
            with self.client.post(path, data=body, headers=headers, catch_response=True) as resp:
                status = int(resp.status_code or 0)
                if status == 200:
                    resp.success()
                else:
                    resp.failure(f"status {status}")
                timing = resp.headers.get("server-timing") if status == 200 else None
            results.append((due, sent, time.perf_counter(), status, *_timings(timing)))

    class GrpcOpenLoop(User):  # type: ignore[misc]
        """The same schedule over gRPC: gevent-cooperative calls (grpc's gevent mode) on a few channels."""

        wait_time = constant(0)

        def on_start(self) -> None:
            self.call = stubs[next(spread) % len(stubs)].ModelInfer

        @task  # type: ignore[untyped-decorator]
        def send(self) -> None:
            due = next_slot()
            sent = time.perf_counter()
            timing = None
            try:
                _, call = self.call.with_call(request, timeout=timeout_s)
                status = 200
                timing = dict(call.trailing_metadata() or ()).get("server-timing")
            except grpc.RpcError as exc:
                status = GRPC_STATUS.get(exc.code().name, 500)
                codes[status] = exc.code().name
            results.append((due, sent, time.perf_counter(), status, *_timings(timing)))

    codes: dict[int, str] = {}
    spread = itertools.count()
    channels: list[Any] = []
    stubs: list[Any] = []
    if grpc_port is not None:
        import grpc
        import grpc.experimental.gevent as grpc_gevent
        from tritonclient.grpc import service_pb2_grpc

        grpc_gevent.init_gevent()  # blocking calls yield to the other users (Locust runs on gevent)
        channels = [grpc.insecure_channel(f"{parsed.hostname}:{grpc_port}") for _ in range(GRPC_CHANNELS)]
        stubs = [service_pb2_grpc.GRPCInferenceServiceStub(c) for c in channels]
    env = Environment(user_classes=[OpenLoop if grpc_port is None else GrpcOpenLoop])
    runner = env.create_local_runner()
    # A collector pause stalls every in-flight request of a one-process client and
    # lands in the measured tail: collect once, then keep the collector off for the
    # bounded length of the run.
    gc.collect()
    gc.freeze()
    gc.disable()
    clock["t0"] = time.perf_counter() + 0.5 + users / 100  # let the users spawn before the first send
    cpu0 = time.process_time()
    runner.start(users, spawn_rate=100)
    deadline = clock["t0"] + float(schedule_s[-1]) + timeout_s + 5
    while len(results) < n and time.perf_counter() < deadline:
        gevent.sleep(0.05)
    client_cpu_s = time.process_time() - cpu0
    runner.quit()
    for c in channels:
        c.close()
    gc.enable()
    gc.unfreeze()
    arr = np.array(results, dtype=np.float64).reshape(-1, 7)
    ok = arr[arr[:, 3] == 200]
    errors: dict[str, int] = {}
    for s in arr[arr[:, 3] != 200][:, 3].astype(int):
        key = codes.get(int(s)) or (str(s) if s else "connection")
        errors[key] = errors.get(key, 0) + 1
    if len(arr) < n:
        errors["not sent"] = n - len(arr)
    late = float(((arr[:, 1] - arr[:, 0]) > late_ms / 1e3).mean()) if len(arr) else 1.0
    span = float(arr[:, 2].max() - clock["t0"]) if len(arr) else 0.0
    rate = n / float(schedule_s[-1]) if schedule_s[-1] > 0 else math.inf
    ok = ok[np.argsort(ok[:, 0], kind="stable")]  # in schedule order: scheduled times increase with the index
    index = np.searchsorted(clock["t0"] + schedule_s, ok[:, 0] - 1e-9)
    latency = (ok[:, 2] - ok[:, 0]) * 1e3
    return LoadResult(
        url, n, len(ok), errors, latency, index, late, span, rate, client_cpu_s, ok[:, 4], ok[:, 5], ok[:, 6]
    )


def _timings(header: str | None) -> tuple[float, float, float]:
    """(server, queue wait, call) ms of one response's Server-Timing; NaN for each one not sent."""
    return metric_ms(header), metric_ms(header, "queue"), metric_ms(header, "call")


def server_timing_ms(header: str | None, metric: str = "infer") -> float:
    """The ``dur`` of ``metric`` in a W3C ``Server-Timing`` value (``infer;dur=1.234, queue;dur=0.1``)
    in ms; NaN when absent or malformed (another server, or none sent): the load test never fails on it."""
    return metric_ms(header, metric)
