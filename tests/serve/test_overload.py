"""Overload: a standing queue refuses by its age, refusals are shed from the headers (a large body's
503 closes the connection instead of reading it), and gRPC counts in the same metrics and health."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from optiserve._oip_client import free_port
from optiserve.models.graph import InputSpec
from optiserve.serve.admission import MIN_WAIT_S, Admission
from optiserve.serve.app import app_for_model, create_app
from optiserve.serve.endpoint import ServeConfig
from optiserve.serve.grpc_server import GrpcSettings
from optiserve.serve.server import ServerOptions
from tests.serve.live_server import live_server


def test_a_standing_queue_is_refused_by_its_age_not_its_count() -> None:
    a = Admission(max_requests=1000, max_bytes=2**30, max_wait_s=0.05)
    old = a.admit(0)
    old.queued(now=0.0)
    assert a.refusal(0, now=0.04) is None  # younger than the bound
    assert a.refusal(0, now=0.06) is None  # above it once: one burst or pause is not a standing queue
    reason = a.refusal(0, now=0.12)  # above it for the bound's length: refused, with 2 of 1,000 slots taken
    assert reason is not None and "queue standing" in reason
    old.started()  # its batch began: nothing waits any more
    assert a.refusal(0, now=0.13) is None
    old.release()
    assert a.requests == 0


def test_upload_time_is_not_queue_time_and_the_bound_follows_the_batches() -> None:
    a = Admission(max_requests=10, max_bytes=2**30, delay_s=0.002)
    slow = a.admit(100)  # admitted, body still arriving: not waiting yet
    assert a.refusal(0, now=time.perf_counter() + 60) is None
    assert a.max_wait_s == MIN_WAIT_S
    for _ in range(200):
        a.observe(0.1)  # 100 ms batches (a CNN): a 20 ms bound would refuse a healthy queue
    assert a.max_wait_s == pytest.approx(0.002 + 3 * 0.1, rel=1e-3)
    slow.release()
    assert a.bytes == 0


@contextmanager
def _held(max_queue: int = 1, health_port: int | None = None) -> Iterator[tuple[int, threading.Event]]:
    """A live server whose runtime waits on the event: batch 1, queue ``max_queue``."""
    gate = threading.Event()
    gate.set()

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        gate.wait(30)
        return [feeds["x"] * 2]

    app = create_app(
        run,
        [InputSpec("x", "float32", ("batch", 2))],
        ["y"],
        ServeConfig("toy", max_batch=1, max_delay_ms=0.0, max_queue=max_queue, max_body_bytes=64 * 2**20),
        lambda b: {"x": np.zeros((b, 2), np.float32)},
    )
    with live_server(app, ServerOptions(health_port=health_port)) as port:
        yield port, gate
        gate.set()


BODY = b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1.0,2.0]}]}'


def _post(body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return b"POST /v2/models/toy/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n + body


def _response(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one response read off ``sock``."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += sock.recv(65536)
    return head.lower(), rest


def _fill(port: int, gate: threading.Event, n: int) -> list[socket.socket]:
    """``n`` requests admitted and held (one in the runtime, the rest queued)."""
    gate.clear()
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(_post(BODY))
        held.append(s)
        time.sleep(0.1)
    return held


def test_a_refusal_closes_its_connection_and_the_kernel_refuses_the_excess_until_served() -> None:
    """The 503 says ``Connection: close``; the overload gate then closes the listener (new connections
    are refused by the kernel, at no cost to the server) while the health port stays open, and opens
    it again once the held requests are served."""
    health = free_port()
    with _held(health_port=health) as (port, gate):
        held = _fill(port, gate, 2)
        probe = socket.create_connection(("127.0.0.1", port), timeout=10)
        probe.sendall(_post(BODY))
        head, body = _response(probe)
        assert head.startswith(b"http/1.1 503") and b"overloaded" in body and b"retry-after: 1" in head
        assert b"connection: close" in head  # keep-alive off under overload
        probe.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10)
        assert httpx.get(f"http://127.0.0.1:{health}/v2/health/live", timeout=10).status_code == 200
        text = httpx.get(f"http://127.0.0.1:{health}/metrics", timeout=10).text
        assert "optiserve_listener_closed 1.0" in text and "optiserve_listener_pauses_total 1.0" in text
        gate.set()
        for s in held:
            assert _response(s)[0].startswith(b"http/1.1 200")
            s.close()
        deadline = time.monotonic() + 10
        while True:  # reopened on the same port once a connection closed below the limit
            try:
                again = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the listener never reopened"
                time.sleep(0.05)
        again.sendall(_post(BODY))
        assert _response(again)[0].startswith(b"http/1.1 200")
        again.close()
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'optiserve_requests_total{status="503"} 1.0' in text
        assert 'optiserve_http_responses_total{status="503"} 1.0' in text


def test_a_large_bodys_503_closes_without_reading_it() -> None:
    """Headers of a 20 MB body and 1 MB of it: the 503 comes at once, then the server's FIN: the
    client stops sending (before: the connection stayed open, waiting for the other 19 MB)."""
    with _held() as (port, gate):
        held = _fill(port, gate, 2)
        big = socket.create_connection(("127.0.0.1", port), timeout=10)
        big.sendall(_post(b"[" * 2**20, length=20 * 2**20))
        head, body = _response(big)
        assert head.startswith(b"http/1.1 503") and b"connection: close" in head and b"overloaded" in body
        big.settimeout(5)
        assert big.recv(65536) == b""  # half-closed after the 503, not a reset and not left open
        big.close()
        gate.set()
        for s in held:
            assert _response(s)[0].startswith(b"http/1.1 200")
            s.close()


def test_grpc_requests_count_in_the_prometheus_metrics_and_health_is_standard(mlp_path: Path) -> None:
    gport = free_port()
    app = app_for_model(mlp_path, "fp32", 1, ServeConfig("mlp", max_batch=2), grpc=GrpcSettings(gport))
    with live_server(app) as port:
        c = tc.InferenceServerClient(f"127.0.0.1:{gport}")
        inp = tc.InferInput("features", [1, 64], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
        assert c.infer("mlp", [inp]).as_numpy("logits").shape == (1, 10)
        with pytest.raises(Exception, match="unknown model"):
            c.infer("gpt", [inp])
        c.close()
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'optiserve_requests_total{status="200"} 1.0' in text  # before: gRPC was never counted
        assert 'optiserve_requests_total{status="404"} 1.0' in text
        assert "optiserve_request_latency_seconds_count 1.0" in text
        with grpc.insecure_channel(f"127.0.0.1:{gport}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "inference.GRPCInferenceService", "mlp"):
                r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert r.status == health_pb2.HealthCheckResponse.SERVING, service
            with pytest.raises(grpc.RpcError) as info:
                stub.Check(health_pb2.HealthCheckRequest(service="gpt"), timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
