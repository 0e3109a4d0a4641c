"""NNCF variants for OpenVINO: built from the same calibration, cached by content, gated like ORT's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from optiserve.errors import VariantError
from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.models.layout import infer_layout
from optiserve.models.zoo import build_zoo
from optiserve.profile.store import load_profile
from optiserve.runtimes.openvino import OpenVinoCPU
from optiserve.types import Precision, Status
from optiserve.variants.calibration import build_from_recipe, recipe_for
from optiserve.variants.recipe import VariantRecipe
from tests.conftest import profile_cli

pytest.importorskip("nncf", reason="nncf is not installed: pip install 'optiserve[openvino]'")


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo_enc")
    build_zoo(out, ["encoder"])
    return out / "encoder.onnx"


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_ort_recipes_keep_their_keys() -> None:
    """The toolkit joins the identity only when it is not ORT's: existing profiles' keys do not move."""
    ort = recipe_for(Precision.INT8_STATIC)
    ov = recipe_for(Precision.INT8_STATIC, toolkit="nncf")
    assert "toolkit" not in ort.identity() and ov.identity()["toolkit"] == "nncf"
    assert VariantRecipe.from_identity(Precision.INT8_STATIC, ov.identity()) == ov
    assert ort.cache_key("m", {}) != ov.cache_key("m", {})


def test_nncf_int8_static_builds_caches_and_runs_close(mlp_path: Path, tmp_path: Path) -> None:
    info = inspect_model(mlp_path)
    layout = infer_layout(info)
    recipe = recipe_for(Precision.INT8_STATIC, toolkit="nncf")
    built = build_from_recipe(mlp_path, info, layout, recipe, cache_dir=tmp_path)
    assert not built.cache_hit and built.method.startswith("nncf quantize int8")
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(built.path)
    again = build_from_recipe(mlp_path, info, layout, recipe, cache_dir=tmp_path)
    assert again.cache_hit and again.key == built.key
    ort = build_from_recipe(mlp_path, info, layout, recipe_for(Precision.INT8_STATIC), cache_dir=tmp_path)
    assert ort.key != built.key and ort.method.startswith("onnxruntime")  # each runtime its own quantiser
    feeds = make_inputs(info, 8, seed=7)
    rt = OpenVinoCPU()
    ref = rt.load(mlp_path, Precision.FP32, 1, {}).run(feeds)[0]
    out = rt.load(built.path, Precision.INT8_STATIC, 1, {}).run(feeds)[0]
    assert float(np.abs(out - ref).max()) < 5e-2 * float(np.abs(ref).max())


def test_weight_compression_is_for_matmul_graphs(mlp_path: Path, encoder_path: Path, tmp_path: Path) -> None:
    info = inspect_model(encoder_path)
    layout = infer_layout(info)
    int8 = build_from_recipe(
        encoder_path, info, layout, recipe_for(Precision.INT8_DYNAMIC, toolkit="nncf"), None, tmp_path
    )
    int4 = build_from_recipe(encoder_path, info, layout, recipe_for(Precision.INT4, toolkit="nncf"), None, tmp_path)
    assert "INT8_ASYM" in int8.method and "INT4_SYM" in int4.method and int8.key != int4.key
    assert "DequantizeLinear" in _ops(int8.path) and "MatMulNBits" in _ops(int4.path)
    feeds = make_inputs(info, 2, seed=3)
    rt = OpenVinoCPU()
    ref = rt.load(encoder_path, Precision.FP32, 1, {}).run(feeds)[0]
    out = rt.load(int8.path, Precision.INT8_DYNAMIC, 1, {}).run(feeds)[0]
    assert float(np.abs(out - ref).max()) < 5e-2 * float(np.abs(ref).max())
    mlp = inspect_model(mlp_path)
    with pytest.raises(VariantError, match="MatMul"):
        build_from_recipe(mlp_path, mlp, infer_layout(mlp), recipe_for(Precision.INT4, toolkit="nncf"), None, tmp_path)


def test_profile_sweeps_both_cpu_runtimes_with_each_quantiser_and_the_gate(regress_path: Path, tmp_path: Path) -> None:
    """A regression output (no task metric hides the drift): both int8 rows are judged and refused."""
    proc = profile_cli(
        regress_path,
        tmp_path / "p",
        "--runtime",
        "onnxruntime-cpu,openvino",
        "--precision",
        "fp32,int8-static",
        "--batch",
        "1",
        "--option",
        "num_streams=1",  # openvino's knob: ORT is swept without it
        "--max-accuracy-drop",
        "0",
        "--cache-dir",
        str(tmp_path / "cache"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {(m.config.runtime, m.config.precision): m for m in load_profile(tmp_path / "p").measurements}
    assert set(rows) == {
        (r, p) for r in ("onnxruntime-cpu", "openvino") for p in (Precision.FP32, Precision.INT8_STATIC)
    }
    for m in rows.values():
        assert m.status is Status.OK, m.error
    assert dict(rows[("openvino", Precision.FP32)].config.options) == {"num_streams": "1"}
    ov8, ort8 = rows[("openvino", Precision.INT8_STATIC)], rows[("onnxruntime-cpu", Precision.INT8_STATIC)]
    assert ov8.variant["method"].startswith("nncf") and ort8.variant["method"].startswith("onnxruntime")
    assert dict(ov8.config.variant)["toolkit"] == "nncf"
    for m in (ov8, ort8):  # the same accuracy judgement and gate for both quantisers
        assert m.accuracy is not None and m.accuracy.drop > 0 and m.within_tolerance is False
        assert m.accuracy.drop_metric == "relative-l2"
    assert rows[("openvino", Precision.FP32)].within_tolerance is True
