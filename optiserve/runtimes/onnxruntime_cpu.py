"""ONNX Runtime on the CPU execution provider, with its real threading and graph knobs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from optiserve.errors import ModelError, UsageError
from optiserve.runtimes import custom_ops
from optiserve.runtimes.base import NamedIO
from optiserve.runtimes.options import check_options
from optiserve.types import InputLayout, Precision

_GRAPH_LEVELS = ("disable", "basic", "extended", "all")


class OrtSession(NamedIO):
    """Thin wrapper: ``run`` is one call into ``InferenceSession.run``, nothing else."""

    def __init__(self, sess: Any) -> None:
        self._sess = sess
        self._inputs = tuple(i.name for i in sess.get_inputs())
        self._outputs = tuple(o.name for o in sess.get_outputs())
        self._out_list = list(self._outputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self._sess.run(self._out_list, feeds)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._sess = None


class OnnxRuntimeCPU:
    """``onnxruntime`` with ``CPUExecutionProvider``.

    ``threads`` is the intra-op pool size (the knob that matters most on CPU);
    ``inter_op_threads`` only matters with ``execution_mode=parallel``.
    """

    name = "onnxruntime-cpu"
    description = "ONNX Runtime, CPU execution provider"
    device = "cpu"
    options: Mapping[str, tuple[str, ...]] = {
        "graph_optimization": _GRAPH_LEVELS,
        "execution_mode": ("sequential", "parallel"),
        "inter_op_threads": (),
        "spinning": ("on", "off"),
    }
    defaults: Mapping[str, str] = {
        "graph_optimization": "all",
        "execution_mode": "sequential",
        "inter_op_threads": "1",
        "spinning": "on",
    }
    # bf16 is absent: the CPU provider has bf16 kernels for almost no ops on x86.
    variant_precisions = frozenset({Precision.FP16, Precision.INT8_DYNAMIC, Precision.INT8_STATIC, Precision.INT4})
    variant_toolkit = "onnxruntime"

    def available(self) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return f"onnxruntime is not installed ({exc})"
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return "onnxruntime has no CPUExecutionProvider in this build"
        return None

    def supports(self, precision: Precision) -> bool:
        return precision is Precision.FP32 or precision in self.variant_precisions

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}

    def session_options(self, threads: int, options: Mapping[str, str]) -> Any:
        import onnxruntime as ort

        opts = check_options(self, options)  # an unknown knob or value is one line, never a KeyError below
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = int(opts["inter_op_threads"])
        so.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if opts["execution_mode"] == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[opts["graph_optimization"]]
        spin = "1" if opts["spinning"] == "on" else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        so.log_severity_level = 3
        custom_ops.register(so)
        return so

    def load(
        self,
        model: Path,
        precision: Precision,
        threads: int,
        options: Mapping[str, str],
        *,
        layout: InputLayout | None = None,  # ONNX Runtime on the CPU takes any shape per call
    ) -> OrtSession:
        import onnxruntime as ort

        if not self.supports(precision):
            raise UsageError(f"{self.name} does not run precision {precision}")
        if threads < 1:
            raise UsageError(f"threads must be at least 1, got {threads}")
        so = self.session_options(threads, options)
        try:
            sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"onnxruntime could not load {model}: {first}") from None
        return OrtSession(sess)
