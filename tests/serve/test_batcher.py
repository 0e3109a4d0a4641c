"""The batcher's policy matches the simulator's, on a fake runtime that records batches."""

from __future__ import annotations

import asyncio

import numpy as np

from optiserve.serve.batcher import DynamicBatcher


def _run_case(arrivals_ms: list[float], max_batch: int, max_delay_ms: float, service_ms: float = 20) -> list[int]:
    sizes: list[int] = []

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import time

        sizes.append(len(feeds["x"]))
        time.sleep(service_ms / 1e3)
        return [feeds["x"]]

    async def main() -> None:
        b = DynamicBatcher(run, ["x"], max_batch, max_delay_ms / 1e3, instances=1, max_queue=100)
        b.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks = []
        for i, a in enumerate(arrivals_ms):
            await asyncio.sleep(max(0.0, t0 + a / 1e3 - loop.time()))
            tasks.append(asyncio.create_task(b.submit({"x": np.full((1, 1), i, np.float32)}, 1)))
        outs = await asyncio.gather(*tasks)
        assert [int(o[0][0, 0]) for o in outs] == list(range(len(arrivals_ms)))  # each got its own row back
        await b.stop()

    asyncio.run(main())
    return sizes


def test_burst_is_capped_at_max_batch() -> None:
    assert _run_case([0] * 10, max_batch=4, max_delay_ms=5) == [4, 4, 2]


def test_no_delay_takes_whatever_waits() -> None:
    assert _run_case([0, 5, 6, 7, 8], max_batch=4, max_delay_ms=0)[:2] == [1, 4]


def test_delay_gathers_stragglers_then_gives_up() -> None:
    sizes = _run_case([0, 2, 4, 100], max_batch=8, max_delay_ms=30)
    assert sizes == [3, 1]
