"""Roofline-calibrated transfer of service times from hardware A to hardware B.

Per config, a batch's time on A is fitted as ``t = R / e + d``: ``R`` is the
roofline time (each node bound by compute or memory, whichever is slower on A's
ceilings), ``e`` the efficiency the fit finds, ``d`` a fixed per-call
overhead, by non-negative least squares over A's measured batch sizes. On B,
the same ``e`` and ``d`` meet B's ceilings. (Separate compute and memory
efficiencies are not identifiable from one machine's batch curve: bytes are
affine in the batch, FLOPs linear, so those columns and the constant are
collinear.) Every prediction carries the fit's relative RMS error on A as its
band: a floor, since the efficiency need not carry over unchanged.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from optiserve.errors import UsageError
from optiserve.estimate.graph_cost import GraphCost


@dataclass(frozen=True)
class Ceiling:
    """A machine's compute (FLOP/s) and the bandwidth its kernels move a node's tensors
    at (bytes/s) for one config; ``dram_bytes_per_s`` bounds a call by reading the
    weights once (a floor that binds only where they cannot stay in cache)."""

    name: str
    flops_per_s: float
    bytes_per_s: float
    dram_bytes_per_s: float = math.inf
    vector_flops_per_s: float | None = None  # a CPU: non-GEMM nodes' vector work meets its fp32 GEMM rate

    def roofline_s(self, cost: GraphCost) -> float:
        if self.vector_flops_per_s is not None:
            return cost.cpu_s(self.flops_per_s, self.vector_flops_per_s, self.dram_bytes_per_s)
        return cost.roofline_s(self.flops_per_s, self.bytes_per_s, self.dram_bytes_per_s)


@dataclass(frozen=True)
class TransferFit:
    inverse_efficiency: float  # measured time per second of roofline time
    overhead_s: float
    rel_rms: float  # relative RMS error of the fit on the source machine

    @property
    def efficiency(self) -> float:
        return 1 / self.inverse_efficiency if self.inverse_efficiency else float("inf")

    def predict(self, cost: GraphCost, target: Ceiling) -> tuple[float, float]:
        """(seconds, relative error band) for ``cost`` on ``target`` — predicted, not measured."""
        roof = target.roofline_s(cost)
        return self.inverse_efficiency * roof + self.overhead_s, self.rel_rms


def _nnls(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares for a handful of columns: best over active sets."""
    best, best_err = np.zeros(a.shape[1]), float("inf")
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            x, *_ = np.linalg.lstsq(a[:, cols], y, rcond=None)
            if (x < 0).any():
                continue
            err = float(np.sum((a[:, cols] @ x - y) ** 2))
            if err < best_err:
                best_err, best = err, np.zeros(a.shape[1])
                best[list(cols)] = x
    return best


def fit_transfer(costs: Sequence[GraphCost], seconds: Sequence[float], source: Ceiling) -> TransferFit:
    if len(costs) != len(seconds) or len(costs) < 2:
        raise UsageError("a transfer fit needs at least two measured batch sizes")
    y = np.asarray(seconds, dtype=np.float64)
    a = np.array([[source.roofline_s(c), 1.0] for c in costs])
    x = _nnls(a / y[:, None], np.ones_like(y))  # weighted by 1/y: every batch size counts by its relative error
    pred = a @ x
    rel = float(np.sqrt(np.mean(((pred - y) / y) ** 2)))
    return TransferFit(float(x[0]), float(x[1]), rel)
