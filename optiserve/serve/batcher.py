"""Server-side dynamic batching with the simulator's policy.

One batch is formed at a time (a lock), by whichever instance is free: it takes
the oldest waiting request, then waits until ``target`` rows are gathered or
the oldest has waited ``max_delay`` — whichever comes first — and tops up with
whatever is already waiting, up to ``max_batch`` rows. The batch runs on a
thread pool of ``instances`` workers (ONNX Runtime releases the GIL). The queue
is bounded: a full queue is the caller's cue to answer 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class QueueFull(Exception):
    pass


@dataclass
class Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    arrived: float
    future: asyncio.Future[list[np.ndarray]] = field(repr=False)


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    last_sizes: list[int] = field(default_factory=list)


class DynamicBatcher:
    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
        input_names: Sequence[str],
        max_batch: int,
        max_delay_s: float,
        instances: int,
        max_queue: int,
        preferred: Sequence[int] = (),
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._run = run
        self._names = list(input_names)
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
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.instances)]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, feeds: dict[str, np.ndarray], rows: int) -> list[np.ndarray]:
        if self.depth >= self.max_queue:
            raise QueueFull(f"queue full ({self.max_queue} requests waiting)")
        fut: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Pending(feeds, rows, time.perf_counter(), fut))
        return await fut

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
                if rows + item.rows > self.max_batch:
                    self._carry = item
                    break
                batch.append(item)
                rows += item.rows
            return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._form()
            batch = [p for p in batch if not p.future.cancelled()]
            if not batch:
                continue
            feeds = {n: np.concatenate([p.feeds[n] for p in batch]) for n in self._names}
            t0 = time.perf_counter()
            try:
                outs = await loop.run_in_executor(self._pool, self._run, feeds)
            except Exception as exc:  # the runtime failed: fail these requests, keep serving
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            rows = sum(p.rows for p in batch)
            if self._on_batch:
                self._on_batch(rows, time.perf_counter() - t0)
            at = 0
            for p in batch:
                part = [o[at : at + p.rows] for o in outs]
                at += p.rows
                if not p.future.done():
                    p.future.set_result(part)

    def describe(self) -> dict[str, Any]:
        return {
            "max_batch": self.max_batch,
            "max_delay_ms": self.max_delay * 1e3,
            "instances": self.instances,
            "max_queue": self.max_queue,
            "target": self.target,
        }
