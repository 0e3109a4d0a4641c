"""Custom-op libraries (``--custom-ops lib.so``), registered in every ONNX Runtime session.

A model with ops outside the ONNX standard (onnxruntime-extensions' ``ai.onnx.contrib``
domain, a vendor's own kernels) loads only where its library is registered in the
session options. The libraries are set once per process — the profiler's worker and
the server — and every session a runtime makes registers them, the fp32 reference
of the accuracy check included, so none of them can be forgotten on one path.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from optiserve.errors import UsageError

_LIBRARIES: list[str] = []


def check(paths: Iterable[Path | str]) -> tuple[str, ...]:
    """Absolute paths of existing shared libraries, or a one-line error naming the missing one."""
    out = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_file():
            raise UsageError(f"custom-op library not found: {p}")
        out.append(str(path.resolve()))
    return tuple(dict.fromkeys(out))


def use(paths: Iterable[Path | str]) -> None:
    """Make ``paths`` the libraries every later session of this process registers."""
    _LIBRARIES[:] = check(paths)


def libraries() -> tuple[str, ...]:
    return tuple(_LIBRARIES)


def register(session_options: Any) -> None:
    """Register the process's custom-op libraries in ONNX Runtime ``SessionOptions``."""
    for lib in _LIBRARIES:
        try:
            session_options.register_custom_ops_library(lib)
        except Exception as exc:
            text = str(exc).strip().splitlines()
            why = text[-1] if text else type(exc).__name__
            raise UsageError(f"cannot load custom-op library {lib}: {why}") from None
