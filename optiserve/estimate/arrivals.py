"""Open-loop arrival processes, as sorted timestamps in seconds from 0."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


ARRIVALS = ("poisson", "gamma", "trace")


def make_arrivals(
    kind: str, rate: float, n: int, cv: float = 2.0, seed: int = 0, trace: Sequence[float] | np.ndarray | None = None
) -> np.ndarray:
    """The schedule for ``kind``: ``n`` Poisson or gamma arrivals at ``rate``, or a replayed trace."""
    if kind == "poisson":
        return poisson_arrivals(rate, n, seed)
    if kind == "gamma":
        return gamma_arrivals(rate, n, cv, seed)
    if kind == "trace":
        if trace is None:
            raise UsageError("--arrival trace needs --trace FILE with one timestamp per line")
        return trace_arrivals(trace)
    raise UsageError(f"unknown arrival {kind!r}; valid arrivals: {', '.join(ARRIVALS)}")
