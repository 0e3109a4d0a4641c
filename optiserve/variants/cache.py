"""A content-addressed cache of built variants.

An entry is ``<key>.onnx``, the external-data files it names (``<key>.onnx.data``
for a model too big for one protobuf), and ``<key>.json`` (how it was built and
which files it has). A build runs in a scratch folder ``.<key>.<random>/`` that
is removed however the build ends; its files are renamed into place, model files
first, metadata last: an entry counts only when its metadata and every file it
lists exist, so a build killed half way is never reused, it is rebuilt. A scratch
folder whose owner died without removing it (killed with SIGKILL, or its machine
lost power) carries the owner's pid and is swept by the next build.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

OWNER = "owner"  # in a scratch folder: "<pid> <host>" of the process building there
ORPHAN_AGE_S = 600.0  # a scratch folder with no readable owner this old is dead
FOREIGN_AGE_S = 86400.0  # one owned by another host (a shared cache) is dead after a day


def default_cache_dir() -> Path:
    """``$OPTISERVE_CACHE``, else ``$XDG_CACHE_HOME/optiserve``, else ``~/.cache/optiserve``."""
    if os.environ.get("OPTISERVE_CACHE"):
        return Path(os.environ["OPTISERVE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "optiserve"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _dead_scratch(folder: Path, now: float) -> bool:
    try:
        age = now - folder.stat().st_mtime
    except OSError:
        return False
    try:
        pid_text, _, host = (folder / OWNER).read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return age > ORPHAN_AGE_S  # the owner may be about to write its marker
    if host and host != socket.gethostname():
        return age > FOREIGN_AGE_S
    return not _alive(pid)


class VariantCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.dir = self.root / "variants"

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.dir / f"{key}.onnx", self.dir / f"{key}.json"

    def files(self, key: str, meta: dict[str, Any]) -> tuple[Path, ...]:
        """Every file of an entry, its ``.onnx`` first (entries from before external data: just that)."""
        names = meta.get("files") or [f"{key}.onnx"]
        return tuple(self.dir / str(n) for n in names)

    def get(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        model, meta_path = self.paths(key)
        if not (model.exists() and meta_path.exists()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(meta, dict) or not all(f.exists() for f in self.files(key, meta)):
            return None
        return model, meta

    def put(self, key: str, build: Callable[[Path, Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
        """Run ``build(model_path, work_dir) -> metadata`` in a scratch folder, then publish.

        ``build`` writes the model to ``model_path`` and may write external-data files
        named ``<key>.onnx.*`` beside it; ``work_dir`` is for anything else (removed after).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sweep()
        scratch = Path(tempfile.mkdtemp(dir=self.dir, prefix=f".{key}."))
        try:
            (scratch / OWNER).write_text(f"{os.getpid()} {socket.gethostname()}\n")
            out, work = scratch / "out", scratch / "work"
            out.mkdir()
            work.mkdir()
            tmp_model = out / f"{key}.onnx"
            meta = build(tmp_model, work)
            if not tmp_model.is_file():
                raise FileNotFoundError(f"variant build wrote no {tmp_model.name}")
            extra = sorted(p for p in out.iterdir() if p != tmp_model)
            bad = [p.name for p in extra if not p.is_file() or not p.name.startswith(f"{key}.onnx.")]
            if bad:
                raise ValueError(f"variant build wrote files an entry cannot hold: {', '.join(bad)}")
            meta = {**meta, "files": [tmp_model.name, *(p.name for p in extra)]}
            for p in extra:  # data before the graph that names it, the metadata last
                os.replace(p, self.dir / p.name)
            model, meta_path = self.paths(key)
            os.replace(tmp_model, model)
            tmp_meta = scratch / "meta.json"
            tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True))
            os.replace(tmp_meta, meta_path)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return model, meta

    def sweep(self) -> list[str]:
        """Remove the scratch folders of builds whose process is gone; their names."""
        if not self.dir.exists():
            return []
        now, gone = time.time(), []
        for folder in self.dir.glob(".*"):
            if folder.is_dir() and _dead_scratch(folder, now):
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(folder.name)
        return gone

    def entries(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json")) if self.dir.exists() else []
