"""optiserve: the cheapest way to serve a model at a given traffic inside a latency SLA."""

from optiserve.errors import OptiserveError
from optiserve.profile.store import load_profile
from optiserve.types import BenchConfig, Measurement, Precision, Profile

__version__ = "0.1.0"
__all__ = ["BenchConfig", "Measurement", "OptiserveError", "Precision", "Profile", "__version__", "load_profile"]
