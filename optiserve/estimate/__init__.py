"""Prediction: service-time models from profiles and the queueing simulator."""

from optiserve.estimate.arrivals import gamma_arrivals, poisson_arrivals, trace_arrivals
from optiserve.estimate.service import ServiceModel
from optiserve.estimate.simulator import BatchingPolicy, SimResult, max_rate_for_p99, simulate

__all__ = [
    "BatchingPolicy",
    "ServiceModel",
    "SimResult",
    "gamma_arrivals",
    "max_rate_for_p99",
    "poisson_arrivals",
    "simulate",
    "trace_arrivals",
]
