"""Task metrics: what a variant's change means for the task, not only for the numbers.

A structural check (relative L2 per group, in ``accuracy.py``) cannot tell a
harmless change from a fatal one: int8 noise of 2-5% of a classifier's logits
leaves every top-1 answer alone yet is over 100% of its smallest class column,
while a detector's objectness column at 0.4% of its output's scale is what
decides whether anything is detected. So outputs whose task is recognised are
judged by the task, the others by their groups:

- class scores ``[N, C]`` (or ``[N, C, 1, 1]``): top-1 agreement, or with
  labels the fall in real accuracy;
- sequence scores ``[N, T, C]`` (probability rows, or an output named like
  ``logits``): per-step argmax agreement, as for CTC OCR; steps where both say
  the dominant class (the CTC blank) are not counted, so a mostly blank output
  cannot hide changed characters;
- detection ``[N, boxes, 4+1+C]`` (YOLOv5/YOLOX layout, with objectness) or
  ``[N, 4+C, boxes]`` (YOLOv8, without): confident boxes (score >= 0.25) of the
  two paired by anchor in a raw head output, matched greedily by IoU within a
  class after NMS; the drops are the share of confident boxes left unpaired
  and the mean IoU the paired ones lost. Without a confident box (synthetic
  inputs, usually) it gives no verdict and the groups judge the output.

Recognition is cautious (a false match would gate on a meaningless figure, a
miss only falls back to the groups); ``--metric`` overrides it: a comma list of
``auto`` (the default), ``none`` (groups only), ``classes``, ``sequence``,
``detection`` (forced on the outputs whose shape fits) and ``module:function``
user metrics, which are judged in addition.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optiserve.errors import UsageError

UserMetric = Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], float | dict[str, float]]
TASKS = ("classes", "sequence", "detection")
KEYWORDS = ("auto", "none", *TASKS)
CONF = 0.25  # a box is confident at this score (YOLO's default conf threshold)
MATCH_IOU = 0.5  # two boxes are the same detection at this IoU
MAX_BOXES = 300  # confident boxes kept per image, best first (YOLO's max_det)


@dataclass(frozen=True)
class TaskResult:
    """One output's task verdict: drops (gated, in [0, inf)) and figures for the report."""

    task: str
    drops: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """A parsed ``--metric``: which task metrics apply and the user metrics to add."""

    text: str = ""
    tasks: str | tuple[str, ...] = "auto"  # "auto", "none" or the forced task names
    user: tuple[tuple[str, UserMetric], ...] = ()


def load_metric(spec: str) -> UserMetric:
    """Import ``module:function`` (the module from the working directory or sys.path).

    The function is called as ``fn(reference_outputs, variant_outputs)``, both
    ``{output name: array}`` with the batch concatenated along each output's
    batch axis, and returns a drop in [0, inf) (0: as good as fp32) or a dict
    of named drops; the variant is refused when any exceeds --max-accuracy-drop."""
    text = spec.strip()
    mod_name, sep, attr = text.partition(":")
    if not sep or not mod_name.strip() or not attr.strip():
        raise UsageError(f"--metric {spec!r}: expected module:function or one of {', '.join(KEYWORDS)}")
    mod_name, attr = mod_name.strip(), attr.strip()
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or mod_name
        if not (mod_name == missing or mod_name.startswith(missing + ".")):  # the module is there, a dependency is not
            raise UsageError(f"--metric {spec!r}: importing {mod_name} failed: no module {missing!r}") from None
        raise UsageError(f"--metric {spec!r}: no module {mod_name!r} in {cwd} or on sys.path") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(f"--metric {spec!r}: importing {mod_name} failed: {type(exc).__name__}: {first}") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"--metric {spec!r}: module {mod_name} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"--metric {spec!r}: {mod_name}.{attr} is a {type(obj).__name__}, not a function")
    fn: UserMetric = obj
    return fn


def parse_metric(spec: str | None) -> MetricSpec:
    """``--metric`` as given (None: auto). Checks everything, user imports included, so
    a sweep can call this before it measures anything."""
    if spec is None or not spec.strip():
        return MetricSpec()
    words: list[str] = []
    user: list[tuple[str, UserMetric]] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            raise UsageError(f"--metric {spec!r}: empty item in the comma list")
        if item.lower() in KEYWORDS:
            words.append(item.lower())
        else:
            user.append((item, load_metric(item)))
    modes = [w for w in words if w in ("auto", "none")]
    if modes and len(words) > 1:
        raise UsageError(f"--metric {spec!r}: {modes[0]} cannot be combined with other task metrics")
    tasks: str | tuple[str, ...] = modes[0] if modes else (tuple(dict.fromkeys(words)) or "auto")
    return MetricSpec(spec.strip(), tasks, tuple(user))


def run_user_metric(
    name: str, fn: UserMetric, ref: dict[str, np.ndarray], var: dict[str, np.ndarray]
) -> dict[str, float]:
    """The user metric's drops by name, checked: a bad return value is the user's error."""
    try:
        got = fn(ref, var)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(f"--metric {name}: raised {type(exc).__name__}: {first}") from None
    items = got.items() if isinstance(got, Mapping) else [("", got)]
    out: dict[str, float] = {}
    for key, value in items:
        label = f"{name}[{key}]" if key else name
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"--metric {label}: returned {type(value).__name__}, not a number") from None
        if math.isnan(x) or x < 0:
            raise UsageError(f"--metric {label}: returned {x}; a drop must be in [0, inf)")
        out[label] = x
    if not out:
        raise UsageError(f"--metric {name}: returned an empty dict")
    return out


# -- recognising a task ------------------------------------------------------


def _scores_2d(x: np.ndarray) -> np.ndarray | None:
    """(N, C) class scores from a batch-first float output, else None."""
    y = x.reshape(x.shape[0], -1) if x.ndim > 2 and all(d == 1 for d in x.shape[2:]) else x
    return y if y.ndim == 2 and y.shape[1] >= 2 and y.dtype.kind == "f" else None


def _detection_layout(x: np.ndarray) -> bool | None:
    """For a batch-first [N, a, b] output that could be detections: True if the
    attributes are last (objectness present), False if first, None if it cannot be."""
    if x.ndim != 3 or x.dtype.kind != "f":
        return None
    a, b = x.shape[1], x.shape[2]
    last = b <= a
    attrs = min(a, b)
    return last if attrs >= 5 else None


def _as_boxes(x: np.ndarray, attrs_last: bool) -> np.ndarray:
    return x if attrs_last else np.swapaxes(x, 1, 2)


def _looks_like_detection(x: np.ndarray) -> bool:
    last = _detection_layout(x)
    if last is None:
        return False
    d = _as_boxes(x, last)
    boxes, attrs = d.shape[1], d.shape[2]
    if boxes < 4 * attrs or not d.size:
        return False
    scores, wh = d[..., 4:], d[..., 2:4]
    in_unit = bool(np.isfinite(scores).all() and scores.min() >= -1e-6 and scores.max() <= 1 + 1e-6)
    return in_unit and float(np.nanmax(wh)) > 1 + 1e-6  # sigmoid scores beside box sizes in other units


def _looks_like_sequence(name: str, x: np.ndarray) -> bool:
    if x.ndim != 3 or x.dtype.kind != "f" or x.shape[1] < 2 or x.shape[2] < 2:
        return False
    if "logit" in name.lower():
        return True
    if not np.isfinite(x).all() or x.min() < -1e-6:
        return False
    return bool(np.allclose(x.sum(axis=-1), 1.0, atol=1e-3))  # softmax rows


def infer_task(name: str, ref: np.ndarray) -> str | None:
    """The task of a batch-first reference output, or None when not recognised."""
    if _scores_2d(ref) is not None:
        return "classes"
    if _looks_like_detection(ref):
        return "detection"
    if _looks_like_sequence(name, ref):
        return "sequence"
    return None


def fits(task: str, x: np.ndarray) -> bool:
    """Whether a forced task can be computed on this batch-first output at all."""
    if task == "classes":
        return _scores_2d(x) is not None
    if task == "detection":
        return _detection_layout(x) is not None
    return x.ndim == 3 and x.dtype.kind == "f" and x.shape[2] >= 2


# -- the task metrics --------------------------------------------------------


def class_metric(ref: np.ndarray, var: np.ndarray, labels: np.ndarray | None = None) -> TaskResult:
    """Top-1 agreement; with labels, the fall in accuracy (fp32's minus the variant's)."""
    r, v = _scores_2d(ref), _scores_2d(var)
    if r is None or v is None:
        raise ValueError("class_metric needs [N, C] scores")
    top1 = float((r.argmax(1) == v.argmax(1)).mean())
    info: dict[str, Any] = {"top1_agreement": top1}
    if labels is None:
        return TaskResult("classes", {"top1-disagreement": 1.0 - top1}, info)
    lab = np.asarray(labels).reshape(-1)[: r.shape[0]]
    ref_acc, acc = float((r.argmax(1) == lab).mean()), float((v.argmax(1) == lab).mean())
    info.update(accuracy=acc, reference_accuracy=ref_acc)
    return TaskResult("classes", {"accuracy": ref_acc - acc}, info)


def sequence_metric(ref: np.ndarray, var: np.ndarray) -> TaskResult:
    """Per-step argmax agreement of [N, T, C] scores, dominant-class (blank) steps both keep not counted."""
    a, b = ref.argmax(-1).ravel(), var.argmax(-1).ravel()
    if not a.size:
        return TaskResult("sequence", {"step-disagreement": 0.0}, {"steps": 0})
    counts = np.bincount(a)
    dom = int(counts.argmax())
    blank = dom if counts[dom] * 2 >= a.size else None
    keep = np.ones(a.size, bool) if blank is None else (a != blank) | (b != blank)
    agree = float((a == b)[keep].mean()) if keep.any() else 1.0
    info = {"steps": int(a.size), "counted": int(keep.sum()), "blank": blank, "step_agreement": agree}
    return TaskResult("sequence", {"step-disagreement": 1.0 - agree}, info)


def _decode(d: np.ndarray, objectness: bool, log_sizes: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (x1, y1, x2, y2) from (cx, cy, w, h), score and class of each row of [boxes, attrs]."""
    cx, cy, w, h = d[:, 0], d[:, 1], d[:, 2], d[:, 3]
    if log_sizes:  # raw head output (YOLOX): sizes are logs, offsets per anchor
        w, h = np.exp(np.clip(w, -50, 50)), np.exp(np.clip(h, -50, 50))
    w, h = np.abs(w), np.abs(h)
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    first = 5 if objectness else 4
    cls = d[:, first:]
    if cls.shape[1] == 0:
        return boxes, d[:, 4], np.zeros(len(d), np.int64)
    score = cls.max(1) * (d[:, 4] if objectness else 1.0)
    return boxes, score, cls.argmax(1)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b`` (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box i of ``a`` with box i of ``b``."""
    lt, rb = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    union = (a[:, 2:] - a[:, :2]).prod(-1) + (b[:, 2:] - b[:, :2]).prod(-1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _confident(boxes: np.ndarray, score: np.ndarray, cls: np.ndarray, conf: float) -> tuple[np.ndarray, np.ndarray]:
    idx = np.flatnonzero(score >= conf)
    idx = idx[np.argsort(-score[idx], kind="stable")][:MAX_BOXES]
    return boxes[idx], cls[idx]


def _greedy(rb: np.ndarray, rc: np.ndarray, vb: np.ndarray, vc: np.ndarray) -> list[float]:
    """IoUs of greedily matched pairs, best IoU first, each box used once, classes equal."""
    if not len(rb) or not len(vb):
        return []
    iou = np.where(rc[:, None] == vc[None, :], _iou(rb, vb), 0.0)
    i, j = np.nonzero(iou >= MATCH_IOU)
    order = np.argsort(-iou[i, j], kind="stable")
    used_r: set[int] = set()
    used_v: set[int] = set()
    out: list[float] = []
    for k in order:
        a, b = int(i[k]), int(j[k])
        if a not in used_r and b not in used_v:
            used_r.add(a)
            used_v.add(b)
            out.append(float(iou[a, b]))
    return out


def detection_metric(ref: np.ndarray, var: np.ndarray, conf: float = CONF) -> TaskResult | None:
    """Confident boxes (score >= ``conf``) of [N, boxes, 4+1+C] or [N, 4+C, boxes]
    compared; None when neither has one (synthetic inputs rarely do: the groups
    judge the output then). Row i of a raw head output is one anchor in both, so
    rows are paired by index there (greedy IoU matching would pair boxes of other
    anchors, whose offsets share one small range); outputs sorted by score (after
    NMS) are matched greedily by IoU within a class. Negative sizes mean log sizes."""
    last = _detection_layout(ref)
    if last is None:
        raise ValueError("detection_metric needs [N, boxes, attrs] or [N, attrs, boxes] with attrs >= 5")
    r, v = _as_boxes(ref, last).astype(np.float64), _as_boxes(var, last).astype(np.float64)
    log_sizes = bool((r[..., 2:4] < 0).any())
    pairs = [(_decode(a, last, log_sizes), _decode(b, last, log_sizes)) for a, b in zip(r, v, strict=True)]
    by_index = any(bool((np.diff(ref_d[1]) > 1e-6).any()) for ref_d, _ in pairs)  # unsorted: anchors
    n_ref = n_var = 0
    ious: list[float] = []
    for (ra, sa, ca), (rv, sv, cv) in pairs:
        if by_index:
            hit_r, hit_v = sa >= conf, sv >= conf
            both = hit_r & hit_v & (ca == cv)
            n_ref, n_var = n_ref + int(hit_r.sum()), n_var + int(hit_v.sum())
            ious += _paired_iou(ra[both], rv[both]).tolist()
        else:
            rb, rc = _confident(ra, sa, ca, conf)
            vb, vc = _confident(rv, sv, cv, conf)
            n_ref, n_var = n_ref + len(rb), n_var + len(vb)
            ious += _greedy(rb, rc, vb, vc)
    if n_ref + n_var == 0:
        return None
    f1 = 2 * len(ious) / (n_ref + n_var)
    mean_iou = float(np.mean(ious)) if ious else 0.0
    info = {
        "reference_boxes": n_ref,
        "variant_boxes": n_var,
        "matched": len(ious),
        "mean_iou": mean_iou,
        "matching": "by anchor" if by_index else "greedy IoU",
    }
    return TaskResult("detection", {"detection-disagreement": 1.0 - f1, "detection-iou-loss": 1.0 - mean_iou}, info)


def task_metric(task: str, ref: np.ndarray, var: np.ndarray, labels: np.ndarray | None = None) -> TaskResult | None:
    """The named task metric on batch-first outputs (None: no verdict on these inputs)."""
    if task == "classes":
        return class_metric(ref, var, labels)
    if task == "sequence":
        return sequence_metric(ref, var)
    if task == "detection":
        return detection_metric(ref, var)
    raise ValueError(f"unknown task {task!r}")
