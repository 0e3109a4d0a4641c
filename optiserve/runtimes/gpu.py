"""What every GPU back end shares: finding a GPU, and keying cached engines.

Nothing here imports a GPU library at module import time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from optiserve.errors import UsageError
from optiserve.types import InputLayout

if TYPE_CHECKING:
    from optiserve.models.graph import ModelInfo


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
    layout: InputLayout, batches: Sequence[int], static: Collection[str] = ()
) -> dict[str, tuple[tuple[int, ...], ...]]:
    """TensorRT optimisation profile (min, opt, max) per input covering ``batches``.

    Only the batch axis of a batched input varies (``state[2, batch, 128]`` on axis 1);
    every other dim is the layout's resolved size and unbatched inputs are fixed. A
    model that fixes its batch gets that batch alone. Inputs named in ``static`` (fully
    fixed in the graph) get no entry: TensorRT needs profiles only for dynamic inputs,
    and a 0-d int input (a sample rate) would be read as a shape tensor."""
    sizes = [layout.fixed_batch] if layout.fixed_batch is not None else sorted(batches)
    if not sizes:
        raise UsageError("an optimisation profile needs at least one batch size")
    lo, opt, hi = sizes[0], sizes[len(sizes) // 2], sizes[-1]
    return {t.name: (t.at(lo), t.at(opt), t.at(hi)) for t in layout.inputs if t.name not in static}


def static_inputs(info: ModelInfo) -> frozenset[str]:
    """Inputs whose every dim the graph fixes: they need no optimisation profile."""
    return frozenset(i.name for i in info.inputs if all(isinstance(d, int) for d in i.dims))


def gpu_layout(info: ModelInfo, layout: InputLayout | None) -> InputLayout:
    """The layout the profiler passed, else the one the model implies (a runtime
    loaded outside a sweep); raises one line naming a dim that is still unknown."""
    if layout is not None:
        return layout
    from optiserve.models.layout import infer_layout

    return infer_layout(info)
