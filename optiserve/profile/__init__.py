"""Profiling: sweep spec, isolated measuring, statistics and the result store (members load on first use)."""

from optiserve._lazy import lazy_exports

_NAMES = {
    "run_sweep": "profiler",
    "ParquetStore": "store",
    "load_profile": "store",
    "SweepSpec": "sweep",
    "build_spec": "sweep",
    "TimingPolicy": "timing",
    "measure": "timing",
    "warm_up": "timing",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
