"""Profiles under faults: a second writer, a full disk, a killed parent. Nothing measured
is lost, nothing half-written is left, and the user gets one line."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from optiserve.errors import StoreError
from optiserve.profile.profiler import run_sweep
from optiserve.profile.store import ParquetStore, load_profile
from optiserve.profile.sweep import build_spec
from optiserve.types import Status
from tests.conftest import FAST, profile_cli


def _one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip().startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _digest(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _popen_profile(model: Path, out: Path, batches: str, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "optiserve", "profile", str(model), "--threads", "1", *FAST]
    args += ["--batch", batches, "--timeout", "300", "-o", str(out), *extra]
    return subprocess.Popen(
        args, cwd=out.parent, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_rows(out: Path, n: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "profile.json").exists() and len(load_profile(out).measurements) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the first run wrote no row in time")


@pytest.mark.parametrize("first", ["1,2", "4,8"])
def test_second_writer_is_refused_and_nothing_is_lost(mlp_path: Path, tmp_path: Path, first: str) -> None:
    """Two runs into one folder (either sweep first): the second refuses with one line while the
    first holds the folder; after both have finished with --resume every row of both is there."""
    second = "4,8" if first == "1,2" else "1,2"
    out = tmp_path / "prof"
    hang_on = first.split(",")[1]  # the first run writes one row, then sits in its second config
    a = _popen_profile(mlp_path, out, first, {"OPTISERVE_FAULT": f"hang@batch_size={hang_on}"})
    try:
        _wait_rows(out, 1, a)
        before = _digest(out)
        b = profile_cli(mlp_path, out, "--batch", second, "--resume", cwd=tmp_path)
        _one_line(b, "being written by another", str(out))
        assert _digest(out) == before  # the refused run changed nothing
        a.send_signal(signal.SIGINT)
        _, err = a.communicate(timeout=60)
        assert a.returncode == 130, err
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    kept = {m.config.batch_size for m in load_profile(out).measurements}
    assert kept == {int(first.split(",")[0])}
    for batches in (second, first):  # each finishes its own sweep; neither drops the other's rows
        done = profile_cli(mlp_path, out, "--batch", batches, "--resume", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    final = load_profile(out)
    assert sorted(m.config.batch_size for m in final.measurements) == [1, 2, 4, 8]
    assert all(m.status is Status.OK for m in final.measurements)


def test_a_held_lock_refuses_before_any_work(mlp_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "prof"
    assert profile_cli(mlp_path, out, "--batch", "1", cwd=tmp_path).returncode == 0
    before = _digest(out)
    with ParquetStore(out).writing():
        proc = profile_cli(mlp_path, out, "--batch", "1,2", "--resume", cwd=tmp_path)
    _one_line(proc, "being written by another")
    assert _digest(out) == before


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A disk that fills after ``budget[0]`` more files are synced (a simulated ENOSPC at fsync,
    where a full disk also shows up), in this process: the worker's files are not affected."""
    budget = [0]
    real = os.fsync

    def fsync(fd: int) -> None:
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget[0] -= 1
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    yield budget


def _spec(batches: str) -> object:
    return build_spec(None, {"batch": batches, "threads": "1", "budget": 0.3, "warmup": 0.2, "min_samples": 20})


def test_full_disk_on_a_fresh_run_leaves_no_folder(mlp_path: Path, tmp_path: Path, full_disk: list[int]) -> None:
    out = tmp_path / "new" / "prof"
    with pytest.raises(StoreError, match="no space left") as exc:
        run_sweep(mlp_path, _spec("1,2"), out)  # type: ignore[arg-type]
    assert "\n" not in str(exc.value) and "as it was" in str(exc.value)
    assert not (tmp_path / "new").exists()  # no profile.json without rows, no empty folder


@pytest.mark.parametrize("flag", ["resume", "overwrite"])
def test_full_disk_leaves_an_existing_profile_byte_for_byte(
    mlp_path: Path, tmp_path: Path, full_disk: list[int], flag: str
) -> None:
    out = tmp_path / "prof"
    full_disk[0] = 100
    run_sweep(mlp_path, _spec("1"), out)  # type: ignore[arg-type]
    before = _digest(out)
    full_disk[0] = 0
    with pytest.raises(StoreError, match="no space left"):
        run_sweep(mlp_path, _spec("1,2"), out, **{flag: True})  # type: ignore[arg-type]
    assert _digest(out) == before  # neither the rows nor the sweep settings changed
    assert load_profile(out).meta["sweep"]["batch"] == [1]


def test_full_disk_mid_run_keeps_every_row_written(mlp_path: Path, tmp_path: Path, full_disk: list[int]) -> None:
    out = tmp_path / "prof"
    full_disk[0] = 2  # the first row and its sidecar fit, the second row does not
    with pytest.raises(StoreError, match="1 config") as exc:
        run_sweep(mlp_path, _spec("1,2,4"), out)  # type: ignore[arg-type]
    assert "--resume" in str(exc.value)
    prof = load_profile(out)
    assert [m.config.batch_size for m in prof.measurements] == [1] and prof.meta["complete"] is False
    assert sorted(p.name for p in out.iterdir()) == ["profile.json", "profile.parquet"]  # no temp files
    full_disk[0] = 100
    run_sweep(mlp_path, _spec("1,2,4"), out, resume=True)  # type: ignore[arg-type]
    assert [m.config.batch_size for m in load_profile(out).measurements] == [1, 2, 4]


def _dies(proc: psutil.Process, within_s: float) -> bool:
    """Gone or a zombie (an init that does not reap, as in some containers) within ``within_s``."""
    deadline = time.time() + within_s
    while time.time() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def _can_mount() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.mark.skipif(not _can_mount(), reason="mounting a tiny tmpfs needs root")
def test_real_full_tmpfs_is_one_line(mlp_path: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("mount -t tmpfs failed here")
    try:
        out = mnt / "prof"
        first = profile_cli(mlp_path, out, "--batch", "1,2,4,8", cwd=tmp_path)  # raw samples outgrow 64 KiB
        line = _one_line(first, "no space left")
        kept = load_profile(out).measurements if (out / "profile.json").exists() else ()
        assert str(len(kept)) in line
        before = _digest(out)
        again = profile_cli(mlp_path, out, "--batch", "1,2,4,8,16", "--resume", cwd=tmp_path)
        _one_line(again, "no space left")
        after = load_profile(out).measurements if (out / "profile.json").exists() else ()
        if len(after) == len(kept):
            assert _digest(out) == before  # nothing fitted: the files are untouched
        else:  # a row may fit on the resume when fewer samples were taken (the sample count is timed)
            assert {m.config for m in kept} <= {m.config for m in after}  # nothing measured is lost
        shown = subprocess.run(
            [sys.executable, "-m", "optiserve", "show", str(out)], capture_output=True, text=True, cwd=tmp_path
        )
        assert shown.returncode == (0 if after else 2), shown.stderr
    finally:
        subprocess.run(["umount", str(mnt)])


def test_worker_dies_with_a_killed_parent_and_cleans_up(mlp_path: Path, tmp_path: Path) -> None:
    """kill -9 of ``optiserve profile`` while its worker is busy: the worker goes too, and
    removes its temporary folder."""
    out = tmp_path / "prof"
    parent = _popen_profile(mlp_path, out, "1", {"OPTISERVE_FAULT": "hang@batch_size=1"})
    worker: psutil.Process | None = None
    try:
        deadline = time.time() + 120
        while worker is None and time.time() < deadline:
            kids = [c for c in psutil.Process(parent.pid).children() if "optiserve.profile.worker" in c.cmdline()]
            worker = kids[0] if kids else None
            time.sleep(0.1)
        assert worker is not None, "the worker never started"
        job = Path(worker.cmdline()[-2])
        time.sleep(1.0)  # let it get past its start-up, into the hang
        assert job.exists()
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        assert _dies(worker, 15.0), "the orphaned worker is still running"
        assert not job.parent.exists(), "the worker left its temporary folder"
    finally:
        if parent.poll() is None:
            parent.kill()
        if worker is not None and worker.is_running():
            worker.kill()  # only when the test failed: never leave a hung worker behind


@pytest.mark.parametrize("where", ["folder", "job"])
def test_a_full_temporary_folder_is_one_line_and_loses_nothing(
    mlp_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The temporary folder each worker's job goes to is full (no usable folder at all, or
    ENOSPC writing the job): one line saying so and how to go on; the profile as it was.
    (A real full TMPDIR cannot be staged: Python's tempfile then falls back to /tmp.)"""
    import tempfile

    from optiserve.profile import runner
    from optiserve.profile.profiler import run_sweep

    out = tmp_path / "prof"
    run_sweep(mlp_path, _spec("1"), out)  # type: ignore[arg-type]
    before = _digest(out)
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if where == "folder":

        def no_folder(*a: object, **k: object) -> tempfile.TemporaryDirectory[str]:
            raise enospc

        monkeypatch.setattr(runner.tempfile, "TemporaryDirectory", no_folder)
    else:
        real = Path.write_text

        def full(self: Path, *a: object, **k: object) -> int:
            if self.name == "job.json":
                raise enospc
            return real(self, *a, **k)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(runner.ScratchFullError, match="No space left") as exc:
        run_sweep(mlp_path, _spec("1,2"), out, resume=True)  # type: ignore[arg-type]
    assert "--resume" in str(exc.value) and "\n" not in str(exc.value)
    monkeypatch.undo()
    assert _digest(out) == before
