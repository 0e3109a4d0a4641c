"""A gRPC load driver: ``ModelInfer`` over ``grpc.aio`` (the official stubs ``tritonclient`` ships).

Open loop (Poisson arrivals, each latency from its *scheduled* send) or closed
loop (``users`` callers back to back), over a few channels as a fleet of
clients would open. Python's gRPC client costs more per call than
``socket_driver``'s raw HTTP/1.1 protocol, so what it really sent and its own lag
are returned: a factor it could not offer says so. Every refusal counts, from
the server's admission (UNAVAILABLE), its Python-side call limit
(RESOURCE_EXHAUSTED) or the C core's pending limit (CANCELLED); anything else
(a deadline, a reset) is a failure.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import numpy as np

from optiserve._socket_driver import TIMEOUT_S, Run

REFUSALS = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED")


async def infer_request(port: int, model: str) -> Any:
    """A batch-1 ``ModelInferRequest`` for ``model`` with raw (binary) random inputs, as tritonclient sends."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as stubs

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        meta = await stubs.GRPCInferenceServiceStub(channel).ModelMetadata(pb.ModelMetadataRequest(name=model))
    req = pb.ModelInferRequest(model_name=model)
    rng = np.random.default_rng(0)
    for t in meta.inputs:
        shape = [1, *(max(1, int(d)) for d in t.shape[1:])]
        req.inputs.add(name=t.name, datatype=t.datatype, shape=shape)
        if t.datatype != "FP32":
            raise ValueError(f"the gRPC driver sends FP32 inputs only, not {t.datatype} ({t.name})")
        req.raw_input_contents.append(rng.random(int(np.prod(shape)), dtype=np.float32).tobytes())
    return req


async def drive_grpc(
    port: int,
    request: Any,
    rate: float | None,
    seconds: float,
    bound_s: float,
    users: int = 32,
    channels: int = 4,
    seed: int = 0,
) -> Run:
    """Open loop at ``rate`` (Poisson), or closed loop with ``users`` callers when ``rate`` is None."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc as stubs

    chans = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
    calls = [stubs.GRPCInferenceServiceStub(c).ModelInfer for c in chans]
    ok: list[float] = []
    refused: list[float] = []
    answered: list[float] = []  # refusals from the send, not the schedule
    lag: list[float] = []
    why: collections.Counter[str] = collections.Counter()
    sent = 0

    async def one(k: int, due: float) -> None:
        nonlocal sent
        start = time.perf_counter()
        lag.append(start - due)
        sent += 1
        try:
            await calls[k % channels](request, timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            if code in REFUSALS:
                refused.append(time.perf_counter() - due)
                answered.append(time.perf_counter() - start)
                why[f"refused {code}"] += 1  # shown in the breakdown, not counted as failed
            else:
                why[code] += 1
            return
        ok.append(time.perf_counter() - due)

    t0 = time.perf_counter()
    end = t0 + seconds
    try:
        if rate is None:

            async def caller(k: int) -> None:
                while time.perf_counter() < end:
                    await one(k, time.perf_counter())

            await asyncio.gather(*(caller(k) for k in range(users)))
        else:
            gaps = np.random.default_rng(seed).exponential(1 / rate, int(rate * seconds * 1.2) + 10)
            arrivals = (t0 + np.cumsum(gaps)).tolist()
            tasks: set[asyncio.Task[None]] = set()
            i = 0
            while i < len(arrivals) and arrivals[i] < end:
                now = time.perf_counter()
                while i < len(arrivals) and arrivals[i] <= now and arrivals[i] < end:
                    task = asyncio.ensure_future(one(i, arrivals[i]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    i += 1
                if i < len(arrivals):
                    await asyncio.sleep(max(0.0, arrivals[i] - time.perf_counter()))
            if tasks:
                await asyncio.wait(tasks, timeout=TIMEOUT_S + 5)
    finally:
        for c in chans:
            await c.close()

    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q) * 1e3) if xs else float("nan")

    wall = max(seconds, 1e-9)
    failed = sum(v for k, v in why.items() if not k.startswith("refused"))
    return Run(
        offered=rate or 0.0,
        sent=sent / wall,
        ok=len(ok) / wall,
        goodput=sum(1 for x in ok if x <= bound_s) / wall,
        bound_s=bound_s,
        refused=len(refused),
        failed=failed,
        ok_p50_ms=pct(ok, 50),
        ok_p99_ms=pct(ok, 99),
        refused_p99_ms=pct(refused, 99),
        failed_by=tuple(sorted((k, v) for k, v in why.items() if v)),
        refusal_from_attempt_p99_ms=pct(answered, 99),
        driver_lag_p99_ms=pct(lag, 99),
    )
