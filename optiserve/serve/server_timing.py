"""The server's own time per request, as a W3C ``Server-Timing`` value (REST header, gRPC trailer).

Two metrics: ``infer`` (arrival to the response, ms) and ``queue`` (the request's wait in
the batcher queue: from its submission to the start of its batch). A client subtracts the
wait, which the queueing simulator adds itself, and keeps the rest of the server's time
per request, stalls included, in the latency spread ``profile --serving`` measures.
"""

from __future__ import annotations

import math


def header_value(total_s: float, queue_s: float) -> str:
    """``infer;dur=T, queue;dur=W`` in ms (the queue metric left out when the wait is unknown)."""
    value = f"infer;dur={total_s * 1e3:.3f}"
    if math.isfinite(queue_s):
        value += f", queue;dur={max(queue_s, 0.0) * 1e3:.3f}"
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
