"""The prediction a load test is judged against: the queueing simulator run on the
test's own schedule with the served configuration, plus what the simulator does not
model (the server's CPU per request, the latency outside the server).

``loadtest --predict-from`` and the load-fidelity benchmark both predict and
calibrate through these functions, so the figure the README quotes is the one
users get.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from optiserve._files import read_json
from optiserve.errors import UsageError
from optiserve.estimate import BatchingPolicy, ServiceModel, simulate
from optiserve.estimate.served import served_path
from optiserve.profile.serving import serving_terms
from optiserve.profile.store import load_profile


@dataclass(frozen=True)
class ServedConfig:
    """How the server under test runs the model (its ``serve`` flags)."""

    precision: str = "fp32"
    threads: int = 1
    max_batch: int = 8
    max_delay_ms: float = 2.0
    instances: int = 1
    server_cpus: int = 0  # CPUs the server process may use (0: unknown, the front end has a core of its own)

    @property
    def shared_core(self) -> bool:
        """No CPU left beside the inference threads: the event loop's work queues with inference."""
        return 0 < self.server_cpus <= self.threads * self.instances


@dataclass(frozen=True)
class ServerModel:
    """The served configuration as the simulator sees it, and where its serving terms came from."""

    service: ServiceModel
    policy: BatchingPolicy
    per_request_ms: float
    overhead_ms: float
    measured_terms: bool  # True: profile --serving measured them; False: given by hand (or none)
    basis: str = ""  # the measured terms in words
    fixed_quantiles_ms: tuple[float, ...] = ()  # the fixed term's measured spread: drawn per request


@dataclass(frozen=True)
class Forecast:
    """The predicted record a load-test result carries, and the per-request simulated latencies."""

    record: dict[str, Any]
    service_ms: np.ndarray  # per scheduled request, without any overhead: what --overhead-from subtracts


def server_model(
    profile: Path,
    config: ServedConfig,
    per_request_ms: float | None = None,
    overhead_ms: float | None = None,
    encoding: str = "auto",
) -> ServerModel:
    """The profile's service times under ``config``; serving terms measured by ``profile --serving``
    unless either is given, in which case hand-given CPU per request is charged per row."""
    if (per_request_ms or 0) < 0 or (overhead_ms or 0) < 0:
        raise UsageError("--per-request-ms and --overhead-ms must be >= 0")
    prof = load_profile(profile)
    service = ServiceModel.from_profile(prof, None, config.precision, config.threads)
    delay_s = config.max_delay_ms / 1e3
    wanted = None if encoding == "auto" else encoding
    terms = serving_terms(prof, wanted) if per_request_ms is None and overhead_ms is None else None
    if terms is not None:  # the serving path profile --serving measured: what the planner uses
        # On a core shared with inference the front end is charged per row (measured on a Zen 3 guest, server
        # on one CPU: a separate front-end station predicted the CNN's p99 at 50-80% of capacity 0.53-0.54x of
        # the measured); with a core to spare it is a station, REST's stretching each call (the GIL).
        served, policy = served_path(service, terms, config.max_batch, delay_s, config.instances, config.shared_core)
        spread = tuple(q * 1e3 for q in terms.fixed_quantiles_s)
        basis = terms.describe() + ("; front end on the inference core" if config.shared_core else "")
        return ServerModel(served, policy, terms.frontend_s * 1e3, terms.fixed_s * 1e3, True, basis, spread)
    per_request_ms, overhead_ms = per_request_ms or 0.0, overhead_ms or 0.0
    # hand-given CPU per request shares the inference core: modelled per row
    policy = BatchingPolicy(config.max_batch, delay_s, (), config.instances, 1, 0.0, overhead_ms / 1e3)
    return ServerModel(service.plus_per_item(per_request_ms / 1e3), policy, per_request_ms, overhead_ms, False)


def simulated_ms(schedule: np.ndarray, service: ServiceModel, policy: BatchingPolicy, seed: int = 0) -> np.ndarray:
    """Simulated latency (ms) of every scheduled request."""
    return simulate(np.asarray(schedule, dtype=np.float64), service, policy, seed).latency_s * 1e3


def with_overheads(latency_ms: np.ndarray, overhead_ms: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """``latency_ms`` plus an overhead drawn per request from a calibration run's measured ones."""
    if overhead_ms is None or not overhead_ms.size:
        return latency_ms
    drawn = np.random.default_rng(seed).choice(overhead_ms, latency_ms.size)
    total: np.ndarray = latency_ms + drawn
    return total


def measured_overheads(latency_ms: Any, index: Any, service_ms: np.ndarray) -> np.ndarray:
    """Measured minus simulated latency per completed request of a light-load run:
    what the simulator does not model (client, HTTP, network)."""
    simulated = service_ms[np.asarray(index, dtype=np.int64)]
    overheads: np.ndarray = np.asarray(latency_ms, dtype=np.float64) - simulated
    return overheads


def overheads_from(path: Path) -> np.ndarray:
    """The measured overheads of a ``loadtest --predict-from --json`` result."""
    data = read_json(path, "load-test result")
    try:
        lat = np.asarray(data["latency_ms"], dtype=np.float64)
        idx = np.asarray(data["index"], dtype=np.int64)
        sim = np.asarray(data["predicted_service_ms"], dtype=np.float64)
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{path} is not a loadtest --json result made with --predict-from") from None
    if lat.size == 0 or idx.size != lat.size or (idx.size and idx.max() >= sim.size):
        raise UsageError(f"{path} holds no usable latencies")
    return measured_overheads(lat, idx, sim)


def per_item_cost_for_capacity(service: ServiceModel, policy: BatchingPolicy, capacity: float) -> float:
    """The CPU per row (seconds) that brings the simulator's capacity down to a measured one."""
    lo, hi = 0.0, 1.0 / capacity
    for _ in range(60):
        mid = (lo + hi) / 2
        faster = service.plus_per_item(mid).capacity(policy.max_batch, policy.instances) > capacity
        lo, hi = (mid, hi) if faster else (lo, mid)
    return lo


def forecast(
    schedule: np.ndarray,
    profile: Path,
    config: ServedConfig,
    per_request_ms: float | None = None,
    overhead_ms: float | None = None,
    overhead_from: Path | None = None,
    seed: int = 0,
    encoding: str = "auto",
) -> Forecast:
    """What ``loadtest --predict-from`` records: p50/p99 for this very schedule and how they were made."""
    model = server_model(profile, config, per_request_ms, overhead_ms, encoding)
    extra = overheads_from(overhead_from) if overhead_from is not None else None
    policy = (
        model.policy if extra is None else replace(model.policy, fixed_spread_s=(), fixed_spread_curve=())
    )  # measured overheads win
    sim = simulate(np.asarray(schedule, dtype=np.float64), model.service, policy)  # the fixed spread drawn in it
    sim_ms = sim.latency_s * 1e3
    lat_ms = with_overheads(sim_ms, extra, seed)
    record = {
        "p50_ms": float(np.quantile(lat_ms, 0.5)),
        "p99_ms": float(np.quantile(lat_ms, 0.99)),
        # what the server's own metrics say for the same run: its mean call and rows per call
        "mean_call_ms": round(sim.mean_call_s * 1e3, 4),
        "mean_batch": round(float(sim.batch_sizes.mean()) if sim.batch_sizes.size else 0.0, 4),
        "source": f"queueing simulator on {profile} ({config.precision}, {config.threads} threads), same schedule",
        "policy": {"max_batch": config.max_batch, "max_delay_ms": config.max_delay_ms, "instances": config.instances},
        "per_request_ms": model.per_request_ms,
        "overhead_ms": model.overhead_ms,
        "overhead_from": str(overhead_from) if overhead_from else None,
        "calibrated": bool(model.per_request_ms or model.overhead_ms or overhead_from),
        "serving_terms": "measured by profile --serving" if model.measured_terms else "given or none",
        "serving_basis": model.basis,
    }
    return Forecast(record, sim_ms)
