"""A real uvicorn server on a free port in a background thread, configured (and looped) as ``optiserve serve``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import uvicorn

from optiserve.serve.server import ServerOptions, _AcceptErrors, run_loop, uvicorn_config


@contextmanager
def live_server(app: Any, opts: ServerOptions | None = None) -> Iterator[int]:
    """Yields the port once the app has warmed up; stops the server afterwards."""
    opts = replace(opts or ServerOptions(), port=0)
    server = uvicorn.Server(uvicorn_config(app, opts))

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(_AcceptErrors())
        await server.serve()

    thread = threading.Thread(target=run_loop, args=(main(), opts.loop), daemon=True)  # the loop serve runs on
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(15)
