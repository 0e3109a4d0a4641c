"""OpenVINO's own knobs reach the CPU plugin, and its precision is the one asked for."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from optiserve.errors import UsageError
from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.runtimes.openvino import OpenVinoCPU, cpu_capabilities
from optiserve.runtimes.registry import get_runtime
from optiserve.types import Precision

ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install 'optiserve[openvino]'")
RT = OpenVinoCPU()


def _prop(session: object, name: str) -> str:
    value = session.compiled.get_property(name)  # type: ignore[attr-defined]
    return str(value.to_string() if isinstance(value, ov.Type) else value)


def test_fp32_is_f32_even_where_the_plugin_defaults_to_bf16(mlp_path: Path) -> None:
    """On an AMX / AVX512_BF16 CPU the plugin's default is bf16: an fp32 row must not be bf16."""
    session = RT.load(mlp_path, Precision.FP32, 1, {})
    assert _prop(session, "INFERENCE_PRECISION_HINT") == "f32"


@pytest.mark.skipif("BF16" not in cpu_capabilities(), reason="this CPU has no bf16 (AVX512_BF16 / AMX)")
def test_bf16_compiles_in_bf16_and_differs_from_fp32(mlp_path: Path) -> None:
    info = inspect_model(mlp_path)
    feeds = make_inputs(info, 4, seed=1)
    s32, s16 = RT.load(mlp_path, Precision.FP32, 1, {}), RT.load(mlp_path, Precision.BF16, 1, {})
    assert _prop(s16, "INFERENCE_PRECISION_HINT") == "bf16"
    a, b = s32.run(feeds)[0], s16.run(feeds)[0]
    assert not np.array_equal(a, b)  # bf16's 7-bit mantissa shows: it really ran in bf16
    np.testing.assert_allclose(a, b, atol=3e-2 * float(np.abs(a).max()))


def test_bf16_is_unsupported_on_a_cpu_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import optiserve.runtimes.openvino as mod

    monkeypatch.setattr(mod, "cpu_capabilities", lambda: frozenset({"FP32", "INT8"}))
    assert not RT.supports(Precision.BF16) and RT.supports(Precision.INT8_STATIC)
    with pytest.raises(UsageError, match="does not run precision bf16"):
        RT.load(Path("unused.onnx"), Precision.BF16, 1, {})


def test_knobs_reach_the_plugin(mlp_path: Path) -> None:
    opts = {"performance_hint": "throughput", "num_streams": "2", "cpu_pinning": "off"}
    session = RT.load(mlp_path, Precision.FP32, 2, opts)
    assert _prop(session, "PERFORMANCE_HINT") == "THROUGHPUT"
    assert _prop(session, "NUM_STREAMS") == "2"
    assert _prop(session, "INFERENCE_NUM_THREADS") == "2"
    assert _prop(session, "ENABLE_CPU_PINNING") == "False"
    latency = RT.load(mlp_path, Precision.FP32, 1, {})
    assert _prop(latency, "PERFORMANCE_HINT") == "LATENCY" and _prop(latency, "NUM_STREAMS") == "1"


def test_reads_openvino_ir_as_well_as_onnx(mlp_path: Path, tmp_path: Path) -> None:
    core = ov.Core()
    xml = tmp_path / "mlp.xml"
    ov.save_model(core.read_model(str(mlp_path)), str(xml), compress_to_fp16=False)
    feeds = make_inputs(inspect_model(mlp_path), 3, seed=2)
    from_onnx = RT.load(mlp_path, Precision.FP32, 1, {}).run(feeds)
    from_ir = RT.load(xml, Precision.FP32, 1, {}).run(feeds)
    np.testing.assert_allclose(from_ir[0], from_onnx[0], rtol=1e-6, atol=1e-6)


def test_outputs_survive_the_next_run(mlp_path: Path) -> None:
    """The request's output buffers are reused: ``run`` must hand back copies."""
    info = inspect_model(mlp_path)
    session = RT.load(mlp_path, Precision.FP32, 1, {})
    first = session.run(make_inputs(info, 2, seed=1))[0]
    kept = first.copy()
    session.run(make_inputs(info, 2, seed=2))
    np.testing.assert_array_equal(first, kept)


def test_missing_openvino_says_how_to_install(monkeypatch: pytest.MonkeyPatch, mlp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    reason = get_runtime("openvino").available()
    assert reason is not None and "optiserve[openvino]" in reason and "\n" not in reason
    with pytest.raises(UsageError, match=r"optiserve\[openvino\]"):
        RT.load(mlp_path, Precision.FP32, 1, {})


def test_the_emitted_precision_hint_is_the_one_the_runtime_compiles_with() -> None:
    """Triton's openvino config carries the CPU plugin's hint: f16 for an fp16 plan (not f32)."""
    from optiserve.runtimes.openvino import inference_precision

    got = {p: inference_precision(p) for p in ("fp32", "fp16", "bf16", "int8-static", "int8-dynamic")}
    assert got == {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8-static": "f32", "int8-dynamic": "f32"}
