"""Accuracy of a variant against the fp32 reference on the same inputs.

Which figure is the "drop" that ``--max-accuracy-drop`` bounds, in order of
preference: with labels, the fall in real accuracy (fp32's minus the
variant's); for class scores, the share of top-1 answers that changed; else the
relative L2 error of the primary (first floating-point) output.
"""

from __future__ import annotations

import numpy as np

from optiserve.types import AccuracyReport


def _as_scores(x: np.ndarray) -> np.ndarray | None:
    """(N, C) class scores if the output looks like them, else None."""
    y = x.reshape(x.shape[0], -1) if x.ndim > 2 and all(d == 1 for d in x.shape[2:]) else x
    if y.ndim == 2 and y.shape[1] >= 2 and y.dtype.kind == "f":
        return y
    return None


def compare_outputs(
    reference: list[np.ndarray],
    variant: list[np.ndarray],
    labels: np.ndarray | None = None,
    synthetic: bool = True,
) -> AccuracyReport:
    idx = next((i for i, r in enumerate(reference) if r.dtype.kind == "f"), 0)
    ref = reference[idx].astype(np.float64)
    var = variant[idx].astype(np.float64)
    if ref.shape != var.shape:
        raise ValueError(f"output shapes differ: {ref.shape} vs {var.shape}")
    finite = bool(np.isfinite(var).all())
    diff = np.abs(ref - var)
    max_abs = float(diff.max()) if finite else float("inf")
    norm = float(np.linalg.norm(ref))
    rel_l2 = float(np.linalg.norm(ref - var) / norm) if finite and norm > 0 else (0.0 if finite else float("inf"))
    a, b = ref.reshape(ref.shape[0], -1), var.reshape(var.shape[0], -1)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1), 1.0)
    cosine = float(cos.mean()) if finite else float("nan")
    top1 = acc = ref_acc = None
    ref_scores, var_scores = _as_scores(ref), _as_scores(var)
    if ref_scores is not None and var_scores is not None:
        top1 = float((ref_scores.argmax(1) == var_scores.argmax(1)).mean())
        if labels is not None:
            lab = np.asarray(labels).reshape(-1)[: ref_scores.shape[0]]
            ref_acc = float((ref_scores.argmax(1) == lab).mean())
            acc = float((var_scores.argmax(1) == lab).mean())
    if acc is not None and ref_acc is not None:
        drop, metric = ref_acc - acc, "accuracy"
    elif top1 is not None:
        drop, metric = 1.0 - top1, "top1-disagreement"
    else:
        drop, metric = rel_l2, "relative-l2"
    return AccuracyReport(
        samples=int(ref.shape[0]),
        output=idx,
        max_abs_error=max_abs,
        rel_l2_error=rel_l2,
        cosine=cosine,
        top1_agreement=top1,
        accuracy=acc,
        reference_accuracy=ref_acc,
        drop=float(drop) if finite else float("inf"),
        drop_metric=metric,
        synthetic=synthetic,
    )
