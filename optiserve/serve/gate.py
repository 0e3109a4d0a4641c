"""The connection limit under overload: AIMD on open connections, enforced by the kernel.

Why: a refusal the server has to read costs tens of microseconds of its one
Python thread (accept, parse the headers, write a 503). At five times a small
model's capacity that alone fills the core: measured on a 2-vCPU Zen 3 guest,
the MLP's server answered 12,800 503s a second and served 20% of its capacity
within 0.5 s (4% with a profiler attached). A connection the kernel refuses costs the server nothing. So,
like Envoy's overload manager (disable keep-alive, stop accepting connections)
with TCP's congestion window for the limit:

- a refused request's 503 closes its connection (``Connection: close``);
- a refusal cuts the limit to ``BETA`` times the connections open, and an
  answered request while a queue stands (more than a batch per instance in
  flight, the oldest past the admission's bound, upload included:
  ``pressure``, a delay signal as TCP Vegas's, before any refusal is needed)
  cuts it to ``BETA`` times itself, or as a refusal does within ``RECENT_S``
  of one, each at most once per ``window_s`` (one burst is one cut), never
  below ``floor``;
- each other answered request raises it by ``1 / limit`` (one connection per
  "window" of responses) while a queue stands, and by 1 while none does (no
  more than a batch per instance in flight: capacity to spare, TCP's slow
  start), up to ``ceiling`` (``--max-connections``);
- while the connections open reach the limit the listening sockets are
  closed, so the kernel refuses new connections at once (ECONNREFUSED: a
  client or a load balancer tries elsewhere); they are opened again on the
  same address as soon as a connection closes below the limit.

The open connections are then a closed loop the server can serve within its
latency bound, and the excess costs nothing. Measured and dropped on the way
(2-vCPU Zen 3 guest): a limit on requests in flight instead of connections let
the accept backlog fill between batches (the MLP at 5x: 26-37% goodput, where
the connection limit reached 52-98% in the same session); pressure without the
queue test cut the limit on one slow request and refused the connections a
load-test client opened at 2 req/s on a real detector; pressure held for the
bound's length first (CoDel) let the CNN's accepted requests wait 1.5-2.4 s;
closing a 200's connection past the limit cost more in reconnects than it
saved; growing by ``1 / limit`` with no queue left a transient's cut standing
(a detector at 60% of its speed, 92 load-test users on keep-alive connections, a
few queues from host stalls: each cut to 0.9 x the connections open, and the users
whose 503 closed their connection met a closed listener; 36% of the requests failed,
nearly all refused connections, on a 2-vCPU Zen 5 guest; 0 with the fast growth);
pressure cutting to ``BETA`` times the connections *open* (as a refusal
does) refused 25% of a 25-user load test's requests at a quarter of the
encoder's capacity (2-vCPU Zen 4 guest): one queue at light load cut the limit
from its ceiling to the few users connected yet, and the others' first
connections met a closed listener for seconds. A probe that connects while the
listener is closed is refused too: ``--health-port`` serves the health routes on
a listener this never closes.
Single-threaded: the event loop's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("optiserve.serve")
BETA = 0.9  # multiplicative decrease per overload window
MIN_FLOOR = 8
RECENT_S = 1.0  # pressure this soon after a refusal is the same overload: it cuts as the refusal did


class Listener:
    """Closes and reopens a uvicorn server's listening sockets on ``port`` (same addresses, same protocol);
    its other listeners (the health port) stay open."""

    def __init__(self, server: Any, backlog: int, port: int) -> None:
        self.server = server  # uvicorn.Server: its ``servers`` list is what its shutdown closes
        self.backlog, self.port = backlog, port
        self.addresses: list[tuple[int, Any]] = []
        self.paused = False
        self._resuming = False
        self.pauses = 0

    def _factory(self) -> Callable[[], asyncio.Protocol]:
        s = self.server  # the protocol uvicorn's own startup builds for every connection
        return functools.partial(
            s.config.http_protocol_class, config=s.config, server_state=s.server_state, app_state=s.lifespan.state
        )

    def _ours(self, srv: Any) -> bool:
        return any(sock.getsockname()[1] == self.port for sock in (srv.sockets or ()))

    def pause(self) -> None:
        if self.paused or self.server.should_exit:
            return
        servers = [srv for srv in self.server.servers if self._ours(srv)]
        self.addresses = [(s.family, s.getsockname()) for srv in servers for s in (srv.sockets or ())]
        if not self.addresses:
            return
        for srv in servers:
            srv.close()  # the kernel refuses new connections from here on; open ones stay
        self.server.servers = [srv for srv in self.server.servers if srv not in servers]
        self.paused = True
        self.pauses += 1

    def resume(self) -> None:
        if self.paused and not self._resuming:
            self._resuming = True
            asyncio.get_running_loop().create_task(self._reopen())

    async def _reopen(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.paused and not self.server.should_exit:
                try:
                    for family, address in self.addresses:
                        sock = socket.socket(family, socket.SOCK_STREAM)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        sock.bind(address)
                        srv = await loop.create_server(
                            self._factory(), sock=sock, ssl=self.server.config.ssl, backlog=self.backlog
                        )
                        self.server.servers.append(srv)
                    self.paused = False
                except OSError as exc:  # the port taken meanwhile: try again, say so once a second at most
                    log.warning("reopening the listener failed (%s); retrying", exc)
                    await asyncio.sleep(0.1)
        finally:
            self._resuming = False


class ConnectionGate:
    """The AIMD limit on open connections (see the module), acting on a ``Listener``."""

    def __init__(
        self,
        ceiling: int,
        floor: int = MIN_FLOOR,
        window_s: float = 0.02,
        pressure: Callable[[float], bool] | None = None,
        queued: Callable[[], bool] | None = None,
    ) -> None:
        self.pressure = pressure  # now -> True while the oldest request in flight is past the bound
        self.queued = queued  # True while more than a batch per instance is in flight: a queue
        self.open: Callable[[], int] = lambda: 0  # connections open: the server sets it
        self.ceiling = ceiling
        self.floor = max(1, min(floor, ceiling))
        self.limit = float(ceiling)
        self.window_s = window_s
        self.listener: Listener | None = None
        self._last_cut = -1e9
        self._last_refusal = -1e9
        self.cuts = 0

    def overloaded(self, now: float | None = None, closing: int = 0) -> None:
        """A request was refused (its connection among the ``closing`` ones: they no longer count)."""
        t = time.perf_counter() if now is None else now
        self._last_refusal = t
        self._cut(t, closing)
        self.check()

    def _cut(self, now: float, closing: int = 0) -> None:
        """Within ``RECENT_S`` of a refusal, to ``BETA`` times the connections open; otherwise (pressure
        alone) to ``BETA`` times the limit: a delay signal at light load must not refuse the clients
        not yet connected."""
        if now - self._last_cut >= self.window_s:
            overloaded = now - self._last_refusal < RECENT_S
            base = min(self.limit, float(self.open() - closing)) if overloaded else self.limit
            self.limit = max(float(self.floor), base * BETA)
            self._last_cut = now
            self.cuts += 1

    def served(self, now: float | None = None) -> None:
        """An infer request was answered 200 (REST or gRPC; health probes and metrics do not count)."""
        t = time.perf_counter() if now is None else now
        queue = self.queued is None or self.queued()
        if self.pressure is not None and queue and self.pressure(t):
            self._cut(t)
        elif self.limit < self.ceiling:  # no queue: the server has capacity to spare, grow fast
            self.limit = min(float(self.ceiling), self.limit + (1.0 / self.limit if queue else 1.0))
        self.check()

    def check(self) -> None:
        """Close the listener at the limit, open it below."""
        lst = self.listener
        if lst is None:
            return
        if self.open() >= self.limit:
            lst.pause()
        elif lst.paused:
            lst.resume()
