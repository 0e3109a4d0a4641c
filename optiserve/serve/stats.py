"""Per-model inference statistics in the shape of Triton's statistics extension.

``GET /v2/models/{m}/stats`` answers what ``tritonclient``'s
``get_inference_statistics`` and ``perf_analyzer`` read: per request
(success, fail, queue, compute_input = parsing, compute_infer = the batch it ran
in, compute_output = encoding), per executed batch size, counts and nanoseconds.
Updated from the event loop and, for the gRPC front end, from its own: a lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from optiserve.serve.batcher import BatchRecord


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, n: int = 1) -> None:
        self.count += n
        self.ns += int(seconds * 1e9)

    def json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class _BatchSize:
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)


class ModelStats:
    """Counters for one model version; ``json()`` is one entry of Triton's ``model_stats``."""

    STAGES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")

    def __init__(self, name: str, version: str = "1") -> None:
        self.name, self.version = name, version
        self._lock = threading.Lock()
        self._stages = {s: _Duration() for s in self.STAGES}
        self._batches: dict[int, _BatchSize] = {}
        self._unclaimed: deque[tuple[float, float]] = deque(maxlen=65536)  # (queue, compute) of batched requests
        self.inference_count = 0  # rows inferred
        self.execution_count = 0  # batches executed
        self.last_inference_ms = 0

    def batch(self, rec: BatchRecord) -> None:
        """An executed batch: its compute time counts once per size and once per request in it."""
        with self._lock:
            if rec.failed:
                return
            self.execution_count += 1
            self.inference_count += rec.rows
            self.last_inference_ms = int(time.time() * 1e3)
            self._batches.setdefault(rec.rows, _BatchSize()).compute_infer.add(rec.compute_s)
            # per request, queue and compute_infer count when the request finishes, with its other
            # stages: a snapshot between the batch and the response must see equal counts per stage
            # (perf_analyzer aborts otherwise: "Server side statistics compute counts must be the same")
            self._unclaimed.extend((wait, rec.compute_s) for wait in rec.queue_s)

    def request(self, ok: bool, total_s: float, parse_s: float = 0.0, encode_s: float = 0.0) -> None:
        """A finished request that reached the model (refusals before it are not Triton's failures either)."""
        with self._lock:
            self._stages["success" if ok else "fail"].add(total_s)
            if ok:
                self._stages["compute_input"].add(parse_s)
                self._stages["compute_output"].add(encode_s)
                wait, compute = self._unclaimed.popleft() if self._unclaimed else (0.0, 0.0)
                self._stages["queue"].add(wait)
                self._stages["compute_infer"].add(compute)

    def json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "version": self.version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {s: d.json() for s, d in self._stages.items()},
                "response_stats": {},
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": b.compute_input.json(),
                        "compute_infer": b.compute_infer.json(),
                        "compute_output": b.compute_output.json(),
                    }
                    for size, b in sorted(self._batches.items())
                ],
                "memory_usage": [],
            }
