"""Run a variant and the fp32 reference on the same inputs and compare them.

Inputs are the user's ``--inputs`` when given (cycled to whole batches, labels
cycled alongside), else synthetic ones from a seed distinct from the
calibration seed, so a variant is never judged on the data it was calibrated on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from optiserve.errors import UsageError
from optiserve.models.graph import ModelInfo
from optiserve.models.inputs import make_inputs, samples_in, take_rows
from optiserve.runtimes.base import Runtime, Session
from optiserve.types import AccuracyReport, BenchConfig, InputLayout, Precision
from optiserve.variants.accuracy import compare_outputs
from optiserve.variants.metrics import parse_metric

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
    layout: InputLayout,
    npz: Mapping[str, np.ndarray] | None,
    labels: np.ndarray | None,
    seed: int,
) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """Whole batches covering at least ``samples`` items, and their labels. Item i is
    the same whatever the batch size, so every config of a variant is judged alike.
    Items are stacked along each input's batch axis; unbatched inputs are passed as given."""
    n_batches = math.ceil(samples / batch)
    total = n_batches * batch
    if npz is None:
        items = [make_inputs(info, 1, seed=seed + EVAL_SEED_OFFSET + i, layout=layout) for i in range(total)]
        feeds = []
        for b in range(n_batches):
            part = items[b * batch : (b + 1) * batch]
            feed: dict[str, np.ndarray] = {}
            for t in layout.inputs:
                if t.batch_axis is None:
                    feed[t.name] = part[0][t.name]
                else:
                    feed[t.name] = np.concatenate([it[t.name] for it in part], axis=t.batch_axis)
            feeds.append(feed)
        return feeds, None
    n_user = samples_in(npz, layout)
    idx = np.arange(total) % n_user
    feeds = []
    for i in range(n_batches):
        rows = take_rows(npz, layout, idx[i * batch : (i + 1) * batch])
        feeds.append(make_inputs(info, batch, npz=rows, layout=layout))
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
    output_axes: Sequence[tuple[str, int | None]] | None = None,
    metric: str | None = None,
) -> AccuracyReport:
    """Compare ``session`` with an fp32 session of the same runtime on ``batches``
    (cast to ``dtypes`` for the variant, as given for the reference), every output
    joined along its batch axis (``output_axes``, as ``InputLayout.output_axes``;
    a missing name is axis 0); an unbatched output's calls are stacked on a new
    axis 0. ``metric`` is the ``--metric`` spec (None: task metrics chosen from
    each output's shape)."""
    spec = parse_metric(metric)  # a bad spec fails before anything runs
    if config.precision is Precision.FP32:
        reference: Session = session
    else:
        reference = runtime.load(reference_model, Precision.FP32, config.threads, dict(config.options))
    ref_out = [reference.run(f) for f in batches]
    var_out = [session.run(as_dtypes(f, dtypes or {})) for f in batches]
    if reference is not session:
        reference.close()
    names = list(session.output_names) or [f"output{i}" for i in range(len(ref_out[0]))]
    given = dict(output_axes or ())
    joined: list[tuple[str, int | None]] = []
    ref, var = [], []
    for i, name in enumerate(names):
        axis = given.get(name, 0)
        if axis is None or ref_out[0][i].ndim == 0:
            ref.append(np.stack([o[i] for o in ref_out]))
            var.append(np.stack([o[i] for o in var_out]))
            axis = 0
        else:
            ref.append(np.concatenate([o[i] for o in ref_out], axis=axis))
            var.append(np.concatenate([o[i] for o in var_out], axis=axis))
        joined.append((name, axis))
    return compare_outputs(ref, var, labels=labels, synthetic=synthetic, output_axes=joined, metric=spec)
