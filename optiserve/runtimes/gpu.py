"""What every GPU back end shares: finding a GPU, and keying cached engines.

Nothing here imports a GPU library at module import time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Protocol, runtime_checkable


def gpu_names() -> list[str]:
    """NVIDIA GPUs as ``nvidia-smi -L`` lists them; empty where there are none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split(":", 1)[1].split("(")[0].strip() for line in out.splitlines() if line.startswith("GPU ")]


def no_gpu_reason() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU: nvidia-smi not found"
    return None if gpu_names() else "no NVIDIA GPU: nvidia-smi lists none"


def engine_key(**parts: object) -> str:
    """Cache key of a built engine: model digest, precision, GPU, versions, shapes."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def engine_dir(cache_root: Path, key: str) -> Path:
    d = Path(cache_root) / "engines" / key
    d.mkdir(parents=True, exist_ok=True)
    return d


@runtime_checkable
class StagedSession(Protocol):
    """A session that can say where the time of its last ``run`` went (ns)."""

    def last_stages_ns(self) -> tuple[int, int, int]:  # host-to-device, compute, device-to-host
        ...


def profile_shapes(
    dims: dict[str, tuple[int | str | None, ...]], batches: list[int]
) -> dict[str, tuple[tuple[int, ...], ...]]:
    """TensorRT optimisation profile (min, opt, max) per input covering ``batches``.
    Only the batch may be dynamic; other dims must be fixed in the graph."""
    lo, hi = min(batches), max(batches)
    opt = sorted(batches)[len(batches) // 2]
    out: dict[str, tuple[tuple[int, ...], ...]] = {}
    for name, d in dims.items():
        rest = d[1:]
        if not all(isinstance(x, int) for x in rest):
            raise ValueError(f"input {name!r} has dynamic dims besides the batch: {list(d)}")
        tail = tuple(int(x) for x in rest)  # type: ignore[arg-type]
        out[name] = ((lo, *tail), (opt, *tail), (hi, *tail))
    return out
