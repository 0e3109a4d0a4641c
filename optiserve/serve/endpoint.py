"""One served model, front-end neutral: the seam the REST (``app.py``) and gRPC front ends share.

A ``ServedModel`` owns the batcher (one runtime session per instance), the
admission control, the statistics and the model's descriptions (OIP metadata,
Triton's JSON model config). A front end calls, per request:

1. ``admit(nbytes)`` *before reading the body*: a ``Ticket`` or ``Overloaded``
   at once (answer 503 / UNAVAILABLE without parsing). It bounds the requests
   in flight (reading, parsing, queued, running: at most ``max_queue`` plus one
   full batch per instance), the body bytes held and the queue's standing time,
   so overload costs a refusal, never memory or parsing time that starves the batcher;
   ``ticket.queued()`` once the body is in: from then on it counts as waiting
   (``admission.py``: a queue that stands too long refuses new requests);
2. ``await infer(tensors, rows, arrived, ticket)``: through the batcher, counted in the
   statistics; raises ``Overloaded`` (queue full) or ``InferenceFailed``;
3. ``ticket.release()`` (or ``with ticket:``) when the response is written, and
   ``count(status, seconds)``: the metrics hook both front ends share.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optiserve.models.graph import InputSpec
from optiserve.models.layout import probe_output_axes
from optiserve.serve.admission import EWMA, Admission, Overloaded, Ticket
from optiserve.serve.batcher import BatchRecord, DynamicBatcher, QueueFull, Run
from optiserve.serve.protocol import Tensor, model_metadata, oip_datatype
from optiserve.serve.stats import ModelStats
from optiserve.types import InputLayout

__all__ = ["Admission", "InferenceFailed", "Overloaded", "ServeConfig", "ServedModel", "Ticket"]

VERSION = "1"


@dataclass(frozen=True)
class ServeConfig:
    name: str
    max_batch: int = 8
    max_delay_ms: float = 2.0
    instances: int = 1
    max_queue: int = 256
    max_body_bytes: int = 64 * 2**20
    preferred: tuple[int, ...] = ()
    max_inflight_bytes: int = 256 * 2**20  # bodies held at once (reading, parsed, queued)
    body_timeout_s: float = 30.0  # a body must arrive whole within this after its headers
    threads: int = 1
    runtime: str = "onnxruntime-cpu"
    max_wait_ms: float | None = None  # refuse once the queue stands this long (None: follows the batch time)


class InferenceFailed(Exception):
    """The runtime raised: the server's fault (500)."""


class ServedModel:
    """The model behind every route: see the module docstring for the calling sequence."""

    def __init__(
        self,
        runs: Run | Sequence[Run],
        inputs: Sequence[InputSpec],
        output_names: Sequence[str],
        config: ServeConfig,
        warmup_feeds: Callable[[int], dict[str, np.ndarray]],
        layout: InputLayout | None = None,
        on_batch: Callable[[int, float], None] | None = None,
        describe_runtime: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.runs: list[Run] = [runs] if callable(runs) else list(runs)
        self.name, self.version = config.name, VERSION
        self.inputs, self.output_names = list(inputs), list(output_names)
        self.config, self.layout = config, layout
        self._warmup_feeds = warmup_feeds
        self.stats = ModelStats(config.name, VERSION)
        self.admission = Admission(
            config.max_queue + config.instances * config.max_batch,
            config.max_inflight_bytes,
            config.max_wait_ms / 1e3 if config.max_wait_ms is not None else None,
            config.max_delay_ms / 1e3,
        )
        self.counter: Callable[[int, float, float | None], None] | None = None  # the front ends' metrics hook
        self.observe_inputs: Callable[[Sequence[Tensor]], None] | None = None  # input drift (serve/drift.py)
        self.ready = False
        self.warm = asyncio.Event()  # set once ready: what the gRPC health service waits for
        self.outputs: list[tuple[str, str, list[int]]] = []  # name, dtype, shape with -1 on the batch axis
        self._on_batch = on_batch
        self._describe_runtime = describe_runtime  # openvino: infer requests, streams, peak overlap
        self.batcher: DynamicBatcher | None = None
        self.row_s = 0.0  # compute seconds per row of the recent batches (warm-up's largest batch first)

    def _observe(self, rec: BatchRecord) -> None:
        self.stats.batch(rec)
        if not rec.failed:
            self.admission.observe(rec.compute_s)
            if rec.rows:
                self._row(rec.compute_s / rec.rows)

    def _row(self, seconds: float) -> None:
        self.row_s = seconds if self.row_s == 0.0 else self.row_s + EWMA * (seconds - self.row_s)

    def count(self, status: int, seconds: float, frontend_s: float | None = None) -> None:
        """One answered infer request, whichever front end answered it (HTTP status; gRPC maps to it)."""
        if self.counter is not None:
            self.counter(status, seconds, frontend_s)

    async def start(self) -> None:
        """Warm every batch size on every session, learn each output's batch axis, start batching."""
        cfg, layout = self.config, self.layout
        self.batcher = DynamicBatcher(
            self.runs,
            [i.name for i in self.inputs],
            cfg.max_batch,
            cfg.max_delay_ms / 1e3,
            cfg.instances,
            cfg.max_queue,
            cfg.preferred,
            self._on_batch,
            input_axes={t.name: t.batch_axis for t in layout.inputs} if layout is not None else None,
            observer=self._observe,
        )
        loop = asyncio.get_running_loop()
        shapes: dict[int, list[tuple[int, ...]]] = {}
        outs: list[np.ndarray] = []
        sizes = [layout.fixed_batch] if layout is not None and layout.fixed_batch else range(1, cfg.max_batch + 1)
        for run in self.runs:
            for b in sizes:  # warm every batch size before saying ready
                for _ in range(2):
                    t0 = time.perf_counter()
                    outs = await loop.run_in_executor(None, run, self._warmup_feeds(b))
                shapes[b] = [tuple(o.shape) for o in outs]
        if shapes:  # the speed the first requests meet: the warm second call of the largest batch
            self._row((time.perf_counter() - t0) / max(shapes))
        if 1 in shapes and 2 in shapes:  # the axis each output grows along, seen for real
            axes = [a for _, a in probe_output_axes(self.output_names, shapes[1], shapes[2])]
        elif layout is not None:
            axes = [layout.output_axis(n) for n in self.output_names]
        else:
            axes = [0] * len(self.output_names)
        self.batcher.set_output_axes(axes)
        self.output_axes = axes
        self.outputs = [
            (n, o.dtype.name, [-1 if i == a else d for i, d in enumerate(o.shape)])
            for n, o, a in zip(self.output_names, outs, axes, strict=True)
        ]
        self.batcher.start()
        gc.collect()
        gc.freeze()  # model and runtime objects out of the collector's way: shorter pauses under load
        self.ready = True
        self.warm.set()

    async def stop(self) -> None:
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()

    @property
    def depth(self) -> int:
        return self.batcher.depth if self.batcher is not None else 0

    def admit(self, nbytes: int = 0) -> Ticket:
        return self.admission.admit(nbytes)

    async def infer(
        self, tensors: Sequence[Tensor], rows: int, arrived: float | None = None, ticket: Ticket | None = None
    ) -> list[np.ndarray]:
        """The outputs, in ``output_names`` order, of ``tensors`` run through the batcher
        (``ticket`` stops counting as waiting when its batch starts)."""
        assert self.batcher is not None and self.ready, "infer() before start()"
        t0 = arrived if arrived is not None else time.perf_counter()
        try:
            on_start, on_ran = (ticket.started, ticket.ran) if ticket is not None else (None, None)
            outs = await self.batcher.submit({t.name: t.array for t in tensors}, rows, on_start, on_ran)
        except QueueFull as exc:
            raise Overloaded(str(exc)) from None
        except Exception as exc:
            self.stats.request(False, time.perf_counter() - t0)
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise InferenceFailed(f"inference failed: {type(exc).__name__}: {first}") from exc
        if self.observe_inputs is not None:  # after the answer is computed: both front ends, decoded inputs
            self.observe_inputs(tensors)
        return outs

    def metadata(self) -> dict[str, Any]:
        meta = model_metadata(self.name, self.inputs, self.outputs, self.layout)
        if self.batcher is not None:
            meta.setdefault("parameters", {}).update(self.batcher.describe())
        if self._describe_runtime is not None:
            meta.setdefault("parameters", {}).update(self._describe_runtime())
        return meta

    def triton_batches(self) -> bool:
        """As ``emit``'s rule: Triton batches only a model batched on axis 0 everywhere."""
        lay = self.layout
        if lay is not None and (lay.fixed_batch is not None or any(t.batch_axis != 0 for t in lay.inputs)):
            return False
        return all(a == 0 for a in getattr(self, "output_axes", [0]))

    def model_config(self) -> dict[str, Any]:
        """Triton's model configuration in its JSON form, as ``emit`` writes it to ``config.pbtxt``."""
        batching = self.triton_batches()
        cfg = self.config

        def tensor(name: str, dtype: str, dims: Sequence[int | str | None]) -> dict[str, Any]:
            full = [d if isinstance(d, int) and d >= 0 else -1 for d in dims]
            shown = full[1:] if batching else full
            oip = oip_datatype(dtype)
            t: dict[str, Any] = {"name": name, "data_type": f"TYPE_{'STRING' if oip == 'BYTES' else oip}"}
            t["dims"] = shown or [1]
            if not shown:
                t["reshape"] = {"shape": []}
            return t

        openvino = cfg.runtime == "openvino"  # as emit writes it: the openvino backend, one stream per instance
        doc: dict[str, Any] = {
            "name": self.name,
            **({"backend": "openvino"} if openvino else {"platform": "onnxruntime_onnx", "backend": "onnxruntime"}),
            "version_policy": {"latest": {"num_versions": 1}},
            "max_batch_size": cfg.max_batch if batching else 0,
            "input": [tensor(i.name, i.dtype, i.dims) for i in self.inputs],
            "output": [tensor(n, dt, shape) for n, dt, shape in self.outputs],
            "instance_group": [
                {
                    "name": f"{self.name}_0",
                    "kind": "KIND_CPU" if cfg.runtime.endswith("-cpu") else "KIND_GPU",
                    "count": cfg.instances,
                }
            ],
            "parameters": {
                "intra_op_thread_count": {"string_value": str(cfg.threads)},
                "inter_op_thread_count": {"string_value": "1"},
            },
        }
        if openvino:
            doc["parameters"] = {
                "PERFORMANCE_HINT": {"string_value": "LATENCY"},
                "NUM_STREAMS": {"string_value": "1"},
                "INFERENCE_NUM_THREADS": {"string_value": str(cfg.threads)},
            }
        if batching:
            doc["dynamic_batching"] = {
                "preferred_batch_size": list(cfg.preferred or (cfg.max_batch,)),
                "max_queue_delay_microseconds": round(cfg.max_delay_ms * 1000),
            }
        return doc

    def statistics(self) -> dict[str, Any]:
        return self.stats.json()
