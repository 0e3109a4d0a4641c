"""More threads, more time: the sign that a profile measured contention, not the machine.

On a quiet machine an intra-op thread pool of two is never much slower than one
thread at the same batch (ORT's pool at worst idles its second thread). When it
is -- 1.9x slower for every config of the first Sapphire Rapids reference, whose
session ran other jobs beside it -- the extra threads waited for a vCPU someone
else held (or two vCPUs share a core), and the multi-thread rows say nothing a
transfer or a plan can use. ``profile`` warns; the cross-machine benchmark leaves
those rows out of its truth and says so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np

from optiserve.types import BenchConfig, Profile

SLOWER = 1.10  # more threads this much slower than fewer: not noise


@dataclass(frozen=True)
class Contended:
    """A config whose ``threads`` took ``ratio`` x the time of ``fewer`` threads."""

    config: BenchConfig
    fewer: int
    ratio: float

    def describe(self) -> str:
        c = self.config
        return (
            f"{c.precision.value} b={c.batch_size}: {c.threads} threads took {self.ratio:.2f}x the time of "
            f"{self.fewer}; the machine was busy or its vCPUs share cores, so its {c.threads}-thread rows "
            "measure contention"
        )


def contended(profile: Profile, slower: float = SLOWER) -> list[Contended]:
    """Each ok row slower than the same config with fewer threads by more than ``slower``."""
    groups: dict[BenchConfig, dict[int, float]] = defaultdict(dict)
    for m in profile.ok:
        groups[replace(m.config, threads=0)][m.config.threads] = float(np.mean(m.samples_ns))
    out = []
    for base, by_threads in groups.items():
        for t, mean in sorted(by_threads.items()):
            fewer = [f for f in by_threads if f < t]
            if not fewer:
                continue
            best = min(fewer, key=lambda f: by_threads[f])
            if mean > slower * by_threads[best]:
                out.append(Contended(replace(base, threads=t), best, mean / by_threads[best]))
    return out
