"""Runtimes by name: an explicit tuple, no discovery magic (asv's ``name`` + availability)."""

from __future__ import annotations

from collections.abc import Mapping

from optiserve.errors import UnknownNameError, UsageError
from optiserve.runtimes.base import Runtime
from optiserve.runtimes.onnxruntime_cpu import OnnxRuntimeCPU
from optiserve.runtimes.onnxruntime_gpu import OnnxRuntimeCUDA, OnnxRuntimeTensorRT
from optiserve.runtimes.tensorrt_native import TensorRTRuntime

RUNTIMES: tuple[Runtime, ...] = (OnnxRuntimeCPU(), OnnxRuntimeCUDA(), OnnxRuntimeTensorRT(), TensorRTRuntime())


def runtime_names() -> list[str]:
    return [r.name for r in RUNTIMES]


def get_runtime(name: str) -> Runtime:
    for r in RUNTIMES:
        if r.name == name:
            return r
    raise UnknownNameError("runtime", name, runtime_names())


def availability() -> dict[str, str | None]:
    """Each runtime's name mapped to ``None`` (usable) or the reason it is not."""
    return {r.name: r.available() for r in RUNTIMES}


def check_options(runtime: Runtime, options: Mapping[str, str]) -> dict[str, str]:
    """Validate knob names and values; return them merged over the defaults."""
    merged = dict(runtime.defaults)
    for key, value in options.items():
        if key not in runtime.options:
            raise UnknownNameError(f"{runtime.name} option", key, sorted(runtime.options))
        valid = runtime.options[key]
        if valid and value not in valid:
            raise UnknownNameError(f"value for {runtime.name} option {key}", value, valid)
        if not valid and not (value.isdigit() and int(value) >= 0):
            raise UsageError(f"{runtime.name} option {key} wants a whole number, got {value!r}")
        merged[key] = value
    return merged
