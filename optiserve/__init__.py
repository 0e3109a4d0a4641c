"""optiserve: the cheapest way to serve a model at a given traffic inside a latency SLA.

The root imports nothing: ``import optiserve.errors`` (what every worker, server and
load-test process pays first) must not load ONNX, pyarrow or pydantic. The public
names below resolve on first use (PEP 562).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from optiserve._version import __version__

_LAZY = {
    "BenchConfig": "optiserve.types",
    "Measurement": "optiserve.types",
    "Precision": "optiserve.types",
    "Profile": "optiserve.types",
    "OptiserveError": "optiserve.errors",
    "load_profile": "optiserve.profile.store",
    "load_plan": "optiserve.plan.api",
    "plan_frame": "optiserve.plan.api",
    "what_if": "optiserve.plan.api",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'optiserve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
