"""The ``Plan``: what to deploy, what it costs, and why — as versioned JSON.

A plan is plain data (dicts of JSON types) built from evaluations, so `emit`,
reports and notebooks read the same file without importing the optimizer.
Every latency figure says whether it was measured or predicted, and from what.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from optiserve._files import atomic_write, read_json
from optiserve.errors import UsageError
from optiserve.plan.evaluate import Evaluation, LoadPoint
from optiserve.types import LatencySource

PLAN_SCHEMA_VERSION = 1


def _point(p: LoadPoint) -> dict[str, Any]:
    d: dict[str, Any] = {
        "rate": p.rate,
        "p50_ms": round(p.p50_ms, 3),
        "p99_ms": round(p.p99_ms, 3),
        "utilisation": round(p.utilisation, 4),
        "mean_batch": round(p.mean_batch, 3),
    }
    if p.p99_band_ms is not None:
        d["p99_band_ms"] = [round(p.p99_band_ms[0], 3), round(p.p99_band_ms[1], 3)]
    return d


def placement(e: Evaluation) -> dict[str, Any]:
    c = e.candidate
    provider, name = c.instance.split(":", 1)
    offer = e.offer
    return {
        "instance_type": name,
        "provider": provider,
        "region": offer.region if offer else None,
        "spot": offer.spot if offer else False,
        "runtime": e.runtime,
        "precision": c.precision,
        "threads_per_instance": c.threads or None,
        "instances_per_pod": c.instances,
        "max_batch": c.max_batch,
        "max_delay_ms": c.max_delay_ms,
        "client_encoding": e.extra.get("encoding"),  # the serving cost charged is this encoding's
        "replicas": e.replicas,
        "nodes": e.nodes,
        "pods_per_node": e.pods_per_node,
        "pod_vcpus": e.pod_vcpus,
        "pod_memory_gib": round(e.pod_memory_gib, 3),
        "pod_rate_at_p99": round(e.pod_rate, 2),
        "node_usd_per_hour": offer.usd_per_hour if offer else None,
        "cost_usd_per_hour": round(e.cost_usd_per_hour, 4),
        "cost_usd_per_million_requests": round(e.cost_usd_per_million, 4),
        "at_target": _point(e.at_target),
        "at_peak": _point(e.at_peak),
        "accuracy_drop": e.accuracy_drop,
        "feasible": e.feasible,
        "constraints": {k: round(v, 4) for k, v in e.constraints.items()},
        "binding_constraint": e.binding,
        "provenance": {
            "latency": str(LatencySource.of(e.predicted)),
            "latency_basis": e.basis,
            "service_time_band": e.band,
            "queueing": f"predicted by the queueing simulator ({e.verified_requests or 'search'} requests)",
            "accuracy": e.extra.get("accuracy_note")
            or (
                "measured on the profiling machine's CPU runtime; not measured on this accelerator"
                if not c.threads
                else "measured on the profiling machine"
            ),
            "price_source": offer.source if offer else None,
            "price_as_of": offer.as_of.isoformat() if offer else None,
        },
    }


def plan_id(plan: dict[str, Any]) -> str:
    """A short content id: the same decisions from the same inputs get the same id, whenever made."""
    body = {k: v for k, v in plan.items() if k not in ("created", "plan_id")}
    digest = hashlib.sha256(
        json.dumps(
            [body.get("inputs"), [(m["model"], m["chosen"]) for m in body.get("models", [])]],
            sort_keys=True,
            default=str,
        ).encode()
    )
    return digest.hexdigest()[:16]


def write_plan(plan: dict[str, Any], path: Path) -> None:
    """Atomically: a plan is never half written."""
    path = Path(path)
    text = json.dumps(plan, indent=2, sort_keys=False, default=str) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    except OSError as exc:
        raise UsageError(f"cannot write the plan to {path}: {exc.strerror}") from None


def read_plan(path: Path) -> dict[str, Any]:
    data = read_json(path, "plan")
    if not isinstance(data, dict) or data.get("schema_version") != PLAN_SCHEMA_VERSION:
        raise UsageError(f"plan {path}: not an optiserve plan of schema version {PLAN_SCHEMA_VERSION}")
    from optiserve.plan.schema import validate_plan

    validate_plan(data, str(path))  # a hand-edited plan is refused before anything is emitted from it
    return data
