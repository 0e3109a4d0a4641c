"""The serving path's own cost, measured through the real server (``profile --serving``).

The planner's pods are not bare sessions: every request also costs the server's
front end (HTTP, decoding this model's inputs, encoding its outputs as JSON) and a
fixed latency outside it (loopback, the client). Both are measured here, once per
profile, by starting ``optiserve serve`` on the model (fp32, batch 1, no batching
delay) and sending it one request at a time in each encoding a client uses:

- ``frontend_ms``: the server's own event-loop time per request, from its
  ``optiserve_frontend_seconds`` histogram (what shares the core with inference);
- ``fixed_ms``: the mean round trip minus that front end and the runtime's time
  per batch (``optiserve_batch_seconds``): what every request pays outside.

The planner and ``loadtest --predict-from`` feed both to the queueing simulator,
so a plan's p99 includes the server that gets deployed.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from optiserve._oip_client import free_port, stop_server
from optiserve._reasons import one_line
from optiserve.types import InputLayout

REQUESTS = 200  # per encoding; the front end's time per request is steady well before this


def _metric_sums(url: str) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("optiserve_frontend_seconds", "optiserve_batch_seconds"):
            for part in ("sum", "count"):
                if line.startswith(f"{name}_{part} "):
                    out[f"{name}_{part}"] = float(line.split()[1])
    return out


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


def _encodings(url: str, name: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    from optiserve._oip_client import payload_for

    return {"json": payload_for(url, name, binary=False), "binary": payload_for(url, name, binary=True)}


def measure_serving(
    model: Path, layout: InputLayout, threads: int = 1, requests: int = REQUESTS, custom_ops: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Per encoding: the front end's ms per request and the fixed ms outside the server.
    Never raises: a server that cannot start is recorded as ``{"error": ...}``."""
    from optiserve._oip_client import wait_until_ready

    port = free_port()
    args = [sys.executable, "-m", "optiserve", "serve", str(model), "--port", str(port), "--threads", str(threads)]
    args += ["--max-batch", "1", "--max-delay-ms", "0", "--name", "m"]
    for t in layout.inputs:
        item = [d for i, d in enumerate(t.shape) if i != t.batch_axis]
        if item:
            args += ["--shape", f"{t.name}={','.join(map(str, item))}"]
        args += ["--batch-axis", f"{t.name}={'none' if t.batch_axis is None else t.batch_axis}"]
    for lib in custom_ops:
        args += ["--custom-ops", lib]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if not wait_until_ready(url, 120) or server.poll() is not None:
            err = (server.stderr.read() if server.stderr and server.poll() is not None else "") or "not ready in 120 s"
            return {"error": f"the server did not start: {err.strip().splitlines()[-1] if err.strip() else err}"}
        out: dict[str, Any] = {"requests": requests, "threads": threads, "measured_with": "optiserve serve, loopback"}
        path = "/v2/models/m/infer"
        for enc, (body, headers) in _encodings(url, "m").items():
            _closed_loop(url, path, body, headers, min(20, requests))  # warm the connection and the caches
            before = _metric_sums(url)
            rtts = _closed_loop(url, path, body, headers, requests)
            after = _metric_sums(url)
            n = after["optiserve_frontend_seconds_count"] - before["optiserve_frontend_seconds_count"]
            front = (after["optiserve_frontend_seconds_sum"] - before["optiserve_frontend_seconds_sum"]) / n
            batches = after["optiserve_batch_seconds_count"] - before["optiserve_batch_seconds_count"]
            batch = (after["optiserve_batch_seconds_sum"] - before["optiserve_batch_seconds_sum"]) / max(batches, 1)
            rtt = sum(rtts) / len(rtts)
            out[enc] = {
                "frontend_ms": round(front * 1e3, 4),
                "fixed_ms": round(max(rtt - front - batch, 0.0) * 1e3, 4),
                "round_trip_ms": round(rtt * 1e3, 4),
                "inference_ms": round(batch * 1e3, 4),
                "request_bytes": len(body),
            }
        return out
    except Exception as exc:  # measuring the serving path must never lose the sweep already on disk
        return {"error": one_line(exc)}
    finally:
        stop_server(server)


def client_encoding(layout: InputLayout) -> str:
    """The encoding ``optiserve loadtest`` sends (binary past 4096 input elements)."""
    import math

    elements = sum(math.prod(t.shape) for t in layout.inputs)
    return "binary" if elements > 4096 else "json"


def serving_terms(meta: dict[str, Any], encoding: str | None = None) -> tuple[float, float] | None:
    """(frontend_s, fixed_s) from a profile's metadata, or None when it has no serving figures."""
    serving = meta.get("serving") or {}
    if not serving or "error" in serving:
        return None
    if encoding is None:
        layout = meta.get("layout")
        encoding = client_encoding(InputLayout.from_dict(layout)) if layout else "json"
    fig = serving.get(encoding) or serving.get("json")
    if not fig:
        return None
    return float(fig["frontend_ms"]) / 1e3, float(fig["fixed_ms"]) / 1e3


def describe(meta: dict[str, Any]) -> str | None:
    """One summary line for ``show``."""
    s = meta.get("serving")
    if not s:
        return None
    if "error" in s:
        return f"serving path not measured: {s['error']}"
    parts = [
        f"{enc} {s[enc]['frontend_ms']:.3g} ms front end + {s[enc]['fixed_ms']:.3g} ms fixed"
        for enc in ("json", "binary")
        if enc in s
    ]
    return "serving path (optiserve serve, per request): " + "; ".join(parts)
