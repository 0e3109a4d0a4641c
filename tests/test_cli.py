"""The command line as a user meets it: real subprocesses, real sweeps, bad input."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optiserve.profile.store import load_profile
from optiserve.types import Status
from tests.conftest import FAST, profile_cli, run_cli


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], lines[0]


def test_profile_show_and_resume(mlp_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "prof"
    proc = profile_cli(mlp_path, out, "--batch", "1,4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "p99" in proc.stdout and "profile written" in proc.stdout
    prof = load_profile(out)
    assert prof.meta["complete"] is True and len(prof.measurements) == 2
    assert all(m.status is Status.OK for m in prof.measurements)
    meta = prof.meta
    assert len(meta["model"]["sha256"]) == 64 and meta["hardware"]["cpu_model"]
    assert meta["versions"]["onnxruntime"] and meta["sweep"]["batch"] == [1, 4]
    df = prof.to_pandas()
    for col in (
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "p999_ms",
        "mean_ms",
        "std_ms",
        "throughput",
        "load_time_s",
        "peak_rss_mb",
        "samples_ns",
        "warnings",
    ):
        assert col in df.columns and df[col].notna().all(), col

    again = profile_cli(mlp_path, out, "--batch", "1,4", "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert load_profile(out).measurements == prof.measurements  # measured nothing

    shown = run_cli("show", str(out), cwd=tmp_path)
    assert shown.returncode == 0 and "p99" in shown.stdout and "mlp" in shown.stdout


def test_resume_adds_only_missing_configs(mlp_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "prof"
    assert profile_cli(mlp_path, out, "--batch", "1", cwd=tmp_path).returncode == 0
    first = load_profile(out).measurements
    proc = profile_cli(mlp_path, out, "--batch", "1,2", "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    after = load_profile(out).measurements
    assert after[0] == first[0] and [m.config.batch_size for m in after] == [1, 2]


def test_failing_config_does_not_stop_the_sweep(mlp_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "prof"
    proc = profile_cli(mlp_path, out, "--batch", "1,2,4", cwd=tmp_path, env={"OPTISERVE_FAULT": "crash@batch_size=2"})
    assert proc.returncode == 0, proc.stderr
    rows = {m.config.batch_size: m for m in load_profile(out).measurements}
    assert rows[1].status is Status.OK and rows[4].status is Status.OK
    assert rows[2].status is Status.FAILED and "SIGABRT" in rows[2].error
    assert "FAILED" in proc.stdout


def test_interrupt_leaves_a_readable_partial_profile(mlp_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "prof"
    args = [
        sys.executable,
        "-m",
        "optiserve",
        "profile",
        str(mlp_path),
        "--batch",
        "1,2,4,8,16,32",
        "--threads",
        "1",
        "--budget",
        "1",
        "--warmup",
        "0.2",
        "--target-ci",
        "0.0001",
        "-o",
        str(out),
    ]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "profile.parquet").exists() and len(load_profile(out).measurements) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    partial = load_profile(out)
    assert 2 <= len(partial.measurements) < 6 and partial.meta["complete"] is False
    assert all(m.status is Status.OK for m in partial.measurements)

    shown = run_cli("show", str(out), cwd=tmp_path)
    assert "PARTIAL" in shown.stdout

    done = profile_cli(mlp_path, out, "--batch", "1,2,4,8,16,32", "--resume", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    final = load_profile(out)
    assert len(final.measurements) == 6 and final.meta["complete"] is True
    assert final.measurements[: len(partial.measurements)] == partial.measurements


def test_bad_inputs_get_one_line_and_exit_2(mlp_path: Path, seq_model: Path, tmp_path: Path) -> None:
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("hello")
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    base = ("--threads", "1", *FAST)
    cases = [
        (("profile", str(tmp_path / "missing.onnx"), *base), ["not found"]),
        (("profile", str(not_onnx), *base), ["not a readable ONNX model"]),
        (("profile", str(mlp_path), "--runtime", "tvm", *base), ["unknown runtime 'tvm'", "onnxruntime-cpu"]),
        (("profile", str(mlp_path), "--precision", "fp64", *base), ["fp64", "int8-static"]),
        (("profile", str(mlp_path), "--batch", "1,two", *base), ["--batch", "1,two"]),
        (("profile", str(seq_model), *base), ["'seq'", "--shape seq=N"]),
        (("profile", str(mlp_path), *base, "-o", str(blocker / "out")), ["cannot write profile"]),
        (("profile", str(mlp_path), "--option", "turbo=on", *base), ["turbo", "graph_optimization"]),
        (("profile", str(mlp_path), "--shape", "seq=4", *base), ["seq", "features"]),
        (("profile", "gpt5", *base), ["zoo models", "mlp"]),
        (("show", str(tmp_path / "nothing")), ["no profile"]),
    ]
    for args, needles in cases:
        _one_line_error(run_cli(*args, cwd=tmp_path), *needles)
    assert not (tmp_path / "profiles").exists()  # nothing written for bad input


def test_existing_profile_is_never_clobbered(mlp_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "prof"
    assert profile_cli(mlp_path, out, "--batch", "1", cwd=tmp_path).returncode == 0
    before = load_profile(out).measurements
    _one_line_error(
        profile_cli(mlp_path, out, "--batch", "1", cwd=tmp_path),
        "--resume",
        "--overwrite",
    )
    assert load_profile(out).measurements == before
    other = tmp_path / "other.onnx"
    from optiserve.models.zoo import build_zoo

    build_zoo(tmp_path / "z", ["mlp"], seed=7)
    (tmp_path / "z" / "mlp.onnx").rename(other)
    _one_line_error(
        profile_cli(other, out, "--batch", "1", "--resume", cwd=tmp_path),
        "different model",
    )
    assert load_profile(out).measurements == before


def test_dynamic_dim_via_shape_flag(seq_model: Path, tmp_path: Path) -> None:
    proc = profile_cli(seq_model, tmp_path / "p", "--shape", "seq=16", "--batch", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert load_profile(tmp_path / "p").measurements[0].status is Status.OK


def test_sweep_file(mlp_path: Path, tmp_path: Path) -> None:
    f = tmp_path / "sweep.yaml"
    f.write_text("batch: [2]\nthreads: [1]\nbudget: 0.3\nwarmup: 0.2\nmin_samples: 20\n")
    proc = run_cli("profile", str(mlp_path), "--sweep", str(f), "-o", str(tmp_path / "p"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (m,) = load_profile(tmp_path / "p").measurements
    assert m.config.batch_size == 2


def test_env_and_models(tmp_path: Path) -> None:
    proc = run_cli("env", cwd=tmp_path)
    assert proc.returncode == 0 and "onnxruntime-cpu" in proc.stdout and "CPU" in proc.stdout
    proc = run_cli("models", "list", cwd=tmp_path)
    assert proc.returncode == 0 and "resnet50" in proc.stdout
    proc = run_cli("models", "build", "mlp", "--out", str(tmp_path / "m"), cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "m" / "mlp.onnx").exists()
    proc = run_cli("models", "build", "nope", "--out", str(tmp_path / "m"), cwd=tmp_path)
    _one_line_error(proc, "unknown model 'nope'")


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_resume_or_overwrite_on_fresh_folder(mlp_path: Path, tmp_path: Path, flag: str) -> None:
    proc = profile_cli(mlp_path, tmp_path / "p", "--batch", "1", flag, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
