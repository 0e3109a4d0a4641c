"""Inputs for a model at a batch size: synthesised from the layout, or from a user .npz.

Every dim but the batch must be known: fixed in the graph or given with
``--shape`` (see ``models.layout``). Inputs without a batch axis (scalars,
constants) are passed as given, never tiled.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from optiserve.errors import ModelError, UsageError
from optiserve.models.graph import ModelInfo
from optiserve.models.layout import infer_batch_axes, infer_layout, parse_shape_overrides
from optiserve.types import InputLayout, TensorLayout

__all__ = ["load_npz", "make_inputs", "parse_shape_overrides", "samples_in", "take_rows", "user_shapes"]


def _synth(t: TensorLayout, shape: tuple[int, ...], info: ModelInfo, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(t.dtype)
    bounds = dict(info.gather_bounds)
    lname = t.name.lower()
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        if "mask" in lname:
            return np.ones(shape, dtype=dtype)
        high = bounds.get(t.name, 2)
        return rng.integers(0, high, size=shape).astype(dtype)
    raise ModelError(f"cannot synthesise input {t.name!r} of dtype {dtype}")


def load_npz(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"inputs file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        raise UsageError(f"{path} is not a readable .npz file ({type(exc).__name__})") from None


def samples_in(npz: Mapping[str, np.ndarray], layout: InputLayout) -> int:
    """How many samples a user file holds: rows along the batch axis of its batched inputs."""
    counts = [
        npz[t.name].shape[t.batch_axis]
        for t in layout.batched
        if t.batch_axis is not None and t.name in npz and npz[t.name].ndim > t.batch_axis
    ]
    return min(counts) if counts else 1


def take_rows(npz: Mapping[str, np.ndarray], layout: InputLayout, index: np.ndarray) -> dict[str, np.ndarray]:
    """Rows ``index`` of every batched input; unbatched inputs as given."""
    out: dict[str, np.ndarray] = {}
    for t in layout.inputs:
        if t.name not in npz:
            continue
        arr = npz[t.name]
        out[t.name] = arr if t.batch_axis is None else np.take(arr, index, axis=t.batch_axis)
    return out


def _from_user(t: TensorLayout, arr: np.ndarray, batch: int) -> np.ndarray:
    want = t.at(batch)
    if arr.ndim != len(want):
        raise UsageError(f"inputs file: {t.name!r} has {arr.ndim} dims, the model wants {len(want)}")
    if t.batch_axis is None:
        if arr.shape != want:
            raise UsageError(f"inputs file: {t.name!r} has shape {arr.shape}, the model wants {want}")
        return arr.astype(t.dtype, copy=False)
    item = tuple(d for i, d in enumerate(arr.shape) if i != t.batch_axis)
    want_item = tuple(d for i, d in enumerate(want) if i != t.batch_axis)
    if item != want_item:
        raise UsageError(f"inputs file: {t.name!r} has item shape {item}, the model wants {want_item}")
    n = arr.shape[t.batch_axis]
    if n == 0:
        raise UsageError(f"inputs file: {t.name!r} holds no samples")
    idx = np.arange(batch) % n
    out: np.ndarray = np.take(arr, idx, axis=t.batch_axis).astype(t.dtype, copy=False)
    return out


def make_inputs(
    info: ModelInfo,
    batch: int,
    overrides: Mapping[str, tuple[int, ...]] | None = None,
    npz: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    layout: InputLayout | None = None,
) -> dict[str, np.ndarray]:
    """Feeds for one call at ``batch``: user samples cycled to the batch, else synthetic.
    ``layout`` (else inferred from ``overrides``) says where the batch goes."""
    layout = layout or infer_layout(info, overrides or {})
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    if npz is not None:
        missing = [t.name for t in layout.inputs if t.name not in npz]
        if missing:
            raise UsageError(f"inputs file lacks {', '.join(missing)}; it has {', '.join(npz) or 'nothing'}")
    for t in layout.inputs:
        if npz is not None:
            feeds[t.name] = _from_user(t, np.asarray(npz[t.name]), batch)
        else:
            feeds[t.name] = _synth(t, t.at(batch), info, rng)
    return feeds


def user_shapes(
    info: ModelInfo, npz: Mapping[str, np.ndarray], batch_axes: Mapping[str, int | None] | None = None
) -> dict[str, tuple[int, ...]]:
    """Item shapes a user file fixes for inputs whose dims the graph leaves open,
    as ``--shape INPUT=...`` entries (the batch axis left out)."""
    axes = infer_batch_axes(info, batch_axes)
    out: dict[str, tuple[int, ...]] = {}
    for spec in info.inputs:
        if spec.name not in npz:
            continue
        arr = np.asarray(npz[spec.name])
        if arr.ndim != len(spec.dims):
            raise UsageError(f"inputs file: {spec.name!r} has {arr.ndim} dims, the model wants {len(spec.dims)}")
        if all(isinstance(d, int) for d in spec.dims):
            continue
        out[spec.name] = tuple(d for i, d in enumerate(arr.shape) if i != axes[spec.name])
    return out
