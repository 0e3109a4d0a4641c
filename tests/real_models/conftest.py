"""Real pretrained ONNX models from PyPI wheels, copied into a session folder.

The wheels (rapidocr-onnxruntime, silero-vad, ddddocr; installed with --no-deps
by the Makefile) are only a way to ship the ONNX files: their packages are never
imported (their ``__init__`` pulls in torch, PIL and more), only located with
``importlib.util.find_spec``. A missing wheel skips its model with the reason.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.real_models.inputs import write_calib_and_eval


@dataclass(frozen=True)
class RealModel:
    key: str  # inputs.BUILDERS key
    name: str  # file stem: the model's name in profiles, plans, URLs and manifests
    package: str
    wheel: str  # pip requirement, for the skip reason
    file: str  # inside the package folder
    shape: tuple[str, ...]  # --shape values
    max_batch: int = 8  # serve --max-batch


REAL_MODELS = {
    "cls": RealModel(
        "cls",
        "ppocr-cls",
        "rapidocr_onnxruntime",
        "rapidocr-onnxruntime==1.4.4",
        "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        ("x=3,48,192",),
    ),
    "rec": RealModel(
        "rec",
        "ppocr-rec",
        "rapidocr_onnxruntime",
        "rapidocr-onnxruntime==1.4.4",
        "models/ch_PP-OCRv4_rec_infer.onnx",
        ("x=3,48,320",),
    ),
    "det": RealModel(
        "det",
        "ppocr-det",
        "rapidocr_onnxruntime",
        "rapidocr-onnxruntime==1.4.4",
        "models/ch_PP-OCRv4_det_infer.onnx",
        ("x=3,96,96",),
    ),
    "vad": RealModel(
        "vad",
        "silero-vad",
        "silero_vad",
        "silero-vad==6.2.3",
        "data/silero_vad_16k_op15.onnx",
        ("sequence=512",),
    ),
    "dddet": RealModel(
        "dddet",
        "ddddocr-det",
        "ddddocr",
        "ddddocr==1.6.1",
        "common_det.onnx",
        (),
        max_batch=1,  # the graph fixes the batch at 1
    ),
}


def package_dir(package: str) -> Path | None:
    """The installed package's folder, without importing it (None when not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def wheel_model(m: RealModel) -> Path:
    """The ONNX file inside the wheel, or skip saying which wheel is missing."""
    root = package_dir(m.package)
    if root is None:
        pytest.skip(f"{m.wheel} is not installed (make installs it with --no-deps): no {m.name} model")
    path = root / m.file
    if not path.is_file():
        pytest.skip(f"{m.wheel} is installed but has no {m.file}")
    return path


@dataclass(frozen=True)
class Prepared:
    model: RealModel
    path: Path  # a private copy: nothing the tests do touches site-packages
    calib: Path
    eval: Path
    folder: Path


@pytest.fixture(scope="session")
def real_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real_models")


@pytest.fixture(scope="session")
def prepare(real_dir: Path):  # type: ignore[no-untyped-def]
    """``prepare(key)``: the model copied into its own folder with its calibration and eval .npz."""
    done: dict[str, Prepared] = {}

    def _prepare(key: str) -> Prepared:
        if key not in done:
            m = REAL_MODELS[key]
            src = wheel_model(m)
            folder = real_dir / m.name
            folder.mkdir(exist_ok=True)
            dst = folder / f"{m.name}.onnx"
            shutil.copyfile(src, dst)
            calib, ev = write_calib_and_eval(folder, key)
            done[key] = Prepared(m, dst, calib, ev, folder)
        return done[key]

    return _prepare
