"""The server's own time per request, as a W3C ``Server-Timing`` value (REST header, gRPC trailer).

Three metrics: ``infer`` (arrival to the response, ms), ``queue`` (the request's wait in
the batcher queue: from its submission to the start of its batch) and ``call`` (its batch's
runtime call). ``profile --serving`` takes the wait off (the queueing simulator adds its
own), spreads the simulated calls as the served calls spread (a stall in a call delays the
requests behind it), and keeps the rest per request in the fixed term's spread.
"""

from __future__ import annotations

import math


def header_value(total_s: float, queue_s: float, call_s: float = math.nan) -> str:
    """``infer;dur=T, queue;dur=W, call;dur=C`` in ms (a metric left out when it is unknown)."""
    value = f"infer;dur={total_s * 1e3:.3f}"
    for name, seconds in (("queue", queue_s), ("call", call_s)):
        if math.isfinite(seconds):
            value += f", {name};dur={max(seconds, 0.0) * 1e3:.3f}"
    return value


def metric_ms(header: str | None, name: str = "infer") -> float:
    """The ``dur`` of metric ``name`` in a ``Server-Timing`` value, in ms; NaN when absent or
    malformed (another server, or none sent): a load test never fails on it. A value whose
    one metric has another name is read as ``infer`` (a server that names it differently)."""
    if not header:
        return math.nan
    metrics = [m.strip() for m in header.split(",") if m.strip()]
    for i, metric in enumerate(metrics):
        key, *params = (p.strip() for p in metric.split(";"))
        if key != name and not (name == "infer" and len(metrics) == 1 and i == 0):
            continue
        for param in params:
            k, _, v = param.partition("=")
            if k.strip() == "dur":
                try:
                    return float(v)
                except ValueError:
                    return math.nan
        return math.nan
    return math.nan
