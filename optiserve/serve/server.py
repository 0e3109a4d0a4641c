"""The uvicorn process around the app: TLS, timeouts, connection limits, descriptor exhaustion.

uvicorn times out idle keep-alive connections (``timeout_keep_alive``) but not
a fresh connection that never sends, nor headers that never finish: its
httptools protocol is subclassed here to close a connection whose request line
and headers take longer than ``header_timeout_s`` (slowloris), and to refuse
(close at once) connections past ``max_connections``, which is kept below the
descriptor limit so ``accept()`` never meets EMFILE; should it anyway, the
loop's handler logs one line per 10 s instead of a traceback per attempt. Body
timeouts are the app's (``ServeConfig.body_timeout_s``: a 408 it can count).

Overload is shed here, from the headers: when the app's ``shed(scope)`` says the
model would refuse the request, its 503 is written straight to the transport: no
ASGI task, no scope copied, the body skipped by the parser (a large one is not
read at all: the 503 says ``Connection: close``, the write side is shut and what
still arrives is dropped until the client closes: nginx's lingering close, so
the client reads its 503 instead of a reset). A 503 that way costs a fraction of
a 200, which is what keeps goodput near capacity under several times its load.
Under overload the 503 always closes its connection and ``gate.py``'s AIMD
limit closes the listening socket while the connections open reach it: the
excess is then refused by the kernel, at no cost to the loop. ``health_port``
adds a listener that is never closed, for the orchestrator's probes.
The loop is uvloop when installed (``loop="auto"``): still one process, one loop.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from optiserve.errors import UsageError
from optiserve.serve.gate import MIN_FLOOR, ConnectionGate, Listener

log = logging.getLogger("optiserve.serve")
DESCRIPTOR_MARGIN = 64  # descriptors kept for model files, logs, the runtime
LINGER_S = 2.0  # after a large body's 503: drop what still arrives this long, then close
Shed = Callable[[dict[str, Any]], "tuple[bytes, bool] | None"]


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # mTLS: clients must present a certificate this CA signed
    keep_alive_s: float = 5.0
    header_timeout_s: float = 10.0
    max_connections: int = 1024
    backlog: int = 2048
    loop: str = "auto"  # "auto": uvloop when installed; "asyncio"
    health_port: int | None = None  # a second listener the overload gate never closes (probes)

    def check(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
        for p in (self.tls_cert, self.tls_key, self.tls_client_ca):
            if p is not None and not Path(p).is_file():
                raise UsageError(f"TLS file not found: {p}")
        if min(self.keep_alive_s, self.header_timeout_s) <= 0 or self.max_connections < 1:
            raise UsageError("timeouts must be > 0 and --max-connections >= 1")
        if self.health_port is not None and (self.health_port == self.port != 0 or not 0 <= self.health_port < 65536):
            raise UsageError(f"--health-port {self.health_port}: a free port other than --port")
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise UsageError(f"unknown event loop {self.loop!r}: auto, asyncio or uvloop")


def connection_budget(wanted: int) -> int:
    """``wanted`` connections, fewer if the descriptor limit (raised to its hard cap first) is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, int(soft) - DESCRIPTOR_MARGIN))


class _Shed:
    """The cycle of a request answered from its headers: complete, so uvicorn skips its body."""

    __slots__ = ("keep_alive",)
    response_complete = True
    disconnected = False

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive

    @property
    def message_event(self) -> _Shed:
        return self

    def set(self) -> None:  # uvicorn sets the cycle's event when the connection goes
        pass


def guarded_protocol(
    header_timeout_s: float, max_connections: int, shed: Shed | None = None, gate: ConnectionGate | None = None
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header deadline, a connection cap, ``shed`` and the overload
    ``gate`` (see the module)."""

    class Guarded(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _discard = False

        def _arm(self, seconds: float = header_timeout_s) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self.transport.close()  # headers never came: nothing was asked, nothing to answer

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.abort()  # refused: cheaper than a 503 and never nearer the descriptor limit
                return
            self._arm()
            if gate is not None:
                gate.check()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)
            if gate is not None:
                gate.check()

        def data_received(self, data: bytes) -> None:
            if not self._discard:  # lingering after a large body's 503: dropped unparsed
                super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            if shed is not None and (self.cycle is None or self.cycle.response_complete) and self._shed(shed):
                return
            super().on_headers_complete()

        def _shed(self, judge: Shed) -> bool:
            scope: Any = self.scope
            path = httptools.parse_url(self.url).path.decode("ascii")
            scope["method"] = self.parser.get_method().decode("ascii")
            scope["path"] = urllib.parse.unquote(path) if "%" in path else path
            answer = judge(scope)
            if answer is None:
                return False
            response, close = answer
            close = close or not self.parser.should_keep_alive()
            if gate is not None:  # before the 503 is written: the client sees a closed listener after it
                gate.overloaded(closing=int(close))
            self.transport.write(response)
            self.cycle = _Shed(not close)  # type: ignore[assignment]
            if close:
                self._discard = True
                if self.transport.can_write_eof():
                    self.transport.write_eof()  # the 503, then FIN: the client reads it and closes
                self._arm(LINGER_S)
            else:
                self._arm()  # the rest of the body must come within the header deadline
            return True

        def on_message_complete(self) -> None:
            if isinstance(self.cycle, _Shed):
                self.on_response_complete()  # its body skipped: the connection is idle now
                return
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # arms uvicorn's keep-alive timer for the idle wait
            self._disarm()

    return Guarded


class _AcceptErrors:
    """The loop's exception handler: accept() failures summed into one line per 10 s."""

    def __init__(self) -> None:
        self.last = 0.0
        self.count = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "accept" not in message and "Too many open files" not in str(context.get("exception", "")):
            loop.default_exception_handler(context)
            return
        self.count += 1
        now = time.monotonic()
        if now - self.last >= 10:
            log.warning("refusing connections: %s (%d times since the last report)", message, self.count)
            self.last, self.count = now, 0


def uvicorn_config(app: Any, opts: ServerOptions, gate: ConnectionGate | None = None) -> uvicorn.Config:
    opts.check()
    limit = connection_budget(opts.max_connections)
    tls: dict[str, Any] = {"timeout_keep_alive": opts.keep_alive_s}  # a float works: it feeds call_later
    if opts.tls_cert is not None:
        tls = {"ssl_certfile": str(opts.tls_cert), "ssl_keyfile": str(opts.tls_key)}
        if opts.tls_client_ca is not None:
            tls.update(ssl_ca_certs=str(opts.tls_client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return uvicorn.Config(
        app,
        host=opts.host,
        port=opts.port,
        http=guarded_protocol(opts.header_timeout_s, limit, getattr(app, "shed", None), gate),
        loop="asyncio",
        backlog=opts.backlog,
        log_level="warning",
        access_log=False,
        **tls,
    )


@dataclass
class Running:
    """A configured server, its listening sockets (main first, then the health port's) and its gate."""

    server: uvicorn.Server
    sockets: list[Any]
    gate: ConnectionGate

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    async def serve(self) -> None:
        asyncio.get_running_loop().set_exception_handler(_AcceptErrors())
        self.gate.listener = Listener(self.server, self.server.config.backlog, self.port)
        state = self.server.server_state
        self.gate.open = lambda: len(state.connections)
        await self.server.serve(sockets=self.sockets)


def build_server(app: Any, opts: ServerOptions) -> Running:
    """uvicorn around ``app`` with the overload gate; the sockets are bound here (port 0: a free one)."""
    floor = int(getattr(app, "min_connections", 0)) or MIN_FLOOR
    gate = ConnectionGate(
        connection_budget(opts.max_connections),
        floor,
        pressure=getattr(app, "pressure", None),
        queued=getattr(app, "queued", None),
    )
    if hasattr(app, "watch_gate"):
        app.watch_gate(gate)
    config = uvicorn_config(app, opts, gate)
    sockets = [_bind(opts.host, opts.port, opts.backlog)]
    if opts.health_port is not None:
        sockets.append(_bind(opts.host, opts.health_port, opts.backlog))
    return Running(uvicorn.Server(config), sockets, gate)


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def run_loop(main: Coroutine[Any, Any, None], loop: str = "auto") -> None:
    """``asyncio.run(main)`` on uvloop when asked or, for ``auto``, when installed."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop != "asyncio":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            if loop == "uvloop":
                raise UsageError("--loop uvloop: uvloop is not installed") from None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def serve_forever(app: Any, opts: ServerOptions) -> None:
    """Run until interrupted (what ``optiserve serve`` does after loading the model)."""
    running = build_server(app, opts)
    run_loop(running.serve(), opts.loop)
