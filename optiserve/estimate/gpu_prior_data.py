"""Published per-accelerator results the GPU prior is fitted to (``gpu_prior.py``).

MLPerf Inference, datacenter, closed division, ResNet-50 v1.5, Offline scenario,
NVIDIA's TensorRT int8 submissions. Each figure is the system's "Samples per
second" read from its ``mlperf_log_summary.txt`` (the URL), divided by the
accelerators in the system. Offline keeps every device busy with large batches,
host copies overlapped with compute, so it measures the device side only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    accelerator: str  # the catalog's accelerator model name
    precision: str
    samples_per_s: float  # per accelerator
    system_samples_per_s: float
    accelerators: int
    round: str
    submitter: str
    system: str
    source: str
    # the device the system ran, for the ceilings the fit uses (dense datasheet figures)
    peak_tops: float
    bandwidth_gbs: float


_REPO = "https://github.com/mlcommons/inference_results_{}/blob/main/closed/NVIDIA/results/{}/resnet50/Offline/performance/run_1/mlperf_log_summary.txt"

RESNET50_OFFLINE: tuple[Published, ...] = (
    Published(
        "L4",
        "int8",
        12881.7,
        12881.7,
        1,
        "v3.1",
        "NVIDIA",
        "L4x1_TRT",
        _REPO.format("v3.1", "L4x1_TRT"),
        242.5,
        300,
    ),
    Published(
        "A100-80GB",
        "int8",
        42379.3,
        42379.3,
        1,
        "v3.0",
        "NVIDIA",
        "DGX-A100_A100-SXM-80GBx1_TRT",
        _REPO.format("v3.0", "DGX-A100_A100-SXM-80GBx1_TRT"),
        624,
        2039,
    ),
    Published(
        "H100",
        "int8",
        88714.3,
        88714.3,
        1,
        "v4.0",
        "NVIDIA",
        "DGX-H100_H100-SXM-80GBx1_TRT",
        _REPO.format("v4.0", "DGX-H100_H100-SXM-80GBx1_TRT"),
        1979,
        3350,
    ),
    Published(
        "H200",
        "int8",
        756960 / 8,
        756960,
        8,
        "v4.1",
        "NVIDIA",
        "H200-SXM-141GBx8_TRT",
        _REPO.format("v4.1", "H200-SXM-141GBx8_TRT"),
        1979,
        4800,
    ),
)
# ResNet-50 v1.5 work per sample, the MLPerf reference model: 4.1 GMAC = 8.2 G int8 ops
# (graph_cost of the repo's onnx-zoo ResNet-50 v1 gives 8.22 GFLOP per 224x224 image).
RESNET50_OPS_PER_SAMPLE = 8.2e9
