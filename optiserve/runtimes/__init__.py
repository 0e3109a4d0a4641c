"""Runtime back ends behind one protocol, found by name in an explicit registry."""

from optiserve.runtimes.base import Runtime, Session
from optiserve.runtimes.registry import (
    REGISTRY,
    RUNTIMES,
    availability,
    check_options,
    get_runtime,
    runtime_names,
)

__all__ = [
    "REGISTRY",
    "RUNTIMES",
    "Runtime",
    "Session",
    "availability",
    "check_options",
    "get_runtime",
    "runtime_names",
]
