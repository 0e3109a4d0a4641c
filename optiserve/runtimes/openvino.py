"""Intel OpenVINO on its CPU plugin: a second CPU runtime, with the knobs people tune.

OpenVINO reads the ONNX model directly (or OpenVINO IR, ``.xml`` with its
``.bin``) and compiles it for the CPU. ``threads`` is ``INFERENCE_NUM_THREADS``.
The inference precision follows the ``Precision`` asked for and is always set
explicitly: on a CPU with AMX or AVX512_BF16 the plugin's default is bf16, so an
unset hint would time bf16 and call it fp32. bf16 and fp16 run from the fp32
model (the plugin converts); int8 runs from an NNCF variant (``variant_toolkit``).
Needs ``pip install 'optiserve[openvino]'``; nothing is imported until used.

``serve --instances N`` runs on ``load_instances``: one compiled model with N
streams and N infer requests (``InferRequests``), not N compilations.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from optiserve._reasons import one_line
from optiserve.errors import ModelError, UsageError
from optiserve.runtimes.base import NamedIO
from optiserve.runtimes.options import check_options
from optiserve.types import InputLayout, Precision

INSTALL_HINT = "pip install 'optiserve[openvino]'"
# Precision -> (the plugin's inference precision, the CPU capability it needs)
_APPLIED: dict[Precision, tuple[str, str]] = {
    Precision.FP32: ("f32", "FP32"),
    Precision.BF16: ("bf16", "BF16"),
    Precision.FP16: ("f16", "FP16"),
}
_HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}


def inference_precision(precision: str) -> str:
    """The CPU plugin's ``INFERENCE_PRECISION_HINT`` for a planned precision: f32 for fp32 and
    the int8 variants (their float parts run in f32), else the precision's own."""
    applied = _APPLIED.get(Precision(precision))
    return applied[0] if applied else "f32"


@functools.lru_cache(maxsize=1)
def cpu_capabilities() -> frozenset[str]:
    """What the CPU plugin says this CPU can compute in (``BF16``, ``FP16``, ``INT8``...)."""
    import openvino as ov

    return frozenset(str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def compile_config(precision: Precision, threads: int, opts: Mapping[str, str]) -> dict[str, str]:
    """The CPU plugin's properties for these checked options (the strings ``compile_model`` takes)."""
    config = {
        "PERFORMANCE_HINT": _HINTS[opts["performance_hint"]],
        "INFERENCE_NUM_THREADS": str(threads),
        "INFERENCE_PRECISION_HINT": _APPLIED.get(precision, ("f32", ""))[0],  # int8: the rest stays f32
        "ENABLE_CPU_PINNING": "YES" if opts["cpu_pinning"] == "on" else "NO",
        "ENABLE_HYPER_THREADING": "YES" if opts["hyper_threading"] == "on" else "NO",
    }
    if opts["num_streams"] != "0":  # 0: as many as the performance hint picks
        config["NUM_STREAMS"] = opts["num_streams"]
    return config


class OpenVinoSession(NamedIO):
    """One compiled model and one infer request: ``run`` is one synchronous ``infer``."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled  # the server makes an AsyncInferQueue over it
        self._request = compiled.create_infer_request()
        self._inputs = tuple(p.get_any_name() for p in compiled.inputs)
        self._outputs = tuple(p.get_any_name() for p in compiled.outputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        # outputs are copied out of the request (share_outputs=False): the next run reuses its buffers
        result = self._request.infer(dict(feeds), share_inputs=True, share_outputs=False)
        return [np.asarray(result[port]) for port in self.compiled.outputs]

    def close(self) -> None:
        self._request = None
        self.compiled = None


class OpenVinoCPU:
    """``openvino`` on the ``CPU`` device.

    ``num_streams`` 0 lets the performance hint choose; more streams trade latency for
    throughput (each stream runs its own requests on ``threads / streams`` cores).
    """

    name = "openvino"
    description = "Intel OpenVINO, CPU plugin"
    device = "cpu"
    variant_toolkit = "nncf"
    options: Mapping[str, tuple[str, ...]] = {
        "performance_hint": tuple(_HINTS),
        "num_streams": (),
        "cpu_pinning": ("on", "off"),
        "hyper_threading": ("on", "off"),
    }
    defaults: Mapping[str, str] = {
        "performance_hint": "latency",
        "num_streams": "0",
        "cpu_pinning": "off",
        "hyper_threading": "off",
    }
    variant_precisions = frozenset({Precision.INT8_STATIC, Precision.INT8_DYNAMIC, Precision.INT4})

    def available(self) -> str | None:
        try:
            import openvino as ov
        except ImportError as exc:
            return f"openvino is not installed ({exc}); {INSTALL_HINT}"
        try:
            devices = ov.Core().available_devices
        except Exception as exc:
            return f"openvino could not list its devices: {one_line(exc)}"
        return None if "CPU" in devices else f"openvino has no CPU plugin here (devices: {', '.join(devices)})"

    def supports(self, precision: Precision) -> bool:
        """int8 always; fp32 always; bf16/fp16 only where this CPU computes in them (else
        the plugin would quietly run f32 and the row would lie)."""
        if precision in self.variant_precisions or precision is Precision.FP32:
            return True
        if precision not in _APPLIED:
            return False
        try:
            return _APPLIED[precision][1] in cpu_capabilities()
        except Exception:  # openvino missing or broken: say what the back end can do at all
            return True

    def versions(self) -> dict[str, str]:
        import openvino as ov

        return {"openvino": str(ov.get_version())}

    def load(
        self,
        model: Path,
        precision: Precision,
        threads: int,
        options: Mapping[str, str],
        *,
        layout: InputLayout | None = None,  # the CPU plugin compiles dynamic shapes
    ) -> OpenVinoSession:
        opts = check_options(self, options)  # before openvino sees anything
        if not self.supports(precision):
            raise UsageError(f"{self.name} does not run precision {precision} on this CPU")
        if threads < 1:
            raise UsageError(f"threads must be at least 1, got {threads}")
        try:
            import openvino as ov
        except ImportError as exc:
            raise UsageError(f"{self.name} needs openvino ({exc}); {INSTALL_HINT}") from None
        core = ov.Core()
        try:
            compiled = core.compile_model(core.read_model(str(model)), "CPU", compile_config(precision, threads, opts))
        except Exception as exc:
            raise ModelError(f"openvino could not load {model}: {one_line(exc)}") from None
        return OpenVinoSession(compiled)


class InferRequests:
    """``size`` infer requests on one compiled model: what ``serve --instances N`` runs.

    Worker ``i`` of the server's batcher drives request ``i`` (``runs()[i]``), so N
    batches are in the plugin at once, one per stream, from one compilation. Not
    ``AsyncInferQueue``: a failed job there never calls back (its caller would hang)
    and its error is raised by the *next*, unrelated ``start_async``; a request of
    our own raises its error to the batch that caused it, and the GIL is released
    while it runs. ``peak`` counts the most requests ever running at once: the
    evidence (no clock involved) that instances really overlap."""

    def __init__(self, session: OpenVinoSession, size: int) -> None:
        self.session, self.size = session, size
        self._requests = [session.compiled.create_infer_request() for _ in range(size)]
        self._lock = threading.Lock()
        self.busy = self.peak = 0

    def runs(self) -> list[Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]]:
        return [functools.partial(self._run, r) for r in self._requests]

    def _run(self, request: Any, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            self.busy += 1
            self.peak = max(self.peak, self.busy)
        try:  # outputs copied out (share_outputs=False): the request reuses its buffers
            result = request.infer(dict(feeds), share_inputs=True, share_outputs=False)
            return [np.asarray(result[port]) for port in self.session.compiled.outputs]
        finally:
            with self._lock:
                self.busy -= 1

    def describe(self) -> dict[str, Any]:
        """What the server's metadata says of its runtime (``parameters``)."""
        compiled = self.session.compiled
        return {
            "runtime": "openvino",
            "compiled_models": 1,
            "infer_requests": self.size,
            "streams": int(compiled.get_property("NUM_STREAMS")),
            "inference_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "peak_concurrent_infers": self.peak,
        }


def load_instances(
    model: Path, precision: Precision, threads: int, instances: int, *, layout: InputLayout | None = None
) -> InferRequests:
    """``instances`` infer requests over one compilation with ``instances`` streams of
    ``threads`` threads each: the cores N Triton instances of ``threads`` would have
    (``emit``'s config: one stream of ``threads`` per instance), compiled once."""
    if instances < 1:
        raise UsageError(f"instances must be at least 1, got {instances}")
    opts = {"num_streams": str(instances)}
    session = OpenVinoCPU().load(model, precision, threads * instances, opts, layout=layout)
    return InferRequests(session, instances)
