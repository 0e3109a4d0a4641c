"""An HTTP/1.1 load driver fast enough to overload a small model's server from one core.

Why not Locust, httpx or asyncio streams: on one core they top out near 1-9k
req/s, under 1.5x the MLP's capacity, so "5x overload" was never offered. This
one is a bare ``asyncio.Protocol`` per connection on uvloop (when installed):
requests pre-encoded, responses parsed only for the status and Content-Length,
arrivals sent in bursts per timer wake-up, each latency counted from its
*scheduled* time (no coordinated omission). What it really sent is returned
(``sent``), so a run that could not offer its rate says so. A connection the
server's kernel refuses (its overload gate closed the listener) is an arrival
sent and refused: counted apart from the 503s, timed the same way. Refusals
are also timed from the attempt (the server's part), and the driver's own lag
(attempt - schedule) is returned: a driver behind its schedule is not the
server's latency.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

import numpy as np

MAX_CONNECTIONS = 1000
TIMEOUT_S = 10.0


def request_bytes(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One pre-encoded HTTP/1.1 POST (keep-alive), as the driver sends it again and again."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "content-length")
    return head.encode() + b"\r\n" + body


@dataclass(frozen=True)
class Run:
    offered: float  # req/s asked for (0: closed loop)
    sent: float  # req/s written to a socket
    ok: float  # 200s per second, any latency
    goodput: float  # 200s per second within ``bound_s``
    bound_s: float
    refused: int  # 503s
    failed: int  # other statuses, resets, timeouts, no connection left
    ok_p50_ms: float
    ok_p99_ms: float
    refused_p99_ms: float
    conn_refused: int = 0  # connections the server's kernel refused (ECONNREFUSED)
    conn_refused_p99_ms: float = float("nan")
    failed_by: tuple[tuple[str, int], ...] = ()  # why, for ``failed``
    refusal_from_attempt_p99_ms: float = float("nan")  # 503s and refused connects, from the send/connect
    driver_lag_p99_ms: float = float("nan")  # how late the driver itself sent or connected

    def failures(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.failed_by if v) or "none"


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self, done: Callable[[_Conn, int, float], None], lost: Callable[[_Conn], None]) -> None:
        self.done, self.lost = done, lost
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.scheduled = 0.0
        self.sent_at = 0.0
        self.busy = False
        self.need = -1  # bytes of the whole response once its head is parsed
        self.status = 0
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass

    def send(self, raw: bytes, scheduled: float) -> None:
        assert self.transport is not None
        self.scheduled, self.busy, self.need = scheduled, True, -1
        self.sent_at = time.perf_counter()
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"content-length:")
            length = 0
            if at >= 0:
                eol = head.find(b"\r\n", at)
                length = int(head[at + 15 : eol if eol >= 0 else len(head)])
            self.close_after = b"connection: close" in head
            self.need = end + 4 + length
        if len(self.buf) >= self.need:
            del self.buf[: self.need]
            self.busy = False
            self.done(self, self.status, time.perf_counter() - self.scheduled)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.lost(self)


async def drive(
    port: int, raw: bytes, rate: float | None, seconds: float, bound_s: float, users: int = 32, seed: int = 0
) -> Run:
    """Open loop at ``rate`` (Poisson), or closed loop with ``users`` connections when ``rate`` is None."""
    loop = asyncio.get_running_loop()
    idle: list[_Conn] = []
    conns: set[_Conn] = set()
    ok: list[float] = []
    refused: list[float] = []
    conn_refused: list[float] = []
    answered: list[float] = []  # refusals (503s and refused connects) from the attempt, not the schedule
    lag: list[float] = []  # the driver's own delay: attempt - schedule
    failed = 0
    why: collections.Counter[str] = collections.Counter()
    sent = 0
    opening = 0
    closed_loop = rate is None
    t0 = time.perf_counter()
    end = t0 + seconds
    finished = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()

    def done(c: _Conn, status: int, took: float) -> None:
        lag.append(c.sent_at - c.scheduled)
        if status == 503:
            answered.append(time.perf_counter() - c.sent_at)
        nonlocal failed
        (ok if status == 200 else refused if status == 503 else []).append(took)
        if status not in (200, 503):
            failed += 1
            why[f"status {status}"] += 1
        if c.close_after and c.transport is not None:
            c.transport.close()
            return
        if closed_loop and time.perf_counter() < end:
            fire(c, time.perf_counter())
        else:
            idle.append(c)
        if not closed_loop and time.perf_counter() >= end and not finished.done() and not any(x.busy for x in conns):
            finished.set_result(None)

    def lost(c: _Conn) -> None:
        nonlocal failed
        conns.discard(c)
        if c in idle:
            idle.remove(c)
        if c.busy:
            failed += 1
            why["closed before the response"] += 1
            c.busy = False
        if closed_loop and time.perf_counter() < end:
            spawn(open_and_send(time.perf_counter()))

    def spawn(coro: Coroutine[None, None, None]) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def fire(c: _Conn, scheduled: float) -> None:
        nonlocal sent
        sent += 1
        c.send(raw, scheduled)

    def try_connect(scheduled: float) -> None:
        """Open loop: a non-blocking connect first, so a refused one costs no task (on loopback the
        kernel answers within the call); one in progress or made goes on as a task."""
        nonlocal sent
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        t = time.perf_counter()
        err = sock.connect_ex(("127.0.0.1", port))
        if err == errno.ECONNREFUSED:
            sock.close()
            now = time.perf_counter()
            conn_refused.append(now - scheduled)
            answered.append(now - t)
            lag.append(t - scheduled)
            sent += 1
            return
        spawn(open_and_send(scheduled, sock, err, t))

    async def open_and_send(
        scheduled: float, sock: socket.socket | None = None, err: int = 0, attempt: float | None = None
    ) -> None:
        nonlocal failed, opening, sent
        opening += 1
        attempt = time.perf_counter() if attempt is None else attempt
        try:
            if sock is None:
                _, c = await loop.create_connection(lambda: _Conn(done, lost), "127.0.0.1", port)
            else:
                try:
                    if err == errno.EINPROGRESS:
                        await loop.sock_connect(sock, ("127.0.0.1", port))
                    elif err:
                        raise OSError(err, os.strerror(err))
                    _, c = await loop.create_connection(lambda: _Conn(done, lost), sock=sock)
                except BaseException:
                    sock.close()
                    raise
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED and not closed_loop:
                now = time.perf_counter()
                conn_refused.append(now - scheduled)
                answered.append(now - attempt)
                lag.append(attempt - scheduled)
                sent += 1
            else:
                failed += 1
                why[f"connect: {errno.errorcode.get(exc.errno or 0, exc)}"] += 1
                if closed_loop and time.perf_counter() < end:  # a closed-loop user retries, as a client would
                    await asyncio.sleep(0.01)
                    spawn(open_and_send(time.perf_counter()))
            return
        finally:
            opening -= 1
        conns.add(c)
        fire(c, scheduled)

    if closed_loop:
        for _ in range(users):
            spawn(open_and_send(time.perf_counter()))
        await asyncio.sleep(seconds)
    else:
        assert rate is not None
        gaps = np.random.default_rng(seed).exponential(1 / rate, int(rate * seconds * 1.2) + 10)
        arrivals = (t0 + np.cumsum(gaps)).tolist()
        i = 0
        while i < len(arrivals) and arrivals[i] < end:
            now = time.perf_counter()
            while i < len(arrivals) and arrivals[i] <= now and arrivals[i] < end:
                if idle:
                    fire(idle.pop(), arrivals[i])
                elif len(conns) + opening < MAX_CONNECTIONS:
                    try_connect(arrivals[i])
                else:
                    failed += 1  # a real client would have had to wait: the server is not keeping up
                    why["no connection left"] += 1
                i += 1
            if i < len(arrivals):
                await asyncio.sleep(max(0.0, arrivals[i] - time.perf_counter()))
        if any(c.busy for c in conns) or opening:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(finished), TIMEOUT_S)
    wall = max(seconds, 1e-9)
    unanswered = sum(c.busy for c in conns)  # still unanswered: timed out
    failed += unanswered
    why["timed out"] += unanswered
    for c in list(conns):
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.05)

    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q) * 1e3) if xs else float("nan")

    good = sum(1 for x in ok if x <= bound_s)
    return Run(
        rate or 0.0,
        sent / wall,
        len(ok) / wall,
        good / wall,
        bound_s,
        len(refused),
        failed,
        pct(ok, 50),
        pct(ok, 99),
        pct(refused, 99),
        len(conn_refused),
        pct(conn_refused, 99),
        tuple(sorted(why.items())),
        pct(answered, 99),
        pct(lag, 99),
    )


def run(coro: object) -> Run:
    """``asyncio.run`` on uvloop when it is installed (the driver needs every cycle of its core)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)  # type: ignore[arg-type]
