"""A content-addressed cache of built variants.

An entry is ``<key>.onnx`` plus ``<key>.json`` (how it was built). Both are
written to a temporary name and renamed into place, model first, metadata last:
an entry counts only when its metadata exists, so a build killed half way is
never reused — it is rebuilt.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """``$OPTISERVE_CACHE``, else ``$XDG_CACHE_HOME/optiserve``, else ``~/.cache/optiserve``."""
    if os.environ.get("OPTISERVE_CACHE"):
        return Path(os.environ["OPTISERVE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "optiserve"


class VariantCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.dir = self.root / "variants"

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.dir / f"{key}.onnx", self.dir / f"{key}.json"

    def get(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        model, meta = self.paths(key)
        if model.exists() and meta.exists():
            try:
                return model, json.loads(meta.read_text())
            except (OSError, json.JSONDecodeError):
                return None
        return None

    def put(self, key: str, build: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
        """Run ``build(tmp_model_path) -> metadata`` in a scratch folder, then publish."""
        self.dir.mkdir(parents=True, exist_ok=True)
        model, meta_path = self.paths(key)
        with tempfile.TemporaryDirectory(dir=self.dir, prefix=f".{key}.") as scratch:
            tmp_model = Path(scratch) / "variant.onnx"
            meta = build(tmp_model)
            os.replace(tmp_model, model)
            tmp_meta = Path(scratch) / "meta.json"
            tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True))
            os.replace(tmp_meta, meta_path)
        return model, meta

    def entries(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json")) if self.dir.exists() else []
