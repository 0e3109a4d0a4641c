"""Models whose weights live beside the .onnx (how models past protobuf's 2 GB ship):
their variants build from those weights, are cached with external data of their own,
and every file of them reaches a Triton repository."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from optiserve.emit.triton import model_files
from optiserve.errors import ModelError
from optiserve.models.builders import build_encoder
from optiserve.models.graph import external_data_files, inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.types import Precision
from optiserve.variants.build import build_variant
from optiserve.variants.cache import VariantCache
from optiserve.variants.recipe import VariantRecipe


def _external(model: onnx.ModelProto, folder: Path, name: str, threshold: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{name}.weights",
        size_threshold=threshold,
    )
    return path


def _locations(path: Path) -> set[str]:
    return {f.name for f in external_data_files(onnx.load(str(path), load_external_data=False), path.parent)}


def _outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return list(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds))


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.INT8_DYNAMIC, Precision.INT8_STATIC, Precision.INT4])
def test_variants_of_an_external_data_model_carry_their_own_data(
    mlp_path: Path, tmp_path: Path, precision: Precision
) -> None:
    if precision is Precision.INT4:  # weight-only MatMul: needs a transformer (its Reshape shapes stay inline)
        src = _external(
            build_encoder(layers=1, hidden=64, heads=2, ffn=128, vocab=512, seq=16), tmp_path / "m", "m", 256
        )
    else:
        src = _external(onnx.load(str(mlp_path)), tmp_path / "m", "m")
    assert _locations(src) == {"m.weights"} and src.stat().st_size < 20_000  # the weights are not inline
    info = inspect_model(src)

    def calibration() -> Iterable[dict[str, np.ndarray]]:
        return (make_inputs(info, 8, seed=i) for i in range(4))

    cache = VariantCache(tmp_path / "cache")
    v = build_variant(src, info.sha256, VariantRecipe(precision), cache, calibration)
    data = v.path.with_name(f"{v.key}.onnx.data")
    assert v.files == (v.path, data) and all(f.is_file() for f in v.files)
    assert _locations(v.path) == {data.name}
    # the entry is whole, data file included: reused
    assert build_variant(src, info.sha256, VariantRecipe(precision), cache, calibration).cache_hit

    # shipped the way emit ships it: every file under its own name, in a fresh folder
    shipped = tmp_path / "repo" / "1"
    shipped.mkdir(parents=True)
    for rel, f in model_files(v.path).items():
        shutil.copyfile(f, shipped / rel)
    assert sorted(p.name for p in shipped.iterdir()) == sorted(["model.onnx", data.name])
    feeds = make_inputs(info, 4, seed=7)
    ref, out = _outputs(src, feeds)[0], _outputs(shipped / "model.onnx", feeds)[0]
    rel_l2 = float(np.linalg.norm(ref - out) / np.linalg.norm(ref))
    assert rel_l2 < 0.3, rel_l2


def test_model_files_ship_a_models_own_data_and_name_what_is_missing(mlp_path: Path, tmp_path: Path) -> None:
    src = _external(onnx.load(str(mlp_path)), tmp_path / "model", "m")
    assert model_files(src) == {"model.onnx": src, "m.weights": src.parent / "m.weights"}
    assert model_files(mlp_path) == {"model.onnx": mlp_path}
    (src.parent / "m.weights").unlink()
    with pytest.raises(ModelError, match=r"keeps weights in m\.weights, which is missing"):
        model_files(src)
