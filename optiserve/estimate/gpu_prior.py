"""The accelerator efficiency prior, fitted to published per-accelerator results.

Carrying the CPU's fp32 efficiency to a GPU's tensor-core ceiling predicted
MLPerf's ResNet-50 2-9x too slow (issue 18): a CPU reaches a small share of its
peak, TensorRT a large one, and its fused kernels keep activations on chip, so
the per-node roofline's DRAM traffic is not what bounds a GPU. Here the device
time of one batch is the graph's operations at ``efficiency`` x the dense peak,
or its weights (and graph inputs/outputs) over device memory, whichever is
slower. ``efficiency`` is one number per precision, the geometric mean over
the published accelerators (``gpu_prior_data.py``); the band is the worst
relative error that one number leaves on them.

Only int8 is calibrated (MLPerf's closed-division GPU results are int8);
other precisions return no prior and keep the CPU-efficiency model. Batch-size
dependence is not fitted: no per-batch published figure is used, and the
offline results are large-batch, so a small batch's extra cost comes only from
the per-launch term the caller adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from optiserve.estimate.gpu_prior_data import RESNET50_OFFLINE, RESNET50_OPS_PER_SAMPLE, Published
from optiserve.estimate.graph_cost import GraphCost
from optiserve.estimate.transfer import Ceiling


@dataclass(frozen=True)
class GpuPrior:
    precision: str
    efficiency: float  # share of the dense peak reached on the graph's operations
    band: float  # worst relative error of the fit on the published results
    residuals: tuple[tuple[str, float], ...]  # (accelerator, predicted/published time - 1)
    basis: str

    def device_s(self, cost: GraphCost, ceiling: Ceiling) -> float:
        """Seconds one batch spends on the device (launches and host copies excluded)."""
        compute = cost.flops / (ceiling.flops_per_s * self.efficiency)
        memory = (cost.weight_bytes + cost.io_bytes) / ceiling.bytes_per_s
        return max(compute, memory)


def published_efficiency(row: Published) -> float:
    """The share of the dense peak the published throughput implies."""
    return row.samples_per_s * RESNET50_OPS_PER_SAMPLE / (row.peak_tops * 1e12)


@cache
def prior(precision: str) -> GpuPrior | None:
    """The calibrated prior for an optiserve precision name, or None where uncalibrated."""
    compute = "int8" if precision.startswith("int8") else precision
    rows = [r for r in RESNET50_OFFLINE if r.precision == compute]
    if not rows:
        return None
    effs = [published_efficiency(r) for r in rows]
    eff = math.exp(sum(math.log(e) for e in effs) / len(effs))
    residuals = tuple((r.accelerator, e / eff - 1) for r, e in zip(rows, effs, strict=True))
    worst = max(abs(x) for _, x in residuals)
    band = math.ceil(worst * 20) / 20  # the worst residual, rounded up to 5%
    names = ", ".join(r.accelerator for r in rows)
    basis = (
        f"{compute} efficiency {eff:.2f} of the dense peak, fitted to MLPerf Inference ResNet-50 Offline "
        f"({names}); worst error {worst:.0%}"
    )
    return GpuPrior(compute, eff, band, residuals, basis)
