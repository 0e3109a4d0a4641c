"""Inputs for a model at a batch size: synthesised from the graph, or from a user .npz.

Dims other than the batch must be known: fixed in the graph or given with
``--shape``. A missing one is an error that names the dim and how to set it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from optiserve.errors import ModelError, UsageError
from optiserve.models.graph import InputSpec, ModelInfo

_SHAPE_RE = re.compile(r"^\s*([^=\s]+)\s*=\s*(\d+(?:\s*[x,]\s*\d+)*)\s*$")


def parse_shape_overrides(items: list[str] | tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME=DIMS`` items. NAME is a symbolic dim (``seq=128``) or an input
    name whose per-item shape follows (``pixels=3x224x224``, batch excluded)."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        m = _SHAPE_RE.match(item)
        if not m:
            raise UsageError(f"malformed --shape {item!r}: expected NAME=DIMS, e.g. seq=128 or pixels=3x224x224")
        dims = tuple(int(d) for d in re.split(r"[x,]", m.group(2).replace(" ", "")))
        if any(d <= 0 for d in dims):
            raise UsageError(f"malformed --shape {item!r}: dims must be positive")
        out[m.group(1)] = dims
    return out


def resolve_shape(spec: InputSpec, batch: int, overrides: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """Concrete shape of one input at ``batch``; raises naming the first unknown dim."""
    if spec.name in overrides:
        item = overrides[spec.name]
        if len(item) != len(spec.dims) - 1:
            raise UsageError(
                f"--shape {spec.name}=... gives {len(item)} dims but input {spec.name!r} has "
                f"{len(spec.dims) - 1} besides the batch"
            )
        return (batch, *item)
    shape: list[int] = []
    for i, d in enumerate(spec.dims):
        if i == 0 and not isinstance(d, int):
            shape.append(batch)
        elif isinstance(d, int):
            if i == 0 and d != batch:
                raise ModelError(
                    f"input {spec.name!r} has a fixed batch of {d}; batch size {batch} "
                    "needs a model with a dynamic first dim"
                )
            shape.append(d)
        elif isinstance(d, str) and d in overrides and len(overrides[d]) == 1:
            shape.append(overrides[d][0])
        else:
            name = d if isinstance(d, str) else "?"
            hint = f"--shape {d}=N or " if isinstance(d, str) else ""
            raise ModelError(
                f"input {spec.name!r} has dynamic dim {name!r} at position {i}: pass {hint}--shape {spec.name}=DIMS"
            )
    return tuple(shape)


def _synth(spec: InputSpec, shape: tuple[int, ...], info: ModelInfo, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    bounds = dict(info.gather_bounds)
    lname = spec.name.lower()
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        if "mask" in lname:
            return np.ones(shape, dtype=dtype)
        high = bounds.get(spec.name, 2)
        return rng.integers(0, high, size=shape).astype(dtype)
    raise ModelError(f"cannot synthesise input {spec.name!r} of dtype {dtype}")


def load_npz(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"inputs file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        raise UsageError(f"{path} is not a readable .npz file ({type(exc).__name__})") from None


def _tile_to_batch(name: str, arr: np.ndarray, batch: int, shape: tuple[int, ...]) -> np.ndarray:
    if arr.ndim != len(shape):
        raise UsageError(f"inputs file: {name!r} has {arr.ndim} dims, the model wants {len(shape)}")
    if arr.shape[1:] != shape[1:]:
        raise UsageError(f"inputs file: {name!r} has item shape {arr.shape[1:]}, the model wants {shape[1:]}")
    reps = -(-batch // arr.shape[0])
    return np.concatenate([arr] * reps, axis=0)[:batch]


def make_inputs(
    info: ModelInfo,
    batch: int,
    overrides: dict[str, tuple[int, ...]] | None = None,
    npz: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Feeds for one call at ``batch``: user samples cycled to the batch, else synthetic."""
    overrides = overrides or {}
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    if npz is not None:
        missing = [s.name for s in info.inputs if s.name not in npz]
        if missing:
            raise UsageError(f"inputs file lacks {', '.join(missing)}; it has {', '.join(npz) or 'nothing'}")
    for spec in info.inputs:
        if npz is not None:
            arr = npz[spec.name]
            fixed = tuple(
                d if isinstance(d, int) else arr.shape[i] if i < arr.ndim else -1 for i, d in enumerate(spec.dims)
            )
            shape = (batch, *fixed[1:])
            feeds[spec.name] = _tile_to_batch(spec.name, arr, batch, shape).astype(spec.dtype)
        else:
            shape = resolve_shape(spec, batch, overrides)
            feeds[spec.name] = _synth(spec, shape, info, rng)
    return feeds
