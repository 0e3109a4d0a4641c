"""Admission control: refuse at the door, by count, by bytes and by how long the queue has stood.

Why a wait bound and not a count only: a count that keeps the batcher busy for
the MLP (hundreds of requests, a few ms) is seconds of queue for a CNN, so under
overload every 200 came late and the excess still cost parsing. Here a request
is refused when the oldest admitted request that is *waiting* (body received,
batch not started: parsing, the parse gate, the batcher queue) has waited more
than ``max_wait_s`` for at least ``max_wait_s`` (CoDel's rule: a standing queue,
not one burst or one GC pause). The bound follows the service: ``max_delay`` plus
a few batches' compute time (``observe``), never below ``MIN_WAIT_S``. Body
upload time is not counted: a slow client's upload is not the server's queue.

Single-threaded by design (the event loop; the gRPC server runs on the same one).
"""

from __future__ import annotations

import math
import time
from collections import deque

MIN_WAIT_S = 0.02  # below this, loop jitter alone would look like a standing queue
BATCHES = 3  # queue worth this many batches' compute: enough to keep the batcher full
EWMA = 0.1


class Overloaded(Exception):
    """The server is full: the caller should answer 503 and the client retry later."""


class Ticket:
    """A request's place in flight: its body bytes and its slot, until released."""

    __slots__ = ("_admission", "_done", "admitted", "call_s", "nbytes", "since", "started_at", "waiting")

    def __init__(self, admission: Admission, nbytes: int, now: float) -> None:
        self._admission, self.nbytes, self._done = admission, nbytes, False
        self.admitted = now
        self.since = 0.0
        self.started_at = math.nan  # when its batch began (perf_counter): the end of its queue wait
        self.call_s = math.nan  # its batch's runtime call (seconds)
        self.waiting = False

    def grow(self, nbytes: int) -> None:
        """Reserve more body bytes (a chunked body longer than announced); ``Overloaded`` past the budget."""
        a = self._admission
        if a.bytes + nbytes > a.max_bytes:
            raise Overloaded(f"{a.bytes} body bytes in flight, limit {a.max_bytes}")
        a.bytes += nbytes
        self.nbytes += nbytes

    def queued(self, now: float | None = None) -> None:
        """The body is here: from now on the request waits for the server."""
        if not self._done and not self.waiting:
            self.since = time.perf_counter() if now is None else now
            self.waiting = True
            self._admission.waiting.append(self)

    def started(self) -> None:
        """Its batch began: no longer waiting (the batcher calls this, from its worker thread)."""
        self.started_at = time.perf_counter()
        self.waiting = False

    def ran(self, seconds: float) -> None:
        """Its batch's runtime call took ``seconds`` (the batcher calls this, on the event loop)."""
        self.call_s = seconds

    def release(self) -> None:
        if not self._done:
            self._done = True
            self.waiting = False
            self._admission.requests -= 1
            self._admission.bytes -= self.nbytes

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Admission:
    """Requests and body bytes in flight, and the age of the oldest waiting request; never blocks."""

    def __init__(self, max_requests: int, max_bytes: int, max_wait_s: float | None = None, delay_s: float = 0.0):
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.fixed_wait = max_wait_s  # None: follow the service time
        self.delay_s = delay_s
        self.max_wait_s = max_wait_s if max_wait_s is not None else max(MIN_WAIT_S, delay_s)
        self.requests = 0
        self.bytes = 0
        self.waiting: deque[Ticket] = deque()  # in the order they started waiting; stale entries dropped lazily
        self.admitted: deque[Ticket] = deque()  # in the order admitted; released ones dropped lazily
        self._compute_s = 0.0
        self._above_since: float | None = None

    def observe(self, compute_s: float) -> None:
        """One executed batch's compute time: the wait bound follows it."""
        prev = self._compute_s
        self._compute_s = compute_s if prev == 0.0 else prev + EWMA * (compute_s - prev)
        if self.fixed_wait is None:
            self.max_wait_s = max(MIN_WAIT_S, self.delay_s + BATCHES * self._compute_s)

    def oldest_wait(self, now: float) -> float:
        q = self.waiting
        while q and not q[0].waiting:
            q.popleft()
        return now - q[0].since if q else 0.0

    def oldest_age(self, now: float) -> float:
        """How long the oldest request in flight has been, upload included (the overload gate's signal:
        it limits connections, never refuses, so a slow upload may count there)."""
        q = self._trimmed()
        return now - q[0].admitted if q else 0.0

    def _trimmed(self) -> deque[Ticket]:
        """``admitted`` with the released ones at its front dropped (each leaves once: amortised O(1))."""
        q = self.admitted
        while q and q[0]._done:
            q.popleft()
        return q

    def refusal(self, nbytes: int, now: float | None = None) -> str | None:
        """Why a request of ``nbytes`` would be refused now, or None: admitting it is the caller's next step."""
        if self.requests >= self.max_requests:
            return f"{self.requests} requests in flight, limit {self.max_requests}"
        if nbytes and self.bytes + nbytes > self.max_bytes:
            return f"{self.bytes} body bytes in flight, limit {self.max_bytes}"
        t = time.perf_counter() if now is None else now
        age = self.oldest_wait(t)
        if age <= self.max_wait_s:
            self._above_since = None
            return None
        if self._above_since is None:
            self._above_since = t
        if t - self._above_since < self.max_wait_s:
            return None
        return f"queue standing: oldest request waiting {age * 1e3:.0f} ms, bound {self.max_wait_s * 1e3:.0f} ms"

    def admit(self, nbytes: int) -> Ticket:
        reason = self.refusal(nbytes)
        if reason is not None:
            raise Overloaded(reason)
        self.requests += 1
        self.bytes += nbytes
        ticket = Ticket(self, nbytes, time.perf_counter())
        self._trimmed().append(ticket)  # trimmed here too: bounded without a reader
        return ticket
