"""Task metrics on arrays with known answers, and the ``--metric`` hook."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from optiserve.errors import UsageError
from optiserve.variants.accuracy import compare_outputs
from optiserve.variants.metrics import (
    class_metric,
    detection_metric,
    infer_task,
    load_metric,
    parse_metric,
    sequence_metric,
)


def test_class_metric_counts_changed_answers() -> None:
    ref = np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 4, 0, 1, 2]]
    var = ref.copy()
    var[[1, 6]] = np.eye(5, dtype=np.float32)[4]  # two of eight answers change
    r = class_metric(ref, var)
    assert r.drops == {"top1-disagreement": pytest.approx(0.25)} and r.info["top1_agreement"] == 0.75
    labelled = class_metric(ref, var, labels=np.array([0, 1, 2, 3, 4, 0, 0, 0]))
    assert labelled.info["reference_accuracy"] == 0.75 and labelled.info["accuracy"] == 0.625
    assert labelled.drops == {"accuracy": pytest.approx(0.125)}


def _probs(ids: np.ndarray, classes: int) -> np.ndarray:
    """Softmax-like rows whose argmax is ``ids``."""
    out = np.full((*ids.shape, classes), 0.1 / (classes - 1), np.float32)
    np.put_along_axis(out, ids[..., None], 0.9, axis=-1)
    return out


def test_sequence_metric_ignores_agreeing_blanks() -> None:
    ids = np.zeros((2, 10), np.int64)
    ids[0, 2], ids[0, 5], ids[1, 1], ids[1, 8] = 1, 2, 3, 4  # four characters among blanks
    var_ids = ids.copy()
    var_ids[0, 5] = 3  # one character read wrongly
    r = sequence_metric(_probs(ids, 5), _probs(var_ids, 5))
    assert r.info["blank"] == 0 and r.info["counted"] == 4
    assert r.drops["step-disagreement"] == pytest.approx(0.25)  # 3 of 4 characters; 16 blanks do not dilute it
    var_ids[1, 4] = 1  # and one character appears from nothing
    r = sequence_metric(_probs(ids, 5), _probs(var_ids, 5))
    assert r.info["counted"] == 5 and r.drops["step-disagreement"] == pytest.approx(0.4)


def _head(anchors: int = 200) -> np.ndarray:
    """A raw head [1, anchors, 4+1+1]: unsorted anchors, all below the confidence threshold."""
    rng = np.random.default_rng(0)
    out = np.zeros((1, anchors, 6), np.float32)
    out[0, :, 0:2] = rng.uniform(0, 400, (anchors, 2))
    out[0, :, 2:4] = rng.uniform(10, 50, (anchors, 2))
    out[0, :, 4] = rng.uniform(0.0, 0.1, anchors)
    out[0, :, 5] = 1.0
    return out


def test_detection_by_anchor_with_known_iou() -> None:
    ref = _head()
    ref[0, 7] = [100, 100, 20, 20, 0.9, 1.0]
    ref[0, 50] = [300, 300, 40, 40, 0.8, 1.0]
    var = ref.copy()
    var[0, 7, 0] += 10  # shifted half a width: IoU 200 / 600
    r = detection_metric(ref, var)
    assert r is not None and r.info["matching"] == "by anchor"
    assert r.drops["detection-disagreement"] == 0.0
    assert r.drops["detection-iou-loss"] == pytest.approx(1 - (1 / 3 + 1) / 2)
    var[0, 50, 4] = 0.1  # the second box is no longer confident
    r = detection_metric(ref, var)
    assert r is not None and r.drops["detection-disagreement"] == pytest.approx(1 - 2 * 1 / 3)
    assert r.info == {**r.info, "reference_boxes": 2, "variant_boxes": 1, "matched": 1}


def test_detection_after_nms_is_matched_greedily_by_iou() -> None:
    ref = np.zeros((1, 10, 6), np.float32)  # post-NMS: sorted by score, zero padded
    ref[0, 0] = [50, 50, 20, 20, 0.95, 0.9]
    ref[0, 1] = [200, 80, 30, 60, 0.9, 0.9]
    ref[0, 2] = [120, 300, 16, 16, 0.8, 0.9]
    var = ref.copy()
    var[0, [0, 1]] = ref[0, [1, 0]]  # the same boxes in another order
    var[0, 0, 4] = 0.96  # still sorted
    r = detection_metric(ref, var)
    assert r is not None and r.info["matching"] == "greedy IoU"
    assert r.drops == {"detection-disagreement": 0.0, "detection-iou-loss": pytest.approx(0.0)}


def test_detection_yolov8_layout_has_no_objectness() -> None:
    boxes = np.zeros((1, 6, 300), np.float32)  # [N, 4+2 classes, boxes]
    boxes[0, 0:2] = np.linspace(10, 400, 300)
    boxes[0, 2:4] = 30
    boxes[0, 4, 3] = 0.9  # one box of class 0
    boxes[0, 5, 99] = 0.7  # one of class 1
    var = boxes.copy()
    var[0, 4, 3], var[0, 5, 3] = 0.1, 0.9  # the first box changes class
    r = detection_metric(boxes, var)
    assert r is not None and r.info["reference_boxes"] == 2 and r.info["matched"] == 1
    assert infer_task("output0", boxes) == "detection"


def test_no_confident_box_gives_no_verdict() -> None:
    assert detection_metric(_head(), _head() * 0.5) is None


def test_tasks_are_recognised_cautiously() -> None:
    rng = np.random.default_rng(0)
    assert infer_task("logits", rng.normal(size=(4, 10)).astype(np.float32)) == "classes"
    assert infer_task("prob", rng.random((4, 1000, 1, 1)).astype(np.float32)) == "classes"
    det = _head()
    assert infer_task("output", det) == "detection"
    scores = rng.random((1, 7600, 10)).astype(np.float32)  # per-anchor class scores, no boxes
    assert infer_task("transpose_0.tmp_0", scores) is None
    soft = _probs(rng.integers(0, 6625, (2, 40)), 6625)
    assert infer_task("softmax_11.tmp_0", soft) == "sequence"
    hidden = rng.normal(size=(2, 128, 256)).astype(np.float32)
    assert infer_task("last_hidden_state", hidden) is None
    assert infer_task("ctc_logits", hidden) == "sequence"
    assert infer_task("output", rng.random((4, 1)).astype(np.float32)) is None


def test_forced_and_disabled_task_metrics() -> None:
    rng = np.random.default_rng(4)
    hidden = rng.normal(size=(4, 12, 8)).astype(np.float32)
    var = hidden.copy()
    var[0, 0] = var[0, 0, ::-1]  # one step's argmax moves
    auto = compare_outputs([hidden], [var], output_axes=[("h", 0)])
    assert auto.drop_metric == "relative-l2"
    forced = compare_outputs([hidden], [var], output_axes=[("h", 0)], metric="sequence")
    assert forced.drop_metric == "step-disagreement" and forced.drop == pytest.approx(1 / 48)  # 1 of 4 x 12 steps
    logits = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    none = compare_outputs([logits], [logits * [1, 1, 0.5]], metric="none")
    assert none.drop_metric == "relative-l2" and none.drop == pytest.approx(0.5)
    with pytest.raises(UsageError, match="detection fits no output"):
        compare_outputs([logits], [logits], metric="detection")


USER_METRIC = """
import numpy as np

def worst_abs(reference, variant):
    return {name: float(np.abs(reference[name] - variant[name]).max()) for name in reference}

def constant(reference, variant):
    return 0.125

def negative(reference, variant):
    return -1.0

NOT_A_FUNCTION = 3
"""


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"user_metric_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_METRIC)
    (tmp_path / "broken_metric_mod.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    (tmp_path / "needs_dep_mod.py").write_text("import not_installed_anywhere_xyz\n")
    monkeypatch.chdir(tmp_path)  # imported from the working directory, not installed
    yield name
    for mod in (name, "broken_metric_mod", "needs_dep_mod"):
        sys.modules.pop(mod, None)


def test_user_metric_from_the_working_directory(user_module: str) -> None:
    ref = np.eye(4, dtype=np.float32)
    var = ref.copy()
    var[0, 1] = 0.3  # top-1 unchanged
    r = compare_outputs([ref], [var], output_axes=[("scores", 0)], metric=f"{user_module}:worst_abs")
    assert r.checks["scores:top1-disagreement"] == 0
    assert r.checks[f"{user_module}:worst_abs[scores]"] == pytest.approx(0.3)
    assert r.drop == pytest.approx(0.3) and r.drop_metric == f"{user_module}:worst_abs[scores]"
    assert r.worst_output == "" and r.output == -1
    both = compare_outputs([ref], [ref], metric=f"none, {user_module}:constant")
    assert both.drop == 0.125 and both.drop_metric == f"{user_module}:constant"
    with pytest.raises(UsageError, match=r"a drop must be in \[0, inf\)"):
        compare_outputs([ref], [ref], metric=f"{user_module}:negative")


def test_bad_metric_specs_are_one_line_usage_errors(user_module: str) -> None:
    cases = {
        "nocolon": "expected module:function",
        "mod:": "expected module:function",
        "no_such_module_xyz:fn": "no module 'no_such_module_xyz'",
        f"{user_module}:missing": "has no 'missing'",
        f"{user_module}:NOT_A_FUNCTION": "is a int, not a function",
        "broken_metric_mod:fn": "importing broken_metric_mod failed: RuntimeError: boom",
        "needs_dep_mod:fn": "no module 'not_installed_anywhere_xyz'",
        "auto,none": "cannot be combined",
        "none,detection": "cannot be combined",
        "classes,,": "empty item",
    }
    for spec, needle in cases.items():
        with pytest.raises(UsageError) as err:
            parse_metric(spec)
        assert needle in str(err.value) and "\n" not in str(err.value), (spec, str(err.value))
    assert callable(load_metric(f"{user_module}:constant"))
    assert parse_metric(None).tasks == "auto" and parse_metric("detection,classes").tasks == ("detection", "classes")
