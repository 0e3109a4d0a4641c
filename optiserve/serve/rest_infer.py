"""``POST /v2/models/{m}[/versions/1]/infer`` as a raw ASGI handler: admission first, then the body.

Why raw ASGI and not a Starlette route: the refusal path must cost almost
nothing (no Request object, no routing, a response encoded once), and the body
is read into one buffer sized from ``Content-Length`` (no quadratic ``+=``;
binary tensors are views of it). Most refusals never get here: the connection
protocol sheds them from the headers (``server.py``, ``Front.shed``).

Parsing and encoding run on the event loop, not a side thread: orjson holds the
GIL for the whole parse, so a side thread only made the loop wait a switch
interval (5 ms) at every socket call while it parsed, and 503s took seconds. A
large body waits for the parse gate (one at a time, I/O polled before each), so
back-to-back 1.5 MB parses never hold the loop for more than one parse.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from optiserve.serve.endpoint import InferenceFailed, Overloaded, ServedModel, Ticket
from optiserve.serve.protocol import (
    InferRequest,
    RequestError,
    compress,
    decompress,
    dumps,
    encode_response,
    parse_request,
    select_outputs,
)
from optiserve.serve.server_timing import header_value

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

BIG_BYTES = 64 * 1024  # past this, parse and encode wait for the gate (one at a time, I/O polled first)
_JSON = (b"content-type", b"application/json")


class ClientGone(Exception):
    pass


async def send_json(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())] + (extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, status: int, message: str) -> None:
    extra = [(b"retry-after", b"1")] if status == 503 else None
    await send_json(send, status, dumps({"error": message}), extra)


async def read_body(receive: Receive, length: int | None, limit: int, ticket: Ticket, timeout: float) -> bytearray:
    """The whole body within ``timeout`` (408), at most ``limit`` bytes (413); chunked bodies
    reserve their bytes as they come (503 past the in-flight budget)."""
    buf = bytearray(length) if length is not None else bytearray()
    at = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise ClientGone
                chunk = msg.get("body", b"")
                if chunk:
                    end = at + len(chunk)
                    if end > limit:
                        raise RequestError(413, f"body exceeds the limit of {limit} bytes")
                    if length is None:
                        ticket.grow(len(chunk))
                        buf += chunk
                    elif end > length:
                        raise RequestError(400, f"body longer than its Content-Length {length}")
                    else:
                        buf[at:end] = chunk
                    at = end
                if not msg.get("more_body", False):
                    break
    except TimeoutError:
        raise RequestError(408, f"body not received within {timeout:g} s") from None
    if length is not None and at != length:
        raise RequestError(400, f"body of {at} bytes, Content-Length said {length}")
    return buf


class InferHandler:
    """Serves infer requests for one model; one instance per app."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self._gate = asyncio.Lock()

    def close(self) -> None:
        pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.perf_counter()
        status, frontend = 200, None
        try:
            status, frontend = await self._serve(scope, receive, send, arrived)
        except ClientGone:
            status = 499  # nginx's number for a client that left: counted, nothing sent
        except RequestError as exc:
            status = exc.status
            await send_error(send, status, str(exc))
        except Overloaded as exc:
            status = 503
            await send_error(send, 503, f"overloaded: {exc}; retry later")
        except InferenceFailed as exc:
            status = 500
            await send_error(send, 500, str(exc))
        self.model.count(status, time.perf_counter() - arrived, frontend)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, arrived: float) -> tuple[int, float]:
        """(200, front-end seconds: reading, parsing, encoding); errors raise."""
        model, cfg = self.model, self.model.config
        if not model.ready:
            raise RequestError(503, "model is warming up")
        headers = dict(scope["headers"])
        raw_length = headers.get(b"content-length")
        length = None
        if raw_length is not None:
            if not raw_length.isdigit():
                raise RequestError(400, f"malformed Content-Length {raw_length.decode(errors='replace')!r}")
            length = int(raw_length)
            if length > cfg.max_body_bytes:
                raise RequestError(413, f"body of {length} bytes exceeds the limit of {cfg.max_body_bytes}")
        header = headers.get(b"inference-header-content-length")
        if header is not None and not header.isdigit():
            raise RequestError(400, f"Inference-Header-Content-Length must be a byte count, got {header.decode()!r}")
        with model.admit(length or 0) as ticket:  # Overloaded: refused before a byte of the body is read
            body = await read_body(receive, length, cfg.max_body_bytes, ticket, cfg.body_timeout_s)
            ticket.queued()
            encoding = headers.get(b"content-encoding")
            big = len(body) > BIG_BYTES
            req = await self._gated(big, self._decode, body, encoding, int(header) if header is not None else None)
            parsed = time.perf_counter()
            outs = await model.infer(req.tensors, req.rows, arrived, ticket)
            done = time.perf_counter()
            selected = select_outputs(list(zip(model.output_names, outs, strict=True)), req.outputs, req.binary_output)
            big = sum(a.nbytes for _, a, _ in selected) > BIG_BYTES
            accept = headers.get(b"accept-encoding")
            payload, extra = await self._gated(big, self._encode, req, selected, accept)
            # W3C Server-Timing: the server's own time for this request and its wait in the batcher
            # queue (ms), so a client can tell its side of the latency from the server's, and the
            # server's queueing from the rest of its time, one request at a time (profile --serving does)
            timing = header_value(time.perf_counter() - arrived, ticket.started_at - parsed, ticket.call_s)
            extra.append((b"server-timing", timing.encode()))
            await send_json(send, 200, payload, extra)
        end = time.perf_counter()
        model.stats.request(True, end - arrived, parsed - arrived, end - done)
        return 200, (parsed - arrived) + (end - done)

    async def _gated(self, big: bool, fn: Callable[..., Any], *args: Any) -> Any:
        if not big:
            return fn(*args)
        async with self._gate:
            await asyncio.sleep(0)  # the loop polls I/O (503s, finished batches) before each big parse
            return fn(*args)

    def _decode(self, body: bytearray, encoding: bytes | None, header_length: int | None) -> InferRequest:
        m = self.model
        data: bytes | bytearray = body
        if encoding is not None:
            data = decompress(bytes(body), encoding.decode("latin-1"), m.config.max_body_bytes)
        return parse_request(data, m.inputs, m.config.max_batch, header_length, m.layout)

    def _encode(
        self, req: InferRequest, selected: list[Any], accept: bytes | None
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        payload, header_length = encode_response(self.model.name, req.id, selected, self.model.version)
        extra: list[tuple[bytes, bytes]] = []
        if header_length is not None:
            extra.append((b"inference-header-content-length", str(header_length).encode()))
        if accept is not None:
            payload, enc = compress(payload, accept.decode("latin-1"))
            if enc is not None:
                extra.append((b"content-encoding", enc.encode()))
        return payload, extra
