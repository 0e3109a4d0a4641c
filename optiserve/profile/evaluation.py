"""Run a variant and the fp32 reference on the same inputs and compare them.

Inputs are the user's ``--inputs`` when given (cycled to whole batches, labels
cycled alongside), else synthetic ones from a seed distinct from the
calibration seed, so a variant is never judged on the data it was calibrated on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from optiserve.errors import UsageError
from optiserve.models.graph import ModelInfo
from optiserve.models.inputs import make_inputs
from optiserve.runtimes.base import Runtime, Session
from optiserve.types import AccuracyReport, BenchConfig, Precision
from optiserve.variants.accuracy import compare_outputs

EVAL_SEED_OFFSET = 1_000_003  # calibration uses seed + i; evaluation never overlaps it


def load_labels(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"labels file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        arr = data[data.files[0]] if hasattr(data, "files") else data
    except Exception as exc:
        raise UsageError(f"{path} is not a readable .npy/.npz of labels ({type(exc).__name__})") from None
    arr = np.asarray(arr)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise UsageError(f"labels in {path} must be a 1-d integer array, got {arr.dtype} {arr.shape}")
    return arr


def eval_batches(
    info: ModelInfo,
    batch: int,
    samples: int,
    overrides: Mapping[str, tuple[int, ...]],
    npz: Mapping[str, np.ndarray] | None,
    labels: np.ndarray | None,
    seed: int,
) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """Whole batches covering at least ``samples`` items, and their labels. Item i is
    the same whatever the batch size, so every config of a variant is judged alike."""
    n_batches = math.ceil(samples / batch)
    total = n_batches * batch
    if npz is None:
        items = [make_inputs(info, 1, dict(overrides), seed=seed + EVAL_SEED_OFFSET + i) for i in range(total)]
        feeds = [
            {k: np.concatenate([it[k] for it in items[b * batch : (b + 1) * batch]]) for k in items[0]}
            for b in range(n_batches)
        ]
        return feeds, None
    n_user = min(len(v) for v in npz.values())
    idx = np.arange(total) % n_user
    feeds = []
    for i in range(n_batches):
        part = {k: v[idx[i * batch : (i + 1) * batch]] for k, v in npz.items()}
        feeds.append(make_inputs(info, batch, dict(overrides), npz=part))
    if labels is not None and len(labels) < n_user:
        raise UsageError(f"labels file has {len(labels)} labels for {n_user} input samples")
    return feeds, (labels[idx] if labels is not None else None)


def as_dtypes(feeds: dict[str, np.ndarray], dtypes: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Feeds cast to the input types a session expects (no copy where they already match)."""
    return {k: v.astype(dtypes.get(k, v.dtype), copy=False) for k, v in feeds.items()}


def evaluate(
    runtime: Runtime,
    reference_model: Path,
    session: Session,
    config: BenchConfig,
    batches: list[dict[str, np.ndarray]],
    labels: np.ndarray | None,
    synthetic: bool,
    dtypes: Mapping[str, str] | None = None,
) -> AccuracyReport:
    """Compare ``session`` with an fp32 session of the same runtime on ``batches``
    (cast to ``dtypes`` for the variant, as given for the reference)."""
    if config.precision is Precision.FP32:
        reference: Session = session
    else:
        reference = runtime.load(reference_model, Precision.FP32, config.threads, dict(config.options))
    ref_out = [reference.run(f) for f in batches]
    var_out = [session.run(as_dtypes(f, dtypes or {})) for f in batches]
    if reference is not session:
        reference.close()
    ref = [np.concatenate([o[i] for o in ref_out]) for i in range(len(ref_out[0]))]
    var = [np.concatenate([o[i] for o in var_out]) for i in range(len(var_out[0]))]
    return compare_outputs(ref, var, labels=labels, synthetic=synthetic)
