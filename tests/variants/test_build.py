from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from optiserve.errors import UnknownNameError, VariantError
from optiserve.models.builders import build_encoder
from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.models.zoo import save_atomic
from optiserve.types import Precision
from optiserve.variants import build as build_mod
from optiserve.variants.accuracy import compare_outputs
from optiserve.variants.build import build_variant
from optiserve.variants.cache import VariantCache
from optiserve.variants.recipe import VariantRecipe


def _calibration(path: Path) -> build_mod.CalibrationSource:
    info = inspect_model(path)

    def source() -> Iterable[dict[str, np.ndarray]]:
        return (make_inputs(info, 8, seed=i) for i in range(4))

    return source


def _drift(src: Path, variant: Path) -> float:
    info = inspect_model(src)
    feeds = make_inputs(info, 32, seed=99)
    ref = ort.InferenceSession(str(src)).run(None, feeds)
    out = ort.InferenceSession(str(variant)).run(None, feeds)
    return compare_outputs(ref, out).rel_l2_error


@pytest.mark.parametrize(
    "precision,op",
    [
        (Precision.FP16, None),
        (Precision.INT8_DYNAMIC, "MatMulInteger"),
        (Precision.INT8_STATIC, "QuantizeLinear"),
    ],
)
def test_each_precision_builds_runs_and_stays_close(
    mlp_path: Path, tmp_path: Path, precision: Precision, op: str | None
) -> None:
    info = inspect_model(mlp_path)
    v = build_variant(mlp_path, info.sha256, VariantRecipe(precision), VariantCache(tmp_path), _calibration(mlp_path))
    assert not v.cache_hit and v.path.exists() and v.method and v.build_s > 0
    ops = {n.op_type for n in onnx.load(str(v.path)).graph.node}
    if op:
        assert op in ops, ops
    else:
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in onnx.load(str(v.path)).graph.initializer)
    assert _drift(mlp_path, v.path) < 0.1


@pytest.mark.parametrize("calibrator", ["minmax", "entropy", "percentile"])
def test_every_calibrator(mlp_path: Path, tmp_path: Path, calibrator: str) -> None:
    info = inspect_model(mlp_path)
    recipe = VariantRecipe(Precision.INT8_STATIC, calibrator=calibrator)
    v = build_variant(mlp_path, info.sha256, recipe, VariantCache(tmp_path), _calibration(mlp_path))
    assert calibrator in v.method and _drift(mlp_path, v.path) < 0.2


def test_second_build_is_a_cache_hit_that_builds_nothing(
    mlp_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = inspect_model(mlp_path)
    recipe = VariantRecipe(Precision.INT8_DYNAMIC)
    first = build_variant(mlp_path, info.sha256, recipe, VariantCache(tmp_path), _calibration(mlp_path))

    def must_not_build(*args: object) -> str:
        raise AssertionError("rebuilt a cached variant")

    monkeypatch.setitem(build_mod.BUILDERS, Precision.INT8_DYNAMIC, must_not_build)
    again = build_variant(mlp_path, info.sha256, recipe, VariantCache(tmp_path), _calibration(mlp_path))
    assert again.cache_hit and again.path == first.path and again.key == first.key


def test_int4_on_a_transformer(tmp_path: Path) -> None:
    src = tmp_path / "enc.onnx"
    save_atomic(build_encoder(layers=1, hidden=64, heads=2, ffn=128, vocab=512, seq=16), src)
    info = inspect_model(src)
    v = build_variant(src, info.sha256, VariantRecipe(Precision.INT4), VariantCache(tmp_path), _calibration(src))
    assert "MatMulNBits" in {n.op_type for n in onnx.load(str(v.path)).graph.node}
    assert _drift(src, v.path) < 0.3


def test_failures_are_variant_errors(mlp_path: Path, tmp_path: Path) -> None:
    info = inspect_model(mlp_path)
    with pytest.raises(VariantError, match="this graph has none"):  # Gemm-only MLP: no MatMul
        build_variant(
            mlp_path, info.sha256, VariantRecipe(Precision.INT4), VariantCache(tmp_path), _calibration(mlp_path)
        )
    with pytest.raises(VariantError, match="no variant builder"):
        build_variant(
            mlp_path, info.sha256, VariantRecipe(Precision.BF16), VariantCache(tmp_path), _calibration(mlp_path)
        )
    assert VariantCache(tmp_path).entries() == []
    with pytest.raises(UnknownNameError, match="entropy"):
        VariantRecipe(Precision.INT8_STATIC, calibrator="kl")
