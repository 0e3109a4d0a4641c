"""The offline model zoo: names, builders, and resolving a MODEL argument to a file.

Building is deterministic: the same seed and library versions give byte-equal
files, so a model's SHA-256 identifies it across machines.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import onnx

from optiserve.errors import ModelError, UnknownNameError
from optiserve.models.builders import build_cnn, build_encoder, build_mlp
from optiserve.models.onnx_zoo import LIGHT_MODELS, build_light


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    build: Callable[[int], onnx.ModelProto]
    demo: bool  # built by default


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("mlp", "tabular MLP 64-256-256-10", build_mlp, True),
        ZooEntry("cnn", "ResNet-18-style CNN at half width, 3x224x224", build_cnn, True),
        ZooEntry("encoder", "BERT-style encoder, 4 layers, hidden 256, seq 128", build_encoder, True),
        *(ZooEntry(n, d, partial(build_light, n), False) for n, d in LIGHT_MODELS.items()),
    )
}

DEFAULT_MODEL_DIR = Path("models")


def save_atomic(model: onnx.ModelProto, path: Path) -> None:
    """Write next to the target, then rename: a crash never leaves half a model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_zoo(out: Path, names: list[str] | None = None, seed: int = 0, force: bool = False) -> list[Path]:
    """Build the named models (default: the demo set) into ``out``; skip existing ones."""
    names = names or [n for n, e in ZOO.items() if e.demo]
    for n in names:
        if n not in ZOO:
            raise UnknownNameError("model", n, list(ZOO))
    paths = []
    for n in names:
        path = Path(out) / f"{n}.onnx"
        if force or not path.exists():
            save_atomic(ZOO[n].build(seed), path)
        paths.append(path)
    return paths


def resolve_model(arg: str, model_dir: Path = DEFAULT_MODEL_DIR) -> Path:
    """A MODEL argument is a path to an ONNX file, a zoo name built on demand, or an MLflow
    ``models:/NAME/VERSION`` (``$MLFLOW_TRACKING_URI``'s registry; downloaded, digest checked)."""
    if arg.startswith("models:/"):
        from optiserve._mlflow import resolve_models_uri

        return resolve_models_uri(arg, os.environ.get("MLFLOW_TRACKING_URI"))
    p = Path(arg)
    if p.exists() or p.suffix == ".onnx" or os.sep in arg:
        if not p.exists():
            raise ModelError(f"model file not found: {p}")
        return p
    if arg in ZOO:
        return build_zoo(model_dir, [arg])[0]
    raise ModelError(f"model {arg!r} is neither a file nor a zoo model; zoo models: {', '.join(ZOO)}")
