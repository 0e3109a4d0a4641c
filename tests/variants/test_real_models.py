"""Variants of real pretrained models (from PyPI wheels installed with ``--no-deps``;
located with ``find_spec``, never imported; a missing wheel skips with its name).

They cover what toy graphs do not: opset 11/12 graphs (per-channel QDQ needs 13),
``Resize`` and ``Cast`` nodes next to fp16 math (the converter once looped for
minutes on them), a BatchNormalization variance beyond fp16's range (PP-OCRv4
det), ``If`` subgraphs and a 0-d int64 input (silero VAD).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from optiserve.models.graph import model_sha256
from optiserve.types import Precision
from optiserve.variants.build import Variant, build_variant
from optiserve.variants.cache import VariantCache
from optiserve.variants.recipe import VariantRecipe

Feeds = dict[str, np.ndarray]


def _image(shape: tuple[int, ...]) -> Callable[[int], Feeds]:
    def make(seed: int) -> Feeds:
        return {"x": np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)}

    return make


def _page(seed: int) -> Feeds:
    """A 96x96 page of bitmap-glyph text lines, ImageNet-normalised as PaddleOCR's det feeds it:
    on noise its text map is ~1e-5 everywhere, a tail where fp16 has no digits left to compare."""
    rng = np.random.default_rng(seed)
    img = np.full((96, 96), 0.95, np.float32)
    y = int(rng.integers(8, 14))
    while y < 88:
        x, end = int(rng.integers(2, 10)), int(rng.integers(50, 92))
        while x < end:
            img[y : y + 7, x : x + 5][rng.random((7, 5)) < 0.45] = 0.05
            x += 6 + (3 if rng.random() < 0.2 else 0)
        y += int(rng.integers(12, 18))
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    rgb = (np.repeat(img[:, :, None], 3, axis=2) - mean) / std
    return {"x": rgb.transpose(2, 0, 1)[None].astype(np.float32)}


def _vad(seed: int) -> Feeds:
    t = np.arange(512) / 16000
    tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * np.random.default_rng(seed).standard_normal(512)
    return {
        "input": tone[None].astype(np.float32),
        "state": np.zeros((2, 1, 128), np.float32),
        "sr": np.array(16000, np.int64),
    }


@dataclass(frozen=True)
class Real:
    package: str
    file: str
    opset: int
    feeds: Callable[[int], Feeds]


REAL = {
    "ppocr-cls": Real(
        "rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", 11, _image((1, 3, 48, 192))
    ),
    "ppocr-rec": Real("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", 12, _image((1, 3, 48, 192))),
    "ppocr-det": Real("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", 12, _page),
    "ddddocr-det": Real(
        "ddddocr",
        "common_det.onnx",
        11,
        lambda s: {"images": np.random.default_rng(s).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)},
    ),
    "ddddocr-ocr": Real(
        "ddddocr",
        "common.onnx",
        12,
        lambda s: {"input1": np.random.default_rng(s).uniform(-1, 1, (1, 1, 64, 192)).astype(np.float32)},
    ),
    "silero-vad": Real("silero_vad", "data/silero_vad_16k_op15.onnx", 15, _vad),
}


@pytest.fixture
def real(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Real, Path]:
    """A private copy of the wheel's model (so a stray write beside it would show)."""
    m = REAL[request.param]
    spec = importlib.util.find_spec(m.package)
    src = Path(spec.submodule_search_locations[0]) / m.file if spec and spec.submodule_search_locations else None
    if src is None or not src.is_file():
        pytest.skip(f"{m.package} wheel not installed (pip install --no-deps it): no {request.param} model")
    dst = tmp_path / "model" / src.name
    dst.parent.mkdir()
    shutil.copyfile(src, dst)
    return m, dst


def _build(m: Real, path: Path, precision: Precision, cache_dir: Path, batches: int = 2) -> Variant:
    def calibration() -> Iterable[Feeds]:
        return (m.feeds(i) for i in range(batches))

    # a guard, not a timing: each builds in seconds; the looping converter took minutes
    return build_variant(path, model_sha256(path), VariantRecipe(precision), VariantCache(cache_dir), calibration, 120)


def _agreement(src: Path, variant: Path, feeds: Feeds) -> list[tuple[float, float]]:
    """(relative L2 error, cosine) of each float output of the variant against fp32."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    ref = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    out = ort.InferenceSession(str(variant), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    res = []
    for r, o in zip(ref, out, strict=True):
        if r.dtype.kind != "f":
            continue
        a, b = r.astype(np.float64).ravel(), o.astype(np.float64).ravel()
        res.append(
            (float(np.linalg.norm(a - b) / np.linalg.norm(a)), float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
        )
    return res


@pytest.mark.parametrize("real", list(REAL), indirect=True)
def test_fp16_of_real_models_builds_runs_and_agrees(real: tuple[Real, Path], tmp_path: Path) -> None:
    m, src = real
    v = _build(m, src, Precision.FP16, tmp_path / "cache")
    graph = onnx.load(str(v.path))
    casts = sum(n.op_type == "Cast" for n in graph.graph.node)
    before = sum(n.op_type == "Cast" for n in onnx.load(str(src)).graph.node)
    assert casts - before < 40, (before, casts)  # a cast per fp32 island edge, not thousands
    consts = [
        *graph.graph.initializer,
        *(a.t for n in graph.graph.node if n.op_type == "Constant" for a in n.attribute),
    ]
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in consts)  # paddle2onnx keeps weights in Constants
    for rel_l2, cosine in _agreement(src, v.path, m.feeds(99)):
        assert rel_l2 < 0.05 and cosine > 0.999, (rel_l2, cosine)
    assert os.listdir(src.parent) == [src.name]


@pytest.mark.parametrize("real", ["ppocr-cls", "ddddocr-det", "ddddocr-ocr"], indirect=True)
def test_int8_dynamic_on_opset_11_and_12(real: tuple[Real, Path], tmp_path: Path) -> None:
    m, src = real
    v = _build(m, src, Precision.INT8_DYNAMIC, tmp_path / "cache")
    assert {"DynamicQuantizeLinear"} & {n.op_type for n in onnx.load(str(v.path)).graph.node}
    for _rel_l2, cosine in _agreement(src, v.path, m.feeds(99)):
        assert cosine > 0.98, cosine


@pytest.mark.parametrize("real", ["ppocr-cls", "ddddocr-det"], indirect=True)
def test_int8_static_upgrades_opset_11_to_13_for_per_channel_qdq(
    real: tuple[Real, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m, src = real
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # ORT's calibrator and pre-processing leave nothing here
    v = _build(m, src, Precision.INT8_STATIC, tmp_path / "cache")
    assert f"opset {m.opset} upgraded to 13" in v.method and "per-channel" in v.method, v.method
    graph = onnx.load(str(v.path))
    assert any(o.version >= 13 for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    assert any(a.name == "axis" for n in graph.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute)
    for _rel_l2, cosine in _agreement(src, v.path, m.feeds(99)):
        assert cosine > 0.98, cosine
    assert os.listdir(cwd) == [] and os.listdir(src.parent) == [src.name]
