"""Accuracy of a variant against the fp32 reference on the same inputs.

Every output is judged, and within an output every group of values that may
have its own scale: the columns of a detector's ``[N, anchors, 4+1+C]`` (box
coordinates beside sigmoid scores), the channels of ``[N, C, H, W]``. One
quantisation scale shared by such groups can zero the small ones while the
relative L2 of the whole output stays small (a detector's class scores beside
box coordinates up to 316: 5% overall, 100% of the scores).

An output whose task ``metrics.py`` recognises (class scores, sequence scores,
detections) is judged by the task; the others by their worst group. The
group figure is always reported, gated or not: int8 noise that is harmless to
a classifier's top-1 answers is over 100% of its smallest logit column.

A group's error is ``|r - v| / max(|r|, |v|, floor)`` (L2 norms over the
group): the relative L2 error for small changes, 1 when the variant collapses
to 0, at most 2, and a group whose reference is ~0 is judged against a floor
(``GROUP_FLOOR`` of its output's RMS) so float noise there never fails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optiserve.errors import UsageError
from optiserve.types import AccuracyReport
from optiserve.variants.metrics import (
    MetricSpec,
    TaskResult,
    fits,
    infer_task,
    parse_metric,
    run_user_metric,
    task_metric,
)

GROUP_FLOOR = 1e-4  # a group below this share of its output's RMS is judged against it
MAX_LISTED_GROUPS = 32  # per_output lists every group's error up to this many groups


def group_axis(shape: Sequence[int], batch_axis: int | None) -> int | None:
    """The axis whose slices are the groups: the only non-batch axis; of two, the
    shorter (a detector's attributes, either layout); of more, the first (NCHW's
    channels). None: the output is one group."""
    rest = [a for a in range(len(shape)) if a != batch_axis]
    if not rest:
        return None
    if len(rest) == 2:
        return rest[1] if shape[rest[1]] <= shape[rest[0]] else rest[0]
    return rest[0]


def group_label(ndim: int, axis: int | None, index: int) -> str:
    """Numpy-style slice of one group: ``[:, :, 4]``."""
    if axis is None:
        return "[...]"
    return "[" + ", ".join(str(index) if a == axis else ":" for a in range(ndim)) + "]"


def group_errors(ref: np.ndarray, var: np.ndarray, batch_axis: int | None) -> tuple[int | None, np.ndarray]:
    """The group axis and each group's error (inf where the variant is not finite)."""
    axis = group_axis(ref.shape, batch_axis)
    r, v = ref.astype(np.float64), var.astype(np.float64)
    if axis is None:
        r, v = r.reshape(1, -1), v.reshape(1, -1)
    else:
        r = np.moveaxis(r, axis, 0).reshape(ref.shape[axis], -1)
        v = np.moveaxis(v, axis, 0).reshape(ref.shape[axis], -1)
    bad = ~np.isfinite(v).all(axis=1)
    v = np.where(np.isfinite(v), v, 0.0)
    rms = math.sqrt(float(np.mean(r**2))) if r.size else 0.0
    floor = GROUP_FLOOR * rms * math.sqrt(r.shape[1])
    denom = np.maximum(np.maximum(np.linalg.norm(r, axis=1), np.linalg.norm(v, axis=1)), floor)
    diff = np.linalg.norm(r - v, axis=1)
    err = np.where(denom > 0, diff / np.where(denom > 0, denom, 1.0), 0.0)
    return axis, np.where(bad, np.inf, err)


def _batch_first(x: np.ndarray, batch_axis: int | None) -> np.ndarray:
    return x[None] if batch_axis is None else np.moveaxis(x, batch_axis, 0)


def _cosine(r: np.ndarray, v: np.ndarray) -> float:
    """Mean per-sample cosine of batch-first outputs."""
    a, b = r.reshape(r.shape[0], -1), v.reshape(v.shape[0], -1)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1), 1.0)
    return float(cos.mean()) if cos.size else 1.0


@dataclass(frozen=True)
class _Check:
    output: str  # "" for a user metric
    index: int  # -1 for a user metric
    metric: str
    where: str
    drop: float

    @property
    def key(self) -> str:
        return f"{self.output}:{self.metric}" if self.output else self.metric


def _axis(name: str, axis: int | None, ndim: int) -> int | None:
    if axis is None or ndim == 0:
        return None
    if not -ndim <= axis < ndim:
        raise ValueError(f"output {name}: batch axis {axis} is outside its {ndim} dims")
    return axis % ndim


def compare_outputs(
    reference: Sequence[np.ndarray],
    variant: Sequence[np.ndarray],
    labels: np.ndarray | None = None,
    synthetic: bool = True,
    output_axes: Sequence[tuple[str, int | None]] | None = None,
    metric: str | MetricSpec | None = None,
) -> AccuracyReport:
    """Judge every output of ``variant`` against ``reference`` (same order).

    ``output_axes`` gives each output's name and batch axis (None: not batched),
    in output order; without it outputs are ``output0``... batched on axis 0.
    ``metric`` is a ``--metric`` spec (see ``metrics.py``); None is auto. Labels,
    when given, go to the first output judged as class scores."""
    if len(reference) != len(variant):
        raise ValueError(f"{len(reference)} reference outputs but {len(variant)} variant outputs")
    axes = list(output_axes) if output_axes is not None else [(f"output{i}", 0) for i in range(len(reference))]
    if len(axes) != len(reference):
        raise ValueError(f"{len(axes)} output names/axes for {len(reference)} outputs")
    spec = metric if isinstance(metric, MetricSpec) else parse_metric(metric)
    checks: list[_Check] = []
    per_output: dict[str, dict[str, Any]] = {}
    classes: TaskResult | None = None
    samples: int | None = None
    sq_diff = sq_ref = 0.0
    max_abs, cosines, group_error = 0.0, [1.0], None
    forced_fit = False
    for i, ((name, given_axis), ref, var) in enumerate(zip(axes, reference, variant, strict=True)):
        ref, var = np.asarray(ref), np.asarray(var)
        axis = _axis(name, given_axis, ref.ndim)
        if samples is None and axis is not None:
            samples = int(ref.shape[axis])
        entry: dict[str, Any] = {"shape": list(ref.shape), "batch_axis": axis}
        per_output[name] = entry
        if ref.shape != var.shape:
            entry.update(judged_by="shape", note=f"variant shape {list(var.shape)}")
            checks.append(_Check(name, i, "shape-mismatch", "", math.inf))
            continue
        if ref.dtype.kind != "f":
            share = float(np.mean(ref != var)) if ref.size else 0.0
            entry.update(judged_by="exact", mismatch=share)
            checks.append(_Check(name, i, "mismatch", "", share))
            continue
        r64, v64 = ref.astype(np.float64), var.astype(np.float64)
        finite = bool(np.isfinite(v64).all())
        diff2 = float(np.sum((r64 - v64) ** 2)) if finite else math.inf
        ref2 = float(np.sum(r64**2))
        sq_diff, sq_ref = sq_diff + diff2, sq_ref + ref2
        out_abs = float(np.abs(r64 - v64).max()) if finite and ref.size else (0.0 if finite else math.inf)
        rel = math.sqrt(diff2 / ref2) if ref2 > 0 else (0.0 if diff2 == 0 else math.inf)
        out_cos = _cosine(_batch_first(r64, axis), _batch_first(v64, axis)) if finite else math.nan
        max_abs = max(max_abs, out_abs)
        cosines.append(out_cos)
        g_axis, errs = group_errors(ref, var, axis)
        worst = int(np.argmax(errs)) if errs.size else 0
        g_err = float(errs[worst]) if errs.size else 0.0
        group_error = g_err if group_error is None else max(group_error, g_err)
        where = group_label(ref.ndim, g_axis, worst)
        entry.update(
            max_abs_error=out_abs,
            rel_l2_error=rel,
            cosine=out_cos,
            group_axis=g_axis,
            groups=int(errs.size),
            worst_group=where,
            group_error=g_err,
        )
        if errs.size <= MAX_LISTED_GROUPS:
            entry["group_errors"] = [float(e) for e in errs]
        rb, vb = _batch_first(ref, axis), _batch_first(var, axis)
        if spec.tasks == "none":
            task = None
        elif spec.tasks == "auto":
            task = infer_task(name, rb)
        else:
            task = next((t for t in spec.tasks if fits(t, rb)), None)
            forced_fit = forced_fit or task is not None
        result = None
        if task is not None and finite:
            use_labels = labels if task == "classes" and classes is None else None
            if use_labels is not None and len(use_labels) < rb.shape[0]:
                raise UsageError(f"{len(use_labels)} labels for {rb.shape[0]} samples of output {name}")
            result = task_metric(task, rb, vb, use_labels)
            if result is not None and result.task == "classes" and classes is None:
                classes = result
        entry["task"] = task
        if result is not None:
            entry.update(judged_by="task", task_drops=dict(result.drops), task_info=dict(result.info))
            checks += [_Check(name, i, m, "", d) for m, d in result.drops.items()]
        else:
            if not finite:
                entry["note"] = "non-finite values in the variant"
            elif task is not None:
                entry["note"] = f"{task} metric gave no verdict (no confident boxes): judged by its groups"
            entry["judged_by"] = "groups"
            checks.append(_Check(name, i, "relative-l2", where, g_err))
    if spec.tasks not in ("auto", "none") and not forced_fit:
        shapes = ", ".join(f"{n}{e['shape']}" for n, e in per_output.items())
        raise UsageError(f"--metric {spec.text}: {'/'.join(spec.tasks)} fits no output ({shapes})")
    if spec.user:
        ref_d = {n: np.asarray(x) for (n, _), x in zip(axes, reference, strict=True)}
        var_d = {n: np.asarray(x) for (n, _), x in zip(axes, variant, strict=True)}
        for text, fn in spec.user:
            for label, d in run_user_metric(text, fn, ref_d, var_d).items():
                checks.append(_Check("", -1, label, "", d))
    worst_check = max(checks, key=lambda c: c.drop) if checks else _Check("", 0, "relative-l2", "", 0.0)
    info = classes.info if classes else {}
    return AccuracyReport(
        samples=samples if samples is not None else 1,
        output=worst_check.index,
        max_abs_error=max_abs,
        rel_l2_error=math.sqrt(sq_diff / sq_ref) if sq_ref > 0 else (0.0 if sq_diff == 0 else math.inf),
        cosine=math.nan if any(math.isnan(c) for c in cosines) else min(cosines),
        top1_agreement=info.get("top1_agreement"),
        accuracy=info.get("accuracy"),
        reference_accuracy=info.get("reference_accuracy"),
        drop=worst_check.drop,
        drop_metric=worst_check.metric,
        synthetic=synthetic,
        worst_output=worst_check.output,
        worst_group=worst_check.where,
        group_error=group_error,
        checks={c.key: c.drop for c in checks},
        per_output=per_output,
    )
