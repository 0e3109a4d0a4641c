import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from optiserve._rows import measurement_from_row, measurement_row
from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.profile.store import _SCHEMA, ParquetStore, load_profile
from optiserve.types import (
    BenchConfig,
    LatencyStats,
    Measurement,
    Precision,
    Status,
)
from optiserve.variants.accuracy import compare_outputs, group_axis, group_errors

REPO = Path(__file__).resolve().parents[2]


def test_identical_outputs_have_no_drift() -> None:
    x = np.random.default_rng(0).standard_normal((16, 10)).astype(np.float32)
    r = compare_outputs([x], [x.copy()])
    assert r.max_abs_error == 0 and r.rel_l2_error == 0 and r.cosine == pytest.approx(1.0)
    assert r.top1_agreement == 1.0 and r.drop == 0 and r.drop_metric == "top1-disagreement"
    assert r.samples == 16 and r.synthetic and r.group_error == 0


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
    assert r.top1_agreement is None and r.drop_metric == "relative-l2" and r.worst_group == "[:, 0]"
    assert r.drop == pytest.approx(0.01, rel=2e-2)  # |r - v| / max(|r|, |v|): 0.01 / 1.01


def test_non_finite_variant_is_infinitely_bad() -> None:
    ref = np.ones((4, 3), np.float32)
    var = ref.copy()
    var[0, 0] = np.nan
    r = compare_outputs([ref], [var])
    assert r.drop == float("inf") and r.max_abs_error == float("inf")
    assert r.worst_group == "[:, 0]" and "non-finite" in r.per_output["output0"]["note"]


def test_every_output_is_judged_by_name() -> None:
    ids = np.arange(4, dtype=np.int64)
    scores = np.eye(4, dtype=np.float32)
    state = np.linspace(1, 2, 64, dtype=np.float32).reshape(4, 2, 8)  # [N, 2, 8]: no known task
    axes = [("ids", 0), ("scores", 0), ("state", 0)]
    fine = compare_outputs([ids, scores, state], [ids, scores, state], output_axes=axes)
    assert fine.drop == 0 and set(fine.per_output) == {"ids", "scores", "state"}
    # the first float output is untouched; before, nothing else was looked at
    r = compare_outputs([ids, scores, state], [ids, scores, state * [[1.0], [0.5]]], output_axes=axes)
    assert r.worst_output == "state" and r.output == 2 and r.worst_group == "[:, 1, :]"
    assert r.drop == pytest.approx(0.5) and r.checks["scores:top1-disagreement"] == 0
    changed = compare_outputs([ids, scores, state], [ids[::-1], scores, state], output_axes=axes)
    assert changed.worst_output == "ids" and changed.drop_metric == "mismatch" and changed.drop == 1.0
    json.dumps(r.per_output)  # JSON-able, as the store writes it


def _detector(n: int = 8, anchors: int = 500, confident: bool = False) -> np.ndarray:
    """[N, anchors, 4+1+1] as a YOLO head decodes it: pixel boxes beside sigmoid scores."""
    rng = np.random.default_rng(1)
    out = np.empty((n, anchors, 6), np.float32)
    out[..., 0:2] = rng.uniform(0, 316, (n, anchors, 2))
    out[..., 2:4] = rng.uniform(8, 120, (n, anchors, 2))
    out[..., 4] = rng.uniform(0.001, 0.05, (n, anchors))
    out[..., 5] = rng.uniform(0.2, 0.9, (n, anchors))
    if confident:
        out[:, :10, 4] = 0.95  # ten sure boxes per image
    return out


def test_a_destroyed_group_fails_though_the_whole_output_barely_moved() -> None:
    ref = _detector()
    var = ref.copy()
    var[..., 5] = 0.0  # one uint8 scale shared with coordinates up to 316: the class scores round to 0
    r = compare_outputs([ref], [var], output_axes=[("output", 0)])
    assert r.rel_l2_error < 0.01  # the old gate: passes any tolerance
    assert r.drop == pytest.approx(1.0) and r.drop_metric == "relative-l2"
    assert r.worst_output == "output" and r.worst_group == "[:, :, 5]"
    out = r.per_output["output"]
    assert out["task"] == "detection" and out["judged_by"] == "groups" and "no verdict" in out["note"]
    assert out["group_errors"][:4] == pytest.approx([0, 0, 0, 0])
    # with confident boxes, the detection metric judges it: nothing is detected any more
    ref = _detector(confident=True)
    var = ref.copy()
    var[..., 5] = 0.0
    d = compare_outputs([ref], [var], output_axes=[("output", 0)])
    assert d.drop_metric == "detection-disagreement" and d.drop == pytest.approx(1.0)


def test_group_rule_is_robust_at_zero() -> None:
    rng = np.random.default_rng(2)
    ref = np.stack([rng.normal(0, 50, 64), np.full(64, 1e-9), np.full(64, 0.5)], axis=1)
    noisy = ref.copy()
    noisy[:, 1] = rng.normal(0, 1e-9, 64)  # float noise on an all-~0 group
    _, errs = group_errors(ref, noisy, 0)
    assert errs[1] < 1e-6
    collapsed = ref.copy()
    collapsed[:, 2] = 0.0  # a constant group gone to 0
    _, errs = group_errors(ref, collapsed, 0)
    assert errs[2] == pytest.approx(1.0) and errs[0] == 0
    blown = ref.copy()
    blown[:, 1] = 1e3  # never more than 2, whatever the variant does
    _, errs = group_errors(ref, blown, 0)
    assert 0.99 < errs[1] <= 2


def test_group_axes_exclude_the_batch_axis() -> None:
    assert group_axis((8, 3549, 6), 0) == 2  # detector attributes last
    assert group_axis((8, 84, 8400), 0) == 1  # attributes first (YOLOv8)
    assert group_axis((8, 64, 56, 56), 0) == 1  # channels
    assert group_axis((50, 8, 10), 1) == 2  # [T, N, C]: not the batch axis
    assert group_axis((8, 10), 0) == 1 and group_axis((8,), 0) is None
    assert group_axis((2, 8, 128), 1) == 0  # a recurrent state [layers, N, hidden]
    # an unbatched output: every axis may hold the groups
    assert group_axis((4, 128), None) == 0


def test_sequence_output_with_batch_on_axis_1() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1, (20, 4, 6)).astype(np.float32)  # [T, N, C], as CTC heads often are
    logits[:, :, 0] += 4  # mostly blank
    var = logits.copy()
    var[5, 2] = 0
    var[5, 2, 3] = 9  # one changed step
    r = compare_outputs([logits], [var], output_axes=[("ctc_logits", 1)])
    assert r.samples == 4 and r.drop_metric == "step-disagreement"
    info = r.per_output["ctc_logits"]["task_info"]
    assert info["steps"] == 80 and info["blank"] == 0
    assert r.drop == pytest.approx(1 / info["counted"])


def test_accuracy_columns_round_trip_and_old_rows_still_read() -> None:
    ref = _detector()
    var = ref.copy()
    var[..., 5] *= 0.5
    acc = compare_outputs([ref], [var], output_axes=[("output", 0)])
    stats = LatencyStats(3, 1.0, 0.1, 0.9, 1.1, 1.0, 1.1, 1.1, 1.1, 1.1, 1.0, 1.2)
    m = Measurement(BenchConfig("onnxruntime-cpu", Precision.INT8_STATIC, 1, 1), Status.OK, stats=stats, accuracy=acc)
    row = measurement_row(m)
    assert json.loads(row["acc_per_output"])["output"]["worst_group"] == "[:, :, 5]"
    back = measurement_from_row(row)
    assert back.accuracy == acc
    old = {k: v for k, v in row.items() if k not in ("acc_worst_output", "acc_worst_group", "acc_group_error")}
    old = {k: v for k, v in old.items() if k not in ("acc_checks", "acc_per_output")}
    a = measurement_from_row(old).accuracy
    assert a is not None and a.drop == acc.drop and a.worst_output == "" and a.checks == {} and a.per_output == {}


def test_reference_profiles_written_before_still_load() -> None:
    prof = load_profile(REPO / "profiles" / "reference" / "cnn-int8")
    a = [m.accuracy for m in prof.measurements if m.accuracy]
    assert a and all(x.checks == {} and x.worst_group == "" and x.group_error is None for x in a)


def test_store_keeps_the_new_columns(tmp_path: Path) -> None:
    if "acc_checks" not in _SCHEMA.names:
        pytest.skip("the Parquet schema (profile/store.py) has no acc_checks column yet")
    ref = _detector()
    acc = compare_outputs([ref], [ref * 0.9], output_axes=[("output", 0)])
    m = Measurement(BenchConfig("onnxruntime-cpu", Precision.FP16, 1, 1), Status.OK, accuracy=acc)
    store = ParquetStore(tmp_path / "p")
    store.create({"model": {"name": "det", "sha256": "0" * 64}, "hardware": {"id": "x"}})  # what every profile has
    store.append(replace(m))
    assert store.load().measurements[0].accuracy == acc


def _ddddocr_detector() -> Path:
    spec = importlib.util.find_spec("ddddocr")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ddddocr is not installed: its detector is the real-model case")
    path = Path(next(iter(spec.submodule_search_locations))) / "common_det.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    return path


def test_real_detector_int8_static_loses_its_objectness(tmp_path: Path) -> None:
    """ddddocr's YOLOX head [1, 3549, 4+1+1] at per-tensor int8: one uint8 scale for box
    offsets and objectness. The whole output moves a few percent, objectness by half."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src = _ddddocr_detector()
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter([{"images": rng.random((1, 3, 416, 416), dtype=np.float32)} for _ in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    dst = tmp_path / "int8.onnx"
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=False,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    feeds = [{"images": rng.random((1, 3, 416, 416), dtype=np.float32)} for _ in range(4)]
    ref_s, var_s = ort.InferenceSession(str(src)), ort.InferenceSession(str(dst))
    ref = [np.concatenate([ref_s.run(None, f)[0] for f in feeds])]
    var = [np.concatenate([var_s.run(None, f)[0] for f in feeds])]
    r = compare_outputs(ref, var, output_axes=[("output", 0)])
    assert r.per_output["output"]["task"] == "detection"  # recognised, but no confident box on noise
    assert r.worst_group == "[:, :, 4]" and r.drop_metric == "relative-l2"
    assert r.drop > 3 * r.rel_l2_error and r.drop > 0.2


def _two_layouts(path: Path) -> Path:
    """logits [N, 3] and the same values transposed [3, N]: a batch axis that is not 0."""
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"]), helper.make_node("Transpose", ["logits"], ["t"])]
    graph = helper.make_graph(
        nodes,
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("t", TensorProto.FLOAT, [3, "batch"]),
        ],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_evaluate_joins_each_output_along_its_batch_axis(tmp_path: Path) -> None:
    from optiserve.errors import UsageError
    from optiserve.profile.evaluation import evaluate
    from optiserve.runtimes import get_runtime

    model = _two_layouts(tmp_path / "two.onnx")
    rt = get_runtime("onnxruntime-cpu")
    session = rt.load(model, Precision.FP32, 1, {})
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((2, 4)).astype(np.float32)} for _ in range(3)]
    config = BenchConfig("onnxruntime-cpu", Precision.FP32, 2, 1)
    r = evaluate(rt, model, session, config, batches, None, True, output_axes=[("logits", 0), ("t", 1)])
    assert r.per_output["t"]["shape"] == [3, 6] and r.per_output["t"]["batch_axis"] == 1
    assert r.per_output["t"]["task"] == "classes" and r.drop == 0 and r.samples == 6
    with pytest.raises(UsageError, match="expected module:function"):
        evaluate(rt, model, session, config, batches, None, True, metric="nocolon")
    session.close()
