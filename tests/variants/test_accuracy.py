from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.variants.accuracy import compare_outputs


def test_identical_outputs_have_no_drift() -> None:
    x = np.random.default_rng(0).standard_normal((16, 10)).astype(np.float32)
    r = compare_outputs([x], [x.copy()])
    assert r.max_abs_error == 0 and r.rel_l2_error == 0 and r.cosine == pytest.approx(1.0)
    assert r.top1_agreement == 1.0 and r.drop == 0 and r.drop_metric == "top1-disagreement"
    assert r.samples == 16 and r.synthetic


def _broken_copy(src: Path, dst: Path, scale: float) -> None:
    """A 'variant' whose first layer's weights were scaled wrongly, as a bad quantiser might."""
    model = onnx.load(str(src))
    init = model.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * scale, init.name))
    onnx.save(model, str(dst))


def test_metrics_catch_a_broken_variant(mlp_path: Path, tmp_path: Path) -> None:
    info = inspect_model(mlp_path)
    feeds = make_inputs(info, 64, seed=5)
    ref = ort.InferenceSession(str(mlp_path)).run(None, feeds)
    ok = compare_outputs(ref, ort.InferenceSession(str(mlp_path)).run(None, feeds))
    broken = tmp_path / "broken.onnx"
    _broken_copy(mlp_path, broken, scale=-1.5)
    bad = compare_outputs(ref, ort.InferenceSession(str(broken)).run(None, feeds))
    assert ok.drop == 0 and ok.rel_l2_error == 0
    assert bad.rel_l2_error > 0.5 and bad.cosine < 0.9
    assert bad.top1_agreement is not None and bad.top1_agreement < 0.7
    assert bad.drop > 0.3  # any sensible --max-accuracy-drop refuses it


def test_labels_give_real_accuracy() -> None:
    ref = np.eye(4, dtype=np.float32)[[0, 1, 2, 3]]
    var = np.eye(4, dtype=np.float32)[[0, 1, 2, 2]]
    r = compare_outputs([ref], [var], labels=np.array([0, 1, 2, 3]), synthetic=False)
    assert r.reference_accuracy == 1.0 and r.accuracy == 0.75
    assert r.drop == pytest.approx(0.25) and r.drop_metric == "accuracy" and not r.synthetic


def test_non_class_outputs_use_relative_l2() -> None:
    ref = np.linspace(1, 2, 20, dtype=np.float32).reshape(20, 1)
    r = compare_outputs([ref], [ref * 1.01])
    assert r.top1_agreement is None and r.drop_metric == "relative-l2"
    assert r.drop == pytest.approx(0.01, rel=1e-3)


def test_non_finite_variant_is_infinitely_bad() -> None:
    ref = np.ones((4, 3), np.float32)
    var = ref.copy()
    var[0, 0] = np.nan
    r = compare_outputs([ref], [var])
    assert r.drop == float("inf") and r.max_abs_error == float("inf")


def test_first_float_output_is_compared() -> None:
    ids = np.arange(4, dtype=np.int64)
    ref = np.ones((4, 3), np.float32)
    r = compare_outputs([ids, ref], [ids, ref * 2])
    assert r.output == 1 and r.rel_l2_error == pytest.approx(1.0)
