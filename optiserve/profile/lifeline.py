"""The worker's tie to its parent: a kill -9 of ``optiserve profile`` must not leave a
worker measuring on its own, holding a core and a temporary folder.

The per-config timeout lives in the parent; once the parent is gone nobody would
enforce it, so the worker carries its own deadline too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _set_parent_death_signal(sig: int) -> None:
    """Linux ``prctl(PR_SET_PDEATHSIG)``: the kernel sends ``sig`` when the parent dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def die_with_parent(job: dict[str, Any], tmpdir: Path | None) -> None:
    """An orphaned worker must not go on measuring: on the parent's death (a signal from
    the kernel, or a watchdog that sees the parent pid change) or past its own deadline
    it removes its temporary folder and takes down its process group."""
    parent = int(job.get("parent_pid") or os.getppid())
    timeout = job.get("timeout_s")
    deadline = time.monotonic() + float(timeout) + 15.0 if timeout else None

    def die(*_: Any) -> None:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        if os.getpgrp() == os.getpid():  # the runner starts us as a group leader: take children along
            with contextlib.suppress(OSError):
                os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(1)

    signal.signal(signal.SIGTERM, die)
    _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the signal was armed
        die()

    def watch() -> None:
        while True:
            time.sleep(0.25)
            if os.getppid() != parent or (deadline is not None and time.monotonic() > deadline):
                die()

    threading.Thread(target=watch, name="optiserve-parent-watchdog", daemon=True).start()
