"""Server-side dynamic batching with the simulator's policy.

One batch is formed at a time (a lock), by whichever instance is free: it takes
the oldest waiting request, then waits until ``target`` rows are gathered or
the oldest has waited ``max_delay`` — whichever comes first — and tops up with
whatever is already waiting, up to ``max_batch`` rows. Each of the ``instances``
is a thread of its own that forms its batch, runs it (ONNX Runtime releases the
GIL) and hands the answers to the event loop in one callback, so the runtime
never waits for the loop to come round; thread ``i`` calls ``run[i]`` when given
one callable per instance (one runtime session each, as Triton's instance
groups), else the one shared callable. The queue is bounded: a full queue is the
caller's cue to answer 503. ``observer`` sees every executed batch (rows, each
request's queue wait, compute time, failure), on the event loop: what the
statistics endpoint reports.

Requests are stacked along each input's batch axis (not always axis 0: a state
``[2, batch, 128]`` stacks on axis 1) and only with requests they can share a
call with: the same sizes on every other dim and the same unbatched inputs
(scalars such as a sample rate). Outputs are split back along their own axis.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
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
    on_ran: Callable[[float], None] | None = field(default=None, repr=False)  # its batch's runtime call, seconds


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
        self._waiting: deque[Pending] = deque()
        self._arrived = threading.Condition(threading.Lock())  # guards _waiting and _stopping
        self._forming = threading.Lock()  # one batch formed at a time
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._carry: Pending | None = None  # taken off the queue but not fitting the last batch

    @property
    def depth(self) -> int:
        return len(self._waiting) + (1 if self._carry else 0)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(
                target=self._worker, args=(self._runs[i % len(self._runs)],), name=f"optiserve-infer-{i}", daemon=True
            )
            for i in range(self.instances)
        ]
        for t in self._threads:
            t.start()

    async def stop(self) -> None:
        with self._arrived:
            self._stopping = True
            self._arrived.notify_all()
        threads, self._threads = self._threads, []
        loop = asyncio.get_running_loop()
        for t in threads:  # a batch in its runtime call cannot be interrupted: wait a little, then leave it
            await loop.run_in_executor(None, t.join, 5.0)

    async def submit(
        self,
        feeds: dict[str, np.ndarray],
        rows: int,
        on_start: Callable[[], None] | None = None,
        on_ran: Callable[[float], None] | None = None,
    ) -> list[np.ndarray]:
        if self.depth >= self.max_queue:
            raise QueueFull(f"queue full ({self.max_queue} requests waiting)")
        fut: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        item = Pending(feeds, rows, time.perf_counter(), fut, self.group_of(feeds), on_start, on_ran)
        with self._arrived:
            self._waiting.append(item)
            self._arrived.notify()
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

    def _next(self, deadline: float | None) -> Pending | None:
        """The next waiting request, waiting for one until ``deadline`` (``None``: until one comes
        or the batcher stops; a past deadline: only one already waiting)."""
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        with self._arrived:
            while not self._waiting:
                if self._stopping:
                    return None
                if deadline is None:
                    self._arrived.wait()
                    continue
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                self._arrived.wait(left)
            return self._waiting.popleft()

    def _form(self) -> list[Pending] | None:
        with self._forming:
            first = self._next(None)
            if first is None:  # stopping
                return None
            batch, rows = [first], first.rows
            deadline = first.arrived + self.max_delay
            while rows < self.max_batch:
                item = self._next(deadline if rows < self.target and self.max_delay > 0 else 0.0)
                if item is None:
                    break
                if item.group != first.group or rows + item.rows > self.max_batch:
                    self._carry = item
                    break
                batch.append(item)
                rows += item.rows
            return batch

    def _worker(self, run: Run) -> None:
        """One instance: form a batch, run it, hand the parts to the event loop; on its own thread.

        Why not a task on the event loop that hands each batch to a thread pool: then every
        batch waits for the loop to come round to its task (to take the result, form the next
        batch and submit it) behind whatever requests the loop is parsing or answering, so the
        runtime sat idle while the loop worked and the two ran one after the other."""
        while True:
            batch = self._form()
            if batch is None:
                return
            batch = [p for p in batch if not p.future.cancelled()]
            if not batch:
                continue
            rows = sum(p.rows for p in batch)
            t0 = time.perf_counter()
            waits = tuple(t0 - p.arrived for p in batch)
            for p in batch:
                if p.on_start is not None:
                    p.on_start()
            try:
                feeds = self._stack(batch)
                t1 = time.perf_counter()
                outs = run(feeds)
                compute_s = time.perf_counter() - t1  # the runtime's own seconds: what admission's wait
                # bound, the gRPC call limit (row_s), Triton's compute time and optiserve_infer_seconds read
                parts = self._split(batch, outs)
            except Exception as exc:  # the runtime failed: fail these requests, keep serving
                self._post(self._fail, batch, exc, BatchRecord(rows, waits, time.perf_counter() - t0, True))
                continue
            self._post(self._deliver, batch, parts, BatchRecord(rows, waits, compute_s, False))

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for these any more
            self._loop.call_soon_threadsafe(fn, *args)

    def _deliver(self, batch: list[Pending], parts: list[list[np.ndarray]], rec: BatchRecord) -> None:
        """On the event loop: statistics first, then every request's answer."""
        if self._on_batch:
            self._on_batch(rec.rows, rec.compute_s)
        if self._observer:
            self._observer(rec)
        for p, part in zip(batch, parts, strict=True):
            if p.on_ran is not None:
                p.on_ran(rec.compute_s)
            if not p.future.done():
                p.future.set_result(part)

    def _fail(self, batch: list[Pending], exc: Exception, rec: BatchRecord) -> None:
        if self._observer:
            self._observer(rec)
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)

    def _split(self, batch: list[Pending], outs: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Each request's rows of every output: views along each output's batch axis, no copy."""
        axes = self._out_axes or [0] * len(outs)
        parts, at = [], 0
        for p in batch:
            parts.append(
                [
                    o if a is None or len(batch) == 1 else o[(slice(None),) * a + (slice(at, at + p.rows),)]
                    for o, a in zip(outs, axes, strict=False)
                ]
            )
            at += p.rows
        return parts

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
