"""ONNX Runtime on the GPU: the CUDA and the TensorRT execution providers.

Both run with IO binding, so host-to-device, compute and device-to-host are
timed as separate stages; CUDA graph capture is an option of the CUDA one (it
needs fixed device addresses, so inputs are updated in place). The TensorRT
provider keeps its engine and timing caches in a folder keyed by model digest,
precision, GPU and library versions. Needs the ``onnxruntime-gpu`` build
(``pip install 'optiserve[gpu]'``); nothing is imported until used.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from optiserve.errors import ModelError, UsageError
from optiserve.runtimes import custom_ops
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


class IoBoundSession(NamedIO):
    """Inputs copied to the device, outputs left there until asked for."""

    def __init__(self, sess: Any, device_id: int, cuda_graph: bool) -> None:
        self._sess = sess
        self._device = device_id
        self._graph = cuda_graph
        self._inputs = tuple(i.name for i in sess.get_inputs())
        self._outputs = tuple(o.name for o in sess.get_outputs())
        self._bound: dict[str, Any] = {}
        self._out: dict[str, Any] = {}
        self._stages = (0, 0, 0)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        import onnxruntime as ort

        pc = time.perf_counter_ns
        t0 = pc()
        io = self._sess.io_binding()
        for name, x in feeds.items():
            held = self._bound.get(name)
            if self._graph and held is not None and tuple(held.shape()) == x.shape:
                held.update_inplace(np.ascontiguousarray(x))  # same device address: the captured graph stays valid
            else:
                held = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), "cuda", self._device)
                self._bound[name] = held
            io.bind_ortvalue_input(name, held)
        for name in self._outputs:
            held_out = self._out.get(name)
            if self._graph and held_out is not None:
                io.bind_ortvalue_output(name, held_out)  # a captured graph writes to fixed addresses
            else:
                io.bind_output(name, "cuda", self._device)
        io.synchronize_inputs()
        t1 = pc()
        self._sess.run_with_iobinding(io)
        io.synchronize_outputs()
        t2 = pc()
        outs: list[np.ndarray] = io.copy_outputs_to_cpu()
        self._stages = (t1 - t0, t2 - t1, pc() - t2)
        if self._graph and not self._out:  # first run: learn the output shapes, then keep device buffers
            self._out = {
                n: ort.OrtValue.ortvalue_from_shape_and_type(o.shape, o.dtype, "cuda", self._device)
                for n, o in zip(self._outputs, outs, strict=True)
            }
        return outs

    def last_stages_ns(self) -> tuple[int, int, int]:
        return self._stages

    def close(self) -> None:
        self._bound.clear()
        self._sess = None


def _ort_gpu_reason(provider: str) -> str | None:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return f"onnxruntime is not installed ({exc})"
    if provider not in ort.get_available_providers():
        return (
            f"this onnxruntime build has no {provider} (it lists {', '.join(ort.get_available_providers())}); "
            "install onnxruntime-gpu: pip install 'optiserve[gpu]'"
        )
    return no_gpu_reason()


class _OrtGpuBase:
    provider = ""
    device = "gpu"
    options: Mapping[str, tuple[str, ...]] = {}
    defaults: Mapping[str, str] = {}
    variant_precisions: frozenset[Precision] = frozenset()
    variant_toolkit = "onnxruntime"
    native_precisions: frozenset[Precision] = frozenset({Precision.FP32})

    def available(self) -> str | None:
        return _ort_gpu_reason(self.provider)

    def supports(self, precision: Precision) -> bool:
        return precision in self.native_precisions or precision in self.variant_precisions

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}

    def provider_options(
        self, model: Path, precision: Precision, options: Mapping[str, str], layout: InputLayout | None = None
    ) -> dict[str, Any]:
        raise NotImplementedError

    def load(
        self,
        model: Path,
        precision: Precision,
        threads: int,
        options: Mapping[str, str],
        *,
        layout: InputLayout | None = None,
    ) -> IoBoundSession:
        import onnxruntime as ort

        if not self.supports(precision):
            raise UsageError(f"{self.name} does not run precision {precision}")  # type: ignore[attr-defined]
        opts = check_options(self, options)  # type: ignore[arg-type]
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        custom_ops.register(so)
        providers = [(self.provider, self.provider_options(model, precision, opts, layout)), "CPUExecutionProvider"]
        try:
            sess = ort.InferenceSession(str(model), so, providers=providers)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"onnxruntime ({self.provider}) could not load {model}: {first}") from None
        if sess.get_providers()[0] != self.provider:
            raise ModelError(f"{self.provider} failed to load; onnxruntime fell back to {sess.get_providers()}")
        return IoBoundSession(sess, int(opts["device_id"]), opts.get("cuda_graph") == "on")


class OnnxRuntimeCUDA(_OrtGpuBase):
    name = "onnxruntime-cuda"
    description = "ONNX Runtime, CUDA execution provider, IO binding"
    provider = "CUDAExecutionProvider"
    options: Mapping[str, tuple[str, ...]] = {"device_id": (), "cuda_graph": ("on", "off")}
    defaults: Mapping[str, str] = {"device_id": "0", "cuda_graph": "off"}
    variant_precisions = frozenset({Precision.FP16, Precision.INT8_STATIC})

    def provider_options(
        self, model: Path, precision: Precision, options: Mapping[str, str], layout: InputLayout | None = None
    ) -> dict[str, Any]:
        return {  # CUDA takes any shape per call: the layout matters only to TensorRT's profiles
            "device_id": int(options["device_id"]),
            "enable_cuda_graph": "1" if options["cuda_graph"] == "on" else "0",
        }


class OnnxRuntimeTensorRT(_OrtGpuBase):
    name = "onnxruntime-tensorrt"
    description = "ONNX Runtime, TensorRT execution provider, cached engines"
    provider = "TensorrtExecutionProvider"
    options: Mapping[str, tuple[str, ...]] = {"device_id": (), "max_batch": (), "workspace_mb": ()}
    defaults: Mapping[str, str] = {"device_id": "0", "max_batch": "16", "workspace_mb": "4096"}
    # fp16 through TensorRT's own flag on the fp32 graph; int8 from the QDQ variant (explicit quantisation)
    native_precisions = frozenset({Precision.FP32, Precision.FP16})
    variant_precisions = frozenset({Precision.INT8_STATIC})

    def __init__(self, cache_root: Path | None = None) -> None:
        self.cache_root = cache_root

    def provider_options(
        self, model: Path, precision: Precision, options: Mapping[str, str], layout: InputLayout | None = None
    ) -> dict[str, Any]:
        """Provider options, the optimisation profile from ``layout`` (else the model's own)."""
        from optiserve.models.graph import inspect_model
        from optiserve.variants.cache import default_cache_dir

        info = inspect_model(model)
        batches = sorted({1, int(options["max_batch"])})
        shapes = profile_shapes(gpu_layout(info, layout), batches, static_inputs(info))
        key = engine_key(
            model=info.sha256, precision=precision.value, gpu=gpu_names()[:1], ort=self.versions(), shapes=shapes
        )
        cache = engine_dir(self.cache_root or default_cache_dir(), key)

        def fmt(k: int) -> str:
            return ",".join(f"{n}:{'x'.join(map(str, s[k]))}" for n, s in shapes.items())

        profile = (
            {
                "trt_profile_min_shapes": fmt(0),
                "trt_profile_opt_shapes": fmt(1),
                "trt_profile_max_shapes": fmt(2),
            }
            if shapes
            else {}  # every input fixed: the engine needs no profile
        )
        return {
            "device_id": int(options["device_id"]),
            "trt_fp16_enable": precision is Precision.FP16,
            "trt_int8_enable": precision is Precision.INT8_STATIC,  # QDQ graph: scales come from the model
            "trt_max_workspace_size": int(options["workspace_mb"]) * 2**20,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            **profile,
        }
