"""Server-side dynamic batching with the simulator's policy.

One batch is formed at a time (a lock), by whichever instance is free: it takes
the oldest waiting request, then waits until ``target`` rows are gathered or
the oldest has waited ``max_delay`` — whichever comes first — and tops up with
whatever is already waiting, up to ``max_batch`` rows. The batch runs on a
thread pool of ``instances`` workers (ONNX Runtime releases the GIL); worker
``i`` calls ``run[i]`` when given one callable per instance (one runtime session
each, as Triton's instance groups), else the one shared callable. The queue
is bounded: a full queue is the caller's cue to answer 503. ``observer`` sees
every executed batch (rows, each request's queue wait, compute time, failure):
what the statistics endpoint reports.

Requests are stacked along each input's batch axis (not always axis 0: a state
``[2, batch, 128]`` stacks on axis 1) and only with requests they can share a
call with: the same sizes on every other dim and the same unbatched inputs
(scalars such as a sample rate). Outputs are split back along their own axis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Run = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


class QueueFull(Exception):
    pass


@dataclass
class Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    arrived: float
    future: asyncio.Future[list[np.ndarray]] = field(repr=False)
    group: bytes = b""  # requests batch together only within one group
    on_start: Callable[[], None] | None = field(default=None, repr=False)  # its batch began (admission's clock)


def _timed(run: Run, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], float]:
    """``run(feeds)`` and its own seconds, timed on the executor's thread.

    Why not around the ``await``: that also counts the wait for the event loop to resume the
    batcher, which is not the runtime's time and grows with the calls the loop is handling, so
    a burst would inflate every figure fed from it: admission's wait bound, the gRPC call limit
    (``row_s``), Triton statistics' compute time and ``optiserve_infer_seconds``."""
    t0 = time.perf_counter()
    outs = run(feeds)
    return outs, time.perf_counter() - t0


@dataclass(frozen=True)
class BatchRecord:
    rows: int
    queue_s: tuple[float, ...]  # per request: arrival to the start of its batch
    compute_s: float
    failed: bool


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    last_sizes: list[int] = field(default_factory=list)


class DynamicBatcher:
    def __init__(
        self,
        run: Run | Sequence[Run],
        input_names: Sequence[str],
        max_batch: int,
        max_delay_s: float,
        instances: int,
        max_queue: int,
        preferred: Sequence[int] = (),
        on_batch: Callable[[int, float], None] | None = None,
        input_axes: Mapping[str, int | None] | None = None,
        output_axes: Sequence[int | None] | None = None,
        observer: Callable[[BatchRecord], None] | None = None,
    ) -> None:
        self._runs: list[Run] = [run] if callable(run) else list(run)
        self._observer = observer
        self._names = list(input_names)
        self._in_axes: dict[str, int | None] = {n: 0 for n in self._names}
        self._in_axes.update(input_axes or {})
        self._out_axes = list(output_axes) if output_axes is not None else None
        self.max_batch = max_batch
        self.max_delay = max_delay_s
        self.target = max(preferred) if preferred else max_batch
        self.instances = instances
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._pool = ThreadPoolExecutor(max_workers=instances, thread_name_prefix="optiserve-infer")
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._forming = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._carry: Pending | None = None  # taken off the queue but not fitting the last batch

    @property
    def depth(self) -> int:
        return self._queue.qsize() + (1 if self._carry else 0)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(self._runs[i % len(self._runs)])) for i in range(self.instances)
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(
        self, feeds: dict[str, np.ndarray], rows: int, on_start: Callable[[], None] | None = None
    ) -> list[np.ndarray]:
        if self.depth >= self.max_queue:
            raise QueueFull(f"queue full ({self.max_queue} requests waiting)")
        fut: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Pending(feeds, rows, time.perf_counter(), fut, self.group_of(feeds), on_start))
        return await fut

    def group_of(self, feeds: Mapping[str, np.ndarray]) -> bytes:
        """What must be equal for two requests to share a call: every dim but the
        batch axis of batched inputs, and the whole of unbatched ones."""
        parts: list[bytes] = []
        for n in self._names:
            x = feeds[n]
            axis = self._in_axes.get(n)
            if axis is None:
                parts.append(repr((x.dtype.str, x.shape)).encode() + np.ascontiguousarray(x).tobytes())
            else:
                parts.append(repr(tuple(d for i, d in enumerate(x.shape) if i != axis)).encode())
        return b"|".join(parts)

    def set_output_axes(self, axes: Sequence[int | None]) -> None:
        self._out_axes = list(axes)

    async def _next(self, timeout: float | None) -> Pending | None:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait() if not self._queue.empty() else None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _form(self) -> list[Pending]:
        async with self._forming:
            first = await self._next(None)
            assert first is not None
            batch, rows = [first], first.rows
            deadline = first.arrived + self.max_delay
            while rows < self.max_batch:
                wait = deadline - time.perf_counter() if rows < self.target else 0.0
                item = await self._next(wait if self.max_delay > 0 else 0.0)
                if item is None:
                    break
                if item.group != first.group or rows + item.rows > self.max_batch:
                    self._carry = item
                    break
                batch.append(item)
                rows += item.rows
            return batch

    async def _worker(self, run: Run) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._form()
            batch = [p for p in batch if not p.future.cancelled()]
            if not batch:
                continue
            feeds = self._stack(batch)
            t0 = time.perf_counter()
            rows = sum(p.rows for p in batch)
            waits = tuple(t0 - p.arrived for p in batch)
            for p in batch:
                if p.on_start is not None:
                    p.on_start()
            try:
                outs, compute_s = await loop.run_in_executor(self._pool, _timed, run, feeds)
            except Exception as exc:  # the runtime failed: fail these requests, keep serving
                if self._observer:
                    self._observer(BatchRecord(rows, waits, time.perf_counter() - t0, True))
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            if self._on_batch:
                self._on_batch(rows, compute_s)
            if self._observer:
                self._observer(BatchRecord(rows, waits, compute_s, False))
            at = 0
            axes = self._out_axes or [0] * len(outs)
            for p in batch:
                part = [
                    o if a is None or len(batch) == 1 else o[(slice(None),) * a + (slice(at, at + p.rows),)]
                    for o, a in zip(outs, axes, strict=False)
                ]  # views along each output's batch axis, as the old axis-0 slices were: no copy per request
                at += p.rows
                if not p.future.done():
                    p.future.set_result(part)

    def _stack(self, batch: list[Pending]) -> dict[str, np.ndarray]:
        if len(batch) == 1:
            return batch[0].feeds
        out: dict[str, np.ndarray] = {}
        for n in self._names:
            axis = self._in_axes.get(n)
            out[n] = batch[0].feeds[n] if axis is None else np.concatenate([p.feeds[n] for p in batch], axis=axis)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "max_batch": self.max_batch,
            "max_delay_ms": self.max_delay * 1e3,
            "instances": self.instances,
            "max_queue": self.max_queue,
            "target": self.target,
        }
