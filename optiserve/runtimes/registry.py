"""Runtimes by name: an explicit tuple in the shared registry (asv's ``name`` + availability)."""

from __future__ import annotations

from optiserve._registry import Registry, registry_of
from optiserve.runtimes.base import Runtime
from optiserve.runtimes.onnxruntime_cpu import OnnxRuntimeCPU
from optiserve.runtimes.onnxruntime_gpu import OnnxRuntimeCUDA, OnnxRuntimeTensorRT
from optiserve.runtimes.openvino import OpenVinoCPU
from optiserve.runtimes.options import check_options
from optiserve.runtimes.tensorrt_native import TensorRTRuntime

RUNTIMES: tuple[Runtime, ...] = (
    OnnxRuntimeCPU(),
    OpenVinoCPU(),
    OnnxRuntimeCUDA(),
    OnnxRuntimeTensorRT(),
    TensorRTRuntime(),
)
REGISTRY: Registry[Runtime] = registry_of("runtime", RUNTIMES)

__all__ = ["REGISTRY", "RUNTIMES", "availability", "check_options", "get_runtime", "runtime_names"]


def runtime_names() -> list[str]:
    return list(REGISTRY.names())


def get_runtime(name: str) -> Runtime:
    """The registered runtime ``name``; an unknown one lists the valid names."""
    return REGISTRY.create(name)


def availability() -> dict[str, str | None]:
    """Each runtime's name mapped to ``None`` (usable) or the reason it is not."""
    return REGISTRY.availability()
