"""A real uvicorn server on a free port in a background thread, configured (and looped) as ``optiserve serve``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from optiserve.serve.server import ServerOptions, build_server, run_loop


@contextmanager
def live_server(app: Any, opts: ServerOptions | None = None) -> Iterator[int]:
    """Yields the port once the app has warmed up; stops the server afterwards."""
    opts = replace(opts or ServerOptions(), port=0)
    running = build_server(app, opts)
    server = running.server
    thread = threading.Thread(target=run_loop, args=(running.serve(), opts.loop), daemon=True)  # as serve runs
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    port = running.port
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(15)
