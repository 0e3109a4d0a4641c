"""Native TensorRT: parse the ONNX file, build an engine, run it on explicit device
buffers on one stream, and time host-to-device, compute and device-to-host with
CUDA events, as trtexec reports them.

The engine is built once per (model digest, precision, optimisation profile, GPU,
TensorRT version) and cached as a serialized plan, with the timing cache beside
it; the build time is what the profiler records as the config's load time.
``builder_settings`` is a pure function of the precision and shapes, so the
configuration each precision produces is tested without a GPU. Device memory
and events come from CuPy (``pip install 'optiserve[gpu]'``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from optiserve._imports import missing_reason, optional_import
from optiserve.errors import ModelError, UsageError
from optiserve.runtimes.base import NamedIO
from optiserve.runtimes.gpu import (
    engine_dir,
    engine_key,
    gpu_layout,
    gpu_names,
    no_gpu_reason,
    profile_shapes,
    static_inputs,
)
from optiserve.runtimes.options import check_options
from optiserve.types import InputLayout, Precision


def builder_settings(
    precision: Precision, shapes: Mapping[str, tuple[tuple[int, ...], ...]], workspace_mb: int
) -> dict[str, Any]:
    """What the builder is told for a precision: flags, workspace, optimisation profile."""
    flags = {
        Precision.FP32: [],
        Precision.FP16: ["FP16"],
        Precision.BF16: ["BF16"],
        Precision.INT8_STATIC: ["INT8", "FP16"],  # QDQ graph: explicit scales; fp16 where not quantised
    }.get(precision)
    if flags is None:
        raise UsageError(f"tensorrt does not build {precision} engines")
    return {"flags": flags, "workspace_bytes": workspace_mb * 2**20, "profile": dict(shapes)}


class TensorRTSession(NamedIO):
    def __init__(self, engine: Any, trt: Any, cupy: Any) -> None:
        self._engine, self._trt, self._cp = engine, trt, cupy
        self._ctx = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self._inputs = tuple(n for n in names if engine.get_tensor_mode(n) == mode)
        self._outputs = tuple(n for n in names if engine.get_tensor_mode(n) != mode)
        self._dtype = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._stream = cupy.cuda.Stream(non_blocking=True)
        self._dev: dict[str, Any] = {}
        self._events = [cupy.cuda.Event() for _ in range(4)]
        self._stages = (0, 0, 0)

    def _buffer(self, name: str, shape: tuple[int, ...]) -> Any:
        buf = self._dev.get(name)
        if buf is None or buf.shape != shape:
            buf = self._cp.empty(shape, dtype=self._dtype[name])
            self._dev[name] = buf
            self._ctx.set_tensor_address(name, int(buf.data.ptr))
        return buf

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        e0, e1, e2, e3 = self._events
        s = self._stream
        e0.record(s)
        for name in self._inputs:
            x = np.ascontiguousarray(feeds[name], dtype=self._dtype[name])
            self._ctx.set_input_shape(name, x.shape)
            self._buffer(name, x.shape).set(x, stream=s)
        e1.record(s)
        outs = [self._buffer(n, tuple(self._ctx.get_tensor_shape(n))) for n in self._outputs]
        if not self._ctx.execute_async_v3(s.ptr):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        e2.record(s)
        host = [o.get(stream=s) for o in outs]
        e3.record(s)
        e3.synchronize()
        ms = self._cp.cuda.get_elapsed_time
        self._stages = (int(ms(e0, e1) * 1e6), int(ms(e1, e2) * 1e6), int(ms(e2, e3) * 1e6))
        return host

    def last_stages_ns(self) -> tuple[int, int, int]:
        return self._stages

    def close(self) -> None:
        self._dev.clear()
        self._ctx = None


class TensorRTRuntime:
    name = "tensorrt"
    description = "native TensorRT engine, explicit device buffers, CUDA-event timing"
    device = "gpu"
    options: Mapping[str, tuple[str, ...]] = {"device_id": (), "max_batch": (), "workspace_mb": ()}
    defaults: Mapping[str, str] = {"device_id": "0", "max_batch": "16", "workspace_mb": "4096"}
    variant_precisions = frozenset({Precision.INT8_STATIC})
    variant_toolkit = "onnxruntime"
    native_precisions = frozenset({Precision.FP32, Precision.FP16, Precision.BF16})

    def __init__(self, cache_root: Path | None = None) -> None:
        self.cache_root = cache_root
        self.last_build_s = 0.0

    def available(self) -> str | None:
        return missing_reason("tensorrt", "gpu") or missing_reason("cupy", "gpu") or no_gpu_reason()

    def supports(self, precision: Precision) -> bool:
        return precision in self.native_precisions or precision in self.variant_precisions

    def versions(self) -> dict[str, str]:
        trt = optional_import("tensorrt", "gpu")
        return {"tensorrt": str(trt.__version__)}

    def load(
        self,
        model: Path,
        precision: Precision,
        threads: int,
        options: Mapping[str, str],
        *,
        layout: InputLayout | None = None,
    ) -> TensorRTSession:
        from optiserve.models.graph import inspect_model
        from optiserve.variants.cache import default_cache_dir

        if not self.supports(precision):
            raise UsageError(f"{self.name} does not run precision {precision}")
        opts = check_options(self, options)
        trt = optional_import("tensorrt", "gpu")
        cupy = optional_import("cupy", "gpu")
        cupy.cuda.Device(int(opts["device_id"])).use()
        info = inspect_model(model)
        shapes = profile_shapes(gpu_layout(info, layout), sorted({1, int(opts["max_batch"])}), static_inputs(info))
        settings = builder_settings(precision, shapes, int(opts["workspace_mb"]))
        key = engine_key(
            model=info.sha256,
            precision=precision.value,
            gpu=gpu_names()[:1],
            trt=str(trt.__version__),
            settings=settings,
        )
        folder = engine_dir(self.cache_root or default_cache_dir(), key)
        plan, timing = folder / "engine.plan", folder / "timing.cache"
        logger = trt.Logger(trt.Logger.WARNING)
        t0 = time.perf_counter()
        if not plan.exists():
            blob = self._build(trt, logger, model, settings, timing)
            tmp = plan.with_suffix(".tmp")
            tmp.write_bytes(blob)
            tmp.replace(plan)  # a half-written engine is never loaded
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
        if engine is None:
            raise ModelError(f"TensorRT could not deserialize the cached engine in {folder}")
        self.last_build_s = time.perf_counter() - t0
        return TensorRTSession(engine, trt, cupy)

    @staticmethod
    def _build(trt: Any, logger: Any, model: Path, settings: Mapping[str, Any], timing: Path) -> bytes:
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(model.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelError(f"TensorRT's ONNX parser refused {model}: {errors[:300]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings["workspace_bytes"])
        for flag in settings["flags"]:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if settings["profile"]:  # a graph with every input fixed takes no profile
            profile = builder.create_optimization_profile()
            for name, (lo, opt, hi) in settings["profile"].items():
                profile.set_shape(name, lo, opt, hi)
            config.add_optimization_profile(profile)
        cache = config.create_timing_cache(timing.read_bytes() if timing.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ModelError(f"TensorRT failed to build an engine for {model} with {settings['flags'] or 'fp32'}")
        timing.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
        return bytes(memoryview(serialized))
