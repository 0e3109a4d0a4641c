"""Open-loop arrival processes, as sorted timestamps in seconds from 0."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optiserve._registry import Entry, Registry
from optiserve.errors import UsageError


def poisson_arrivals(rate: float, n: int, seed: int = 0) -> np.ndarray:
    if rate <= 0 or n < 1:
        raise UsageError(f"Poisson arrivals need rate > 0 and n >= 1, got rate={rate}, n={n}")
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, n))


def gamma_arrivals(rate: float, n: int, cv: float = 2.0, seed: int = 0) -> np.ndarray:
    """Bursty arrivals: gamma inter-arrival times with mean 1/rate and coefficient of
    variation ``cv`` (1 is Poisson; larger is burstier)."""
    if rate <= 0 or n < 1 or cv <= 0:
        raise UsageError(f"gamma arrivals need rate > 0, n >= 1, cv > 0, got {rate}, {n}, {cv}")
    shape = 1.0 / cv**2
    return np.cumsum(np.random.default_rng(seed).gamma(shape, 1.0 / (rate * shape), n))


def trace_arrivals(timestamps: Sequence[float] | np.ndarray) -> np.ndarray:
    t = np.sort(np.asarray(timestamps, dtype=np.float64))
    if t.size == 0 or not np.isfinite(t).all():
        raise UsageError("an arrival trace needs at least one finite timestamp")
    return np.asarray(t - t[0])


# Every kind takes the same keywords and uses the ones it needs: one call site for all.
def _poisson(*, rate: float, n: int, cv: float, seed: int, trace: Sequence[float] | np.ndarray | None) -> np.ndarray:
    return poisson_arrivals(rate, n, seed)


def _gamma(*, rate: float, n: int, cv: float, seed: int, trace: Sequence[float] | np.ndarray | None) -> np.ndarray:
    return gamma_arrivals(rate, n, cv, seed)


def _trace(*, rate: float, n: int, cv: float, seed: int, trace: Sequence[float] | np.ndarray | None) -> np.ndarray:
    if trace is None:
        raise UsageError("--arrival trace needs --trace FILE with one timestamp per line")
    return trace_arrivals(trace)


ARRIVALS: Registry[np.ndarray] = Registry(
    "arrival",
    (
        Entry("poisson", _poisson, description="memoryless, the textbook open loop"),
        Entry("gamma", _gamma, description="bursty: gamma gaps with coefficient of variation cv"),
        Entry("trace", _trace, description="a recorded schedule, replayed from its first stamp"),
    ),
)


def make_arrivals(
    kind: str, rate: float, n: int, cv: float = 2.0, seed: int = 0, trace: Sequence[float] | np.ndarray | None = None
) -> np.ndarray:
    """The schedule for ``kind``: ``n`` Poisson or gamma arrivals at ``rate``, or a replayed trace."""
    return ARRIVALS.create(kind, rate=rate, n=n, cv=cv, seed=seed, trace=trace)
