"""Profiling models whose inputs are not all batched on axis 0, or whose batch is fixed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from optiserve.models.zoo import save_atomic
from optiserve.profile.store import load_profile
from optiserve.types import InputLayout, Status
from tests.conftest import profile_cli, run_cli


def _one_line(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def test_state_and_scalar_inputs_profile_with_real_inputs(stateful_model: Path, tmp_path: Path) -> None:
    npz = tmp_path / "audio.npz"
    rng = np.random.default_rng(0)
    np.savez(
        npz,
        x=rng.standard_normal((6, 16)).astype(np.float32),
        state=np.zeros((2, 6, 4), np.float32),  # six samples along the state's batch axis 1
        sr=np.array(16000, np.int64),  # 0-d: passed as given, never batched
    )
    out = tmp_path / "prof"
    proc = profile_cli(stateful_model, out, "--batch", "1,4", "--inputs", str(npz), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    prof = load_profile(out)
    assert [m.status for m in prof.measurements] == [Status.OK, Status.OK], [m.error for m in prof.measurements]
    lay = InputLayout.from_dict(prof.meta["layout"])
    assert {t.name: t.batch_axis for t in lay.inputs} == {"x": 0, "state": 1, "sr": None}
    assert lay.get("x").shape == (1, 16)  # the open dim taken from the user's file
    assert all(m.accuracy is not None and m.accuracy.max_abs_error == 0 for m in prof.measurements)
    shown = run_cli("show", str(out), cwd=tmp_path)
    assert "state[2,N,4]" in shown.stdout and "sr (scalar, not batched)" in shown.stdout


def test_bad_scalar_and_missing_dim_are_one_line(stateful_model: Path, tmp_path: Path) -> None:
    _one_line(profile_cli(stateful_model, tmp_path / "p", cwd=tmp_path), "--shape seq=N")
    npz = tmp_path / "bad.npz"
    np.savez(npz, x=np.ones((2, 8), np.float32), state=np.zeros((2, 2, 4), np.float32), sr=np.array([16000]))
    _one_line(profile_cli(stateful_model, tmp_path / "p", "--inputs", str(npz), cwd=tmp_path), "'sr' has 1 dims")
    npz0 = tmp_path / "zero.npz"
    np.savez(npz0, x=np.array(1.0, np.float32), state=np.zeros((2, 2, 4), np.float32), sr=np.array(16000))
    _one_line(profile_cli(stateful_model, tmp_path / "p", "--inputs", str(npz0), cwd=tmp_path), "'x' has 0 dims")
    _one_line(
        profile_cli(stateful_model, tmp_path / "p", "--shape", "seq=8", "--batch-axis", "state=5", cwd=tmp_path),
        "--batch-axis state=5",
    )


def test_fixed_batch_sweeps_what_the_model_takes(tmp_path: Path) -> None:
    """A detector exported at batch 1 under the default sweep: batch 1 only, said once, no failed rows."""
    w = onnx.numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["y"], pads=[1, 1, 1, 1])],
        "det",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "det.onnx"
    save_atomic(model, path)
    out = tmp_path / "prof"
    proc = profile_cli(path, out, cwd=tmp_path)  # default batches 1,2,4,8,16
    assert proc.returncode == 0, proc.stderr
    prof = load_profile(out)
    assert [m.config.batch_size for m in prof.measurements] == [1]
    assert all(m.status is Status.OK for m in prof.measurements)
    assert "fixes its batch at 1" in proc.stdout and proc.stdout.count("fixes its batch") == 1


def test_shape_of_an_input_with_commas(tmp_path: Path) -> None:
    """PaddleOCR-style input [-1, 3, ?, ?]: --shape x=3,48,64 (commas, as a user writes it)."""
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["y"])],
        "cls",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    path = tmp_path / "cls.onnx"
    save_atomic(model, path)
    out = tmp_path / "prof"
    proc = profile_cli(path, out, "--batch", "2", "--shape", "x=3,48,64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert InputLayout.from_dict(load_profile(out).meta["layout"]).get("x").shape == (1, 3, 48, 64)


def test_resume_with_other_shapes_is_refused(stateful_model: Path, tmp_path: Path) -> None:
    """A profile's rows are at its recorded shapes: --resume with another --shape would mix sequence lengths."""
    out = tmp_path / "prof"
    assert profile_cli(stateful_model, out, "--batch", "1", "--shape", "seq=8", cwd=tmp_path).returncode == 0
    again = profile_cli(stateful_model, out, "--batch", "1,2", "--shape", "seq=16", "--resume", cwd=tmp_path)
    _one_line(again, "was measured with other input shapes")
    same = profile_cli(stateful_model, out, "--batch", "1,2", "--shape", "seq=8", "--resume", cwd=tmp_path)
    assert same.returncode == 0 and len(load_profile(out).measurements) == 2


def test_the_config_key_holds_the_shapes_fed(stateful_model: Path, tmp_path: Path) -> None:
    """Two sequence lengths are two configs (keys differ), and rows written before the
    shapes were in the key still count as done for a resume at the same shapes."""
    import shutil
    from dataclasses import replace

    a, b = tmp_path / "a", tmp_path / "b"
    assert profile_cli(stateful_model, a, "--batch", "1", "--shape", "seq=8", cwd=tmp_path).returncode == 0
    assert profile_cli(stateful_model, b, "--batch", "1", "--shape", "seq=16", cwd=tmp_path).returncode == 0
    (ra,), (rb,) = load_profile(a).measurements, load_profile(b).measurements
    assert "seq" in ra.config.inputs or "8" in ra.config.inputs, ra.config.inputs
    assert ra.config.inputs != rb.config.inputs and ra.config.key != rb.config.key
    assert replace(ra.config, inputs="").key == replace(rb.config, inputs="").key  # only the shapes differ
    # a profile written before inputs were in the key: same rows, legacy keys, no inputs column
    import pyarrow.parquet as pq

    legacy = tmp_path / "legacy"
    shutil.copytree(a, legacy)
    table = pq.read_table(legacy / "profile.parquet")
    table = table.drop(["inputs"]).set_column(
        table.schema.get_field_index("key"), "key", [[replace(ra.config, inputs="").key]]
    )
    pq.write_table(table, legacy / "profile.parquet")
    assert load_profile(legacy).measurements[0].config.inputs == ""
    again = profile_cli(stateful_model, legacy, "--batch", "1", "--shape", "seq=8", "--resume", cwd=tmp_path)
    assert again.returncode == 0 and len(load_profile(legacy).measurements) == 1  # nothing measured twice
