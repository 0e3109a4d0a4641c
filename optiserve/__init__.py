"""optiserve: the cheapest way to serve a model at a given traffic inside a latency SLA."""

from typing import Any

from optiserve.errors import OptiserveError
from optiserve.profile.store import load_profile
from optiserve.types import BenchConfig, Measurement, Precision, Profile

__version__ = "0.1.0"
__all__ = [
    "BenchConfig",
    "Measurement",
    "OptiserveError",
    "Precision",
    "Profile",
    "__version__",
    "load_plan",
    "load_profile",
    "plan_frame",
    "what_if",
]


def __getattr__(name: str) -> Any:
    """The planner's API loads on first use (it imports Optuna, which ``import optiserve`` should not)."""
    if name in ("load_plan", "plan_frame", "what_if"):
        from optiserve.plan import api

        return getattr(api, name)
    raise AttributeError(f"module 'optiserve' has no attribute {name!r}")
