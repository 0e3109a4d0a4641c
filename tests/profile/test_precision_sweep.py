"""Precision as a sweep dimension, end to end through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optiserve.profile.store import load_profile
from optiserve.types import Precision, Status
from tests.conftest import FAST, profile_cli, run_cli


def test_all_precisions_with_accuracy_and_cache(mlp_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = (
        "profile",
        str(mlp_path),
        "--precision",
        "fp32,fp16,bf16,int8-dynamic,int8-static,int4",
        "--batch",
        "1,4",
        "--threads",
        "1",
        *FAST,
        "--cache-dir",
        str(cache),
    )
    first = run_cli(*args, "-o", str(tmp_path / "a"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    rows = {(m.config.precision, m.config.batch_size): m for m in load_profile(tmp_path / "a").measurements}
    assert len(rows) == 12
    for p in (Precision.FP32, Precision.FP16, Precision.INT8_DYNAMIC, Precision.INT8_STATIC):
        for b in (1, 4):
            m = rows[(p, b)]
            assert m.status is Status.OK, m.error
            a = m.accuracy
            assert a is not None and a.synthetic and a.samples >= 32
            assert a.top1_agreement is not None and a.cosine > 0.9 and np.isfinite(a.rel_l2_error)
    assert rows[(Precision.FP32, 1)].accuracy.drop == 0  # type: ignore[union-attr]
    assert "does not support bf16" in rows[(Precision.BF16, 1)].error
    assert "this graph has none" in rows[(Precision.INT4, 1)].error
    built = [m for m in rows.values() if m.variant]
    assert {m.variant["cache_hit"] for m in built if m.config.batch_size == 1} == {False}
    assert {m.variant["cache_hit"] for m in built if m.config.batch_size == 4} == {True}  # built once per recipe

    second = run_cli(*args, "-o", str(tmp_path / "b"), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    again = [m for m in load_profile(tmp_path / "b").measurements if m.variant]
    assert again and all(m.variant["cache_hit"] for m in again)  # a second sweep builds nothing
    assert "0 built" in second.stdout


def test_tolerance_marks_rows(regress_path: Path, tmp_path: Path) -> None:
    proc = profile_cli(
        regress_path,
        tmp_path / "p",
        "--precision",
        "fp32,int8-dynamic",
        "--batch",
        "2",
        "--max-accuracy-drop",
        "0",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {m.config.precision: m for m in load_profile(tmp_path / "p").measurements}
    assert rows[Precision.FP32].within_tolerance is True
    bad = rows[Precision.INT8_DYNAMIC]
    assert bad.within_tolerance is False and bad.accuracy is not None and bad.accuracy.drop_metric == "relative-l2"
    assert any("exceeds 0" in w for w in bad.warnings)


def test_user_data_calibration_and_labels(mlp_path: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", features=rng.standard_normal((16, 64)).astype(np.float32))
    x = rng.standard_normal((40, 64)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", features=x)
    np.save(tmp_path / "labels.npy", rng.integers(0, 10, 40))
    proc = profile_cli(
        mlp_path,
        tmp_path / "p",
        "--precision",
        "fp32,int8-static",
        "--calibrator",
        "minmax,percentile",
        "--batch",
        "4",
        "--calibration",
        str(tmp_path / "calib.npz"),
        "--inputs",
        str(tmp_path / "inputs.npz"),
        "--labels",
        str(tmp_path / "labels.npy"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = load_profile(tmp_path / "p").measurements
    assert len(rows) == 3  # fp32 + int8-static x two calibrators
    for m in rows:
        assert m.status is Status.OK, m.error
        a = m.accuracy
        assert a is not None and not a.synthetic and a.drop_metric == "accuracy"
        assert a.accuracy is not None and a.reference_accuracy is not None and a.samples >= 32
    static = [m for m in rows if m.config.precision is Precision.INT8_STATIC]
    assert {dict(m.config.variant)["calibrator"] for m in static} == {"minmax", "percentile"}
    assert all(dict(m.config.variant)["calibration"] != "synthetic" for m in static)
    assert "SYNTHETIC" not in proc.stdout


def test_precision_auto_explains_its_choice(mlp_path: Path, tmp_path: Path) -> None:
    proc = profile_cli(mlp_path, tmp_path / "p", "--precision", "auto", "--batch", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    prof = load_profile(tmp_path / "p")
    assert [m.config.precision for m in prof.measurements] == [Precision.FP32, Precision.INT8_STATIC]
    assert "precision auto -> fp32 + int8-static for a mlp graph" in prof.meta["precision_auto"]
    assert "precision auto" in proc.stdout


def test_bad_precision_inputs(mlp_path: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "wrong.npz", other=np.zeros((2, 3), np.float32))
    cases = [
        (("--labels", str(tmp_path / "l.npy")), "--labels needs --inputs"),
        (("--calibration", str(tmp_path / "none.npz")), "not found"),
        (("--calibration", str(tmp_path / "wrong.npz")), "lacks features"),
        (("--calibrator", "kl"), "valid calibrators"),
        (("--max-accuracy-drop", "-1"), "--max-accuracy-drop"),
    ]
    for extra, needle in cases:
        proc = profile_cli(mlp_path, tmp_path / "p", "--precision", "int8-static", *extra, cwd=tmp_path)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "p").exists()


def test_fp16_without_fp32_io(mlp_path: Path, tmp_path: Path) -> None:
    proc = profile_cli(
        mlp_path, tmp_path / "p", "--precision", "fp16", "--no-fp16-keep-io", "--batch", "2", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    (m,) = load_profile(tmp_path / "p").measurements
    assert m.status is Status.OK, m.error
    assert dict(m.config.variant) == {"fp16_keep_io": "false"} and "fp16 inputs/outputs" in m.variant["method"]
    assert m.accuracy is not None and m.accuracy.rel_l2_error < 0.01


def test_device_auto_keeps_going_past_unavailable_runtimes(mlp_path: Path, tmp_path: Path) -> None:
    from tests.conftest import _gpu_reason

    proc = profile_cli(mlp_path, tmp_path / "p", "--device", "auto", "--batch", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {m.config.runtime: m for m in load_profile(tmp_path / "p").measurements}
    assert set(rows) == {"onnxruntime-cpu", "openvino", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"}
    assert rows["onnxruntime-cpu"].status is Status.OK
    if _gpu_reason() is not None:
        for name in ("onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"):
            assert rows[name].status is Status.FAILED and "runtime unavailable" in rows[name].error
    bad = profile_cli(mlp_path, tmp_path / "q", "--device", "tpu", cwd=tmp_path)
    assert bad.returncode == 2 and "valid devices: auto, cpu, gpu" in bad.stderr
