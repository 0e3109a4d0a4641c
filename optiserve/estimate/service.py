"""Service time per batch size, from measured samples.

Profiled batch sizes are drawn from their own raw samples (the empirical
distribution, tail included); a size between two profiled ones is drawn from
the smaller one's samples scaled to the linearly interpolated mean; above the
largest, the mean is extrapolated from the last two sizes. ``predicted_sizes``
says which sizes were not measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from optiserve.errors import UsageError
from optiserve.types import Profile, Status


@dataclass(frozen=True)
class ServiceModel:
    samples: Mapping[int, np.ndarray] = field(repr=False)  # batch size -> seconds

    def __post_init__(self) -> None:
        if not self.samples or any(len(v) == 0 for v in self.samples.values()):
            raise UsageError("a service model needs at least one batch size with samples")

    @classmethod
    def from_profile(
        cls, profile: Profile, runtime: str | None = None, precision: str | None = None, threads: int | None = None
    ) -> ServiceModel:
        rows = [
            m
            for m in profile.measurements
            if m.status is Status.OK
            and m.samples_ns
            and (runtime is None or m.config.runtime == runtime)
            and (precision is None or m.config.precision.value == precision)
            and (threads is None or m.config.threads == threads)
        ]
        if not rows:
            raise UsageError("no measured rows in the profile match the runtime/precision/threads asked for")
        by_size: dict[int, np.ndarray] = {}
        for m in rows:
            if m.config.batch_size in by_size:
                raise UsageError(
                    f"several profiled configs for batch {m.config.batch_size}: choose runtime, precision and threads"
                )
            by_size[m.config.batch_size] = np.asarray(m.samples_ns, dtype=np.float64) / 1e9
        return cls(by_size)

    def plus_per_item(self, seconds: float) -> ServiceModel:
        """Each batch also pays ``seconds`` per row: CPU work (decoding, encoding) that
        competes with inference when the server's threads share one core."""
        return ServiceModel({b: s + b * seconds for b, s in self.samples.items()})

    def plus_per_call(self, seconds: float) -> ServiceModel:
        """Each batch also pays ``seconds`` once, whatever its size: what a call costs in the server
        beyond the profiled back-to-back run (caches cold between requests, the executor's hand-off)."""
        return ServiceModel({b: s + seconds for b, s in self.samples.items()})

    def jittered(self, factors: tuple[float, ...], draws: int = 4096, seed: int = 0) -> ServiceModel:
        """Each call also varies as the served calls did: every sample times a factor drawn from
        ``factors`` (quantiles of the served calls over their mean, measured under light open-loop
        load), the mean kept as profiled. A slow call in the server delays the requests
        queued behind it, which a fixed term added afterwards cannot (issue 14)."""
        f = np.asarray(factors, dtype=np.float64)
        if f.size < 2 or not np.isfinite(f).all() or f.mean() <= 0:
            return self
        rng = np.random.default_rng(seed)
        out = {}
        for b, s in self.samples.items():
            n = max(draws, len(s))
            # factors are quantiles at evenly spaced levels: drawn through their inverse CDF, as the
            # simulator draws the fixed term (picking one of the 101 would give the top one, a single
            # request's, 1% of the draws)
            drawn = rng.choice(s, n) * np.interp(rng.random(n), np.linspace(0.0, 1.0, f.size), f)
            out[b] = drawn * (float(np.mean(s)) / float(np.mean(drawn)))  # the mean exactly as measured
        return ServiceModel(out)

    def scaled(self, factor: float) -> ServiceModel:
        """Every service time times ``factor``: an error band's edge."""
        return ServiceModel({b: s * factor for b, s in self.samples.items()})

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self.samples))

    def mean(self, batch: int) -> float:
        sizes = self.sizes
        means = [float(np.mean(self.samples[s])) for s in sizes]
        if batch in self.samples:
            return float(np.mean(self.samples[batch]))
        if len(sizes) == 1:
            return means[0] * batch / sizes[0]
        if batch < sizes[0]:
            return means[0]
        if batch > sizes[-1]:
            lo, hi = sizes[-2], sizes[-1]
            slope = (means[-1] - means[-2]) / (hi - lo)
            return means[-1] + slope * (batch - hi)
        return float(np.interp(batch, sizes, means))

    def predicted_sizes(self, max_batch: int) -> list[int]:
        return [b for b in range(1, max_batch + 1) if b not in self.samples]

    def tables(self, max_batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Flat arrays for the compiled simulator: all samples, each size's (offset,
        count) into them, and the factor each drawn sample is scaled by."""
        sizes = self.sizes
        flat = np.concatenate([self.samples[s] for s in sizes])
        starts = np.cumsum([0] + [len(self.samples[s]) for s in sizes])[:-1]
        offset = np.zeros(max_batch + 1, np.int64)
        count = np.zeros(max_batch + 1, np.int64)
        scale = np.ones(max_batch + 1, np.float64)
        for b in range(1, max_batch + 1):
            src = b if b in self.samples else max([s for s in sizes if s <= b], default=sizes[0])
            i = sizes.index(src)
            offset[b], count[b] = starts[i], len(self.samples[src])
            scale[b] = self.mean(b) / float(np.mean(self.samples[src]))
        return flat, offset, count, scale

    def capacity(self, max_batch: int, instances: int = 1) -> float:
        """Items per second with every instance busy on full batches."""
        return max(b / self.mean(b) for b in range(1, max_batch + 1)) * instances
