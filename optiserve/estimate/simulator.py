"""Discrete-event simulation of a model server under open-loop arrivals.

Each replica has one queue served by ``instances`` model instances; arrivals
are spread over replicas round-robin (a load balancer). The batching policy is
the one ``optiserve serve`` implements (and Triton's dynamic batcher, with its
preferred sizes reduced to one target): when an instance is free and requests
wait, it dispatches at once if ``target`` requests are waiting, otherwise when
the target is reached or the oldest request has waited ``max_delay`` —
whichever is first — taking up to ``max_batch``. ``max_delay = 0`` dispatches
whatever is waiting immediately.

A server's own front end (the event loop that reads, decodes and answers each
request) is a FIFO station with ``frontend_s`` per request in front of the
batcher, and ``fixed_s`` is what every request pays outside the server; both
are measured by ``profile --serving``, not guessed; ``fixed_spread_s``, when
measured, draws the fixed term per request from its measured quantiles (at each
replica's rate with ``fixed_spread_curve``). Where
the front end holds what inference needs (``frontend_slows_inference``: the
GIL), each call is stretched by the front-end work that lands during it.

The front end's cost per request falls with load (caches stay warm, one wake-up serves
several requests): ``frontend_extra`` holds what it costs beyond ``frontend_s`` at the
per-replica rates ``profile --serving`` measured it at, interpolated at each replica's
simulated rate (flat beyond the ends). Where the front end shares the inference core
(``frontend_per_row``), that extra is added to each call per row instead.

The event loop is compiled with Numba: 1e6 requests take well under a second.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optiserve._curves import curve_at
from optiserve.errors import UsageError
from optiserve.estimate.arrivals import poisson_arrivals
from optiserve.estimate.service import ServiceModel

_CORE: dict[str, Any] = {}


@dataclass(frozen=True)
class BatchingPolicy:
    max_batch: int = 1
    max_delay_s: float = 0.0
    preferred: tuple[int, ...] = ()
    instances: int = 1
    replicas: int = 1
    frontend_s: float = 0.0  # per-request cost of the server's single-threaded front end (HTTP, decode, encode)
    fixed_s: float = 0.0  # latency every request pays outside the server (network, client)
    # The spread of what every request pays outside the server: its quantiles at evenly spaced
    # probabilities 0..1, one drawn per request on top of ``fixed_s`` (a mean hides the tail the p99 feels)
    fixed_spread_s: tuple[float, ...] = ()
    # The front end holds what inference needs while it runs (REST's event loop and the GIL): each
    # call is stretched by the front-end work that lands during it (``frontend_s`` for each of a
    # Poisson number of requests at the offered rate: on average the front end's busy share)
    frontend_slows_inference: bool = False
    # (per-replica req/s, seconds) measured points: the front end's cost per request beyond ``frontend_s``
    # (or beyond the per-row cost already in the service model, with ``frontend_per_row``) at that rate
    frontend_extra: tuple[tuple[float, float], ...] = ()
    frontend_per_row: bool = False  # the extra is charged on each call per row (a core shared with inference)
    # (per-replica req/s, quantiles) of the fixed term's spread measured at several loads: what a request
    # pays outside the server falls with load as the front end's cost does (the MLP on a Zen 5 guest, JSON,
    # Locust: 1.99 ms mean at 100 req/s, 1.24 at 603); read quantile by quantile in log rate, flat beyond
    # its ends, in place of ``fixed_spread_s`` (empty: that one spread at every rate)
    fixed_spread_curve: tuple[tuple[float, tuple[float, ...]], ...] = ()

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.instances < 1 or self.replicas < 1 or self.max_delay_s < 0:
            raise UsageError("batching needs max_batch, instances and replicas >= 1 and max_delay >= 0")
        if self.frontend_s < 0 or self.fixed_s < 0:
            raise UsageError("frontend and fixed overheads must be >= 0")
        q = self.fixed_spread_s
        if q and (len(q) < 2 or q[0] < 0 or any(b < a for a, b in itertools.pairwise(q))):
            raise UsageError("a fixed-term spread is >= 2 non-negative, non-decreasing quantiles")
        c = self.fixed_spread_curve
        if c and (
            any(r <= 0 or len(qs) != len(c[0][1]) or len(qs) < 2 or qs[0] < 0 for r, qs in c)
            or any(b[0] <= a[0] for a, b in itertools.pairwise(c))
            or any(y < x for _, qs in c for x, y in itertools.pairwise(qs))
        ):
            raise UsageError("a fixed-term spread curve is (rate > 0, spread) points at increasing rates")
        x = self.frontend_extra
        if x and (any(r <= 0 or c < 0 for r, c in x) or any(b[0] <= a[0] for a, b in itertools.pairwise(x))):
            raise UsageError("a front-end curve is (rate > 0, cost >= 0) points at increasing rates")
        if any(p < 1 or p > self.max_batch for p in self.preferred):
            raise UsageError(f"preferred batch sizes must lie in 1..{self.max_batch}")

    @property
    def target(self) -> int:
        return max(self.preferred) if self.preferred else self.max_batch

    def fixed_spread_at(self, rate: float) -> tuple[float, ...]:
        """The fixed term's quantiles at ``rate`` req/s per replica (``fixed_spread_s`` without a curve)."""
        c = self.fixed_spread_curve
        if not c or rate <= 0:
            return c[0][1] if c else self.fixed_spread_s
        rates = np.log([r for r, _ in c])
        table = np.asarray([qs for _, qs in c])
        x = float(np.log(rate))
        return tuple(float(np.interp(x, rates, table[:, j])) for j in range(table.shape[1]))

    def frontend_extra_at(self, rate: float) -> float:
        """The front end's extra cost per request at ``rate`` req/s per replica (0 without a curve)."""
        return curve_at(self.frontend_extra, rate) if self.frontend_extra else 0.0


@dataclass(frozen=True)
class SimResult:
    latency_s: np.ndarray = field(repr=False)
    wait_s: np.ndarray = field(repr=False)
    service_s: np.ndarray = field(repr=False)
    batch_sizes: np.ndarray = field(repr=False)  # one entry per dispatched batch
    utilisation: float
    duration_s: float
    busy_s: float = 0.0  # every call's seconds, over all instances and replicas

    @property
    def mean_call_s(self) -> float:
        """The mean call, per dispatched batch: what a server's batch-seconds histogram reports."""
        return self.busy_s / self.batch_sizes.size if self.batch_sizes.size else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.quantile(self.latency_s, q) * 1e3)

    @property
    def summary(self) -> dict[str, float]:
        lat = self.latency_s * 1e3
        p = np.quantile(lat, [0.5, 0.95, 0.99, 0.999])
        return {
            "p50_ms": float(p[0]),
            "p95_ms": float(p[1]),
            "p99_ms": float(p[2]),
            "p999_ms": float(p[3]),
            "mean_ms": float(lat.mean()),
            "mean_wait_ms": float(self.wait_s.mean() * 1e3),
            "mean_service_ms": float(self.service_s.mean() * 1e3),
            "utilisation": self.utilisation,
            "throughput": len(self.latency_s) / self.duration_s if self.duration_s > 0 else math.inf,
            "mean_batch": float(self.batch_sizes.mean()),
        }

    def batch_histogram(self) -> dict[int, int]:
        sizes, counts = np.unique(self.batch_sizes, return_counts=True)
        return {int(s): int(c) for s, c in zip(sizes, counts, strict=True)}


def _core() -> Any:
    if "sim" in _CORE:
        return _CORE["sim"]
    from numba import njit

    @njit(cache=True)
    def frontend(arrivals, cost):  # type: ignore[no-untyped-def]
        # FIFO single server (Lindley): when each request leaves the front end for the batcher
        out = np.empty_like(arrivals)
        t = 0.0
        for i in range(arrivals.shape[0]):
            t = max(t, arrivals[i]) + cost
            out[i] = t
        return out

    _CORE["frontend"] = frontend

    @njit(cache=True)
    def sim(arrivals, instances, max_batch, max_delay, target, flat, offset, count, scale, seed, rate, cost, per_item):  # type: ignore[no-untyped-def]
        np.random.seed(seed)
        n = arrivals.shape[0]
        free = np.zeros(instances)
        start = np.empty(n)
        finish = np.empty(n)
        batches = np.empty(n, np.int64)
        nb = 0
        busy = 0.0
        head = 0
        while head < n:
            inst = 0
            for j in range(1, instances):
                if free[j] < free[inst]:
                    inst = j
            t = max(free[inst], arrivals[head])
            waiting = np.searchsorted(arrivals, t, side="right") - head
            s = t
            if waiting < target and max_delay > 0.0:
                deadline = arrivals[head] + max_delay
                reach = arrivals[head + target - 1] if head + target - 1 < n else np.inf
                s = max(t, min(deadline, reach))
            k = min(np.searchsorted(arrivals, s, side="right") - head, max_batch)
            svc = flat[offset[k] + np.random.randint(0, count[k])] * scale[k] + k * per_item
            if rate > 0.0:  # the front-end work landing during the call, each piece ``cost`` long
                svc += cost * np.random.poisson(rate * svc)
            end = s + svc
            for j in range(head, head + k):
                start[j] = s
                finish[j] = end
            batches[nb] = k
            nb += 1
            busy += svc
            free[inst] = end
            head += k
        return start, finish, batches[:nb], busy

    _CORE["sim"] = sim
    return sim


def simulate(arrivals: np.ndarray, service: ServiceModel, policy: BatchingPolicy, seed: int = 0) -> SimResult:
    """Latencies of every request in ``arrivals`` (sorted seconds) under ``policy``."""
    arrivals = np.ascontiguousarray(arrivals, dtype=np.float64)
    if arrivals.size == 0:
        raise UsageError("no arrivals to simulate")
    flat, offset, count, scale = service.tables(policy.max_batch)
    sim = _core()
    lat, wait, svc, batch_parts = [], [], [], []
    busy_total = 0.0
    for r in range(policy.replicas):
        arr = arrivals[r :: policy.replicas]
        if arr.size == 0:
            continue
        offered = (arr.size - 1) / float(arr[-1] - arr[0]) if arr.size > 1 and arr[-1] > arr[0] else 0.0
        extra = policy.frontend_extra_at(offered) if offered > 0 else 0.0  # the curve's cost at this load
        per_item = extra if policy.frontend_per_row else 0.0
        front = policy.frontend_s + (0.0 if policy.frontend_per_row else extra)
        queued = _CORE["frontend"](arr, front) if front > 0 else arr
        rate = 0.0
        if policy.frontend_slows_inference and front > 0 and offered > 0:
            rate = min(offered, 1.0 / front)  # the front end's rate
        start, finish, batches, busy = sim(
            queued,
            policy.instances,
            policy.max_batch,
            policy.max_delay_s,
            policy.target,
            flat,
            offset,
            count,
            scale,
            seed + r,
            rate,
            front,
            per_item,
        )
        outside = policy.fixed_s
        spread = policy.fixed_spread_at(offered)
        if spread:  # drawn per request, its own stream: the same draws at every rate
            q = np.asarray(spread)
            u = np.random.default_rng((seed, r, 0x5EED)).random(arr.size)
            outside = outside + np.interp(u, np.linspace(0.0, 1.0, q.size), q)
        lat.append(finish - arr + outside)
        wait.append(start - arr)
        svc.append(finish - start)
        batch_parts.append(batches)
        busy_total += busy
    span = float(arrivals[-1] - arrivals[0]) or float(np.concatenate(svc).max())
    return SimResult(
        latency_s=np.concatenate(lat),
        wait_s=np.concatenate(wait),
        service_s=np.concatenate(svc),
        batch_sizes=np.concatenate(batch_parts),
        utilisation=busy_total / (span * policy.instances * policy.replicas),
        duration_s=span,
        busy_s=busy_total,
    )


def max_rate_for_p99(
    service: ServiceModel,
    policy: BatchingPolicy,
    p99_ms: float,
    n: int = 20_000,
    seed: int = 0,
    tol: float = 0.01,
) -> float:
    """The highest Poisson rate (req/s) whose simulated p99 stays within ``p99_ms``
    (bisection with common random numbers; 0 when even a trickle misses it)."""
    hi = service.capacity(policy.max_batch, policy.instances) * policy.replicas
    base = poisson_arrivals(1.0, n, seed)  # scaled per rate: the same random stream each time

    def ok(rate: float) -> bool:
        return simulate(base / rate, service, policy, seed).percentile_ms(0.99) <= p99_ms

    lo = hi * 1e-3
    if not ok(lo):
        return 0.0
    while hi - lo > tol * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo
