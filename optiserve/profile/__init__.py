"""Profiling: sweep spec, isolated measuring, statistics and the result store."""

from optiserve.profile.profiler import run_sweep
from optiserve.profile.store import ParquetStore, load_profile
from optiserve.profile.sweep import SweepSpec, build_spec
from optiserve.profile.timing import TimingPolicy, measure, warm_up

__all__ = ["ParquetStore", "SweepSpec", "TimingPolicy", "build_spec", "load_profile", "measure", "run_sweep", "warm_up"]
