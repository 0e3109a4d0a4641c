"""Run each config in a child process so one crash, hang or OOM costs one row.

The child gets its own session (process group): Ctrl-C in the terminal reaches
only the parent, which then kills the child and keeps what is on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optiserve._rows import measurement_from_row
from optiserve.errors import UsageError
from optiserve.types import BenchConfig, Measurement, Status


def _describe_exit(rc: int, stderr_tail: str) -> str:
    if rc < 0:
        sig = signal.Signals(-rc).name
        why = {
            "SIGKILL": "killed (SIGKILL): most likely the out-of-memory killer",
            "SIGSEGV": "crashed with a segmentation fault (SIGSEGV)",
            "SIGABRT": "crashed: aborted (SIGABRT)",
        }.get(sig, f"crashed with {sig}")
    else:
        why = f"worker exited with status {rc}"
    return f"{why}{': ' + stderr_tail if stderr_tail else ''}"


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(t.strip() for t in text[-lines:])[:300]


_HINT = " (every finished config is on disk; free space or set TMPDIR, then --resume)"


class ScratchFullError(UsageError):
    """The temporary folder the workers run in cannot be written (full, read-only)."""


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    try:
        holder = tempfile.TemporaryDirectory(prefix="optiserve-")
    except OSError as exc:
        where = tempfile.gettempdir()
        raise ScratchFullError(f"cannot make a worker folder in {where}: {exc.strerror}{_HINT}") from None
    with holder as tmpdir:
        yield Path(tmpdir)


def run_isolated(job: dict[str, Any], timeout_s: float) -> Measurement:
    """Measure ``job`` in a fresh interpreter; every outcome is a ``Measurement``."""
    config = BenchConfig.from_dict(job["config"])
    with _scratch() as tmp:
        job_path, out_path, err_path = tmp / "job.json", tmp / "result.json", tmp / "stderr.txt"
        try:
            job_path.write_text(json.dumps(job))
        except OSError as exc:
            raise ScratchFullError(f"cannot write the worker's job in {tmp.parent}: {exc.strerror}{_HINT}") from None
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with err_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "optiserve.profile.worker", str(job_path), str(out_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
                env=env,
            )
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill(proc)
                return Measurement(config, Status.FAILED, error=f"timed out after {timeout_s:.0f} s")
            except BaseException:
                _kill(proc)
                raise
        if rc != 0 or not out_path.exists():
            return Measurement(config, Status.FAILED, error=_describe_exit(rc, _tail(err_path)))
        return measurement_from_row(json.loads(out_path.read_text()))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
