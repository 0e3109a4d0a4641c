"""Several models on one node pool, when packing their pods together needs fewer nodes.

Each model's pods keep the resources the evaluator sized them for (whole
vCPUs as Guaranteed requests, or whole GPUs), so one model's latency does not
depend on its neighbours' load and each model's simulation stands as it is;
what sharing changes is the bin packing: two models that each need 0.6 of a
node share one node instead of paying for two. Memory-bandwidth contention
between neighbours on a CPU node is not modelled (it is on the roadmap).

For every instance type, each model's cheapest feasible placement on it (from
its own search) joins the pool; pods are packed first-fit decreasing by vCPU,
memory and GPUs; the region is the cheapest one every member's SLA allows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from optiserve.estimate.catalog import Entry
from optiserve.plan.evaluate import SYSTEM_VCPUS, Evaluation, Evaluator
from optiserve.plan.result import placement


def _capacity(entry: Entry) -> tuple[float, float, int]:
    inst = entry.instance
    gpus = inst.accelerator.count if inst.accelerator else 0
    return inst.vcpus - SYSTEM_VCPUS, inst.memory_gib * 0.9 - 0.5, gpus


def pack_nodes(entry: Entry, pods: list[tuple[float, float, int]]) -> int:
    """Nodes needed for ``pods`` of (vcpus, memory GiB, gpus), first-fit decreasing."""
    cap = _capacity(entry)
    nodes: list[list[float]] = []
    for p in sorted(pods, reverse=True):
        if p[0] > cap[0] + 1e-9 or p[1] > cap[1] + 1e-9 or p[2] > cap[2]:
            return math.inf  # type: ignore[return-value]
        for n in nodes:
            if n[0] + p[0] <= cap[0] + 1e-9 and n[1] + p[1] <= cap[1] + 1e-9 and n[2] + p[2] <= cap[2]:
                n[0] += p[0]
                n[1] += p[1]
                n[2] += p[2]
                break
        else:
            nodes.append([p[0], p[1], float(p[2])])
    return len(nodes)


def _pods(e: Evaluation, entry: Entry) -> list[tuple[float, float, int]]:
    gpus = 1 if entry.accelerator else 0
    return [(e.pod_vcpus, e.pod_memory_gib, gpus)] * e.replicas


def shared_pools(evaluators: Mapping[str, Evaluator], chosen: Mapping[str, Evaluation]) -> dict[str, Any] | None:
    """The cheapest single shared pool (with the other models left on their own), or None."""
    separate = sum(e.cost_usd_per_hour for e in chosen.values())
    best: dict[str, Any] | None = None
    any_ev = next(iter(evaluators.values()))
    catalog = any_ev.catalog
    for entry in catalog.entries:
        members: dict[str, Evaluation] = {}
        for name, ev in evaluators.items():
            on_t = [e for e in ev.judged() if e.candidate.instance == entry.key and e.feasible]
            if on_t:
                members[name] = min(on_t, key=lambda e: (e.cost_usd_per_hour, e.at_peak.p99_ms))
        if len(members) < 2:
            continue
        regions = [
            p
            for p in entry.instance.prices
            if all(catalog.region_allowed(p.region, evaluators[m].sla.regions) for m in members)
        ]
        if not regions:
            continue
        spot_ok = all(evaluators[m].sla.spot for m in members)
        price, region = min(
            (
                (p.spot_usd_per_hour if spot_ok and p.spot_usd_per_hour else p.on_demand_usd_per_hour),
                p.region,
            )
            for p in regions
        )
        nodes = pack_nodes(entry, [pod for e in members.values() for pod in _pods(e, entry)])
        if not math.isfinite(nodes):
            continue
        others = sum(e.cost_usd_per_hour for n, e in chosen.items() if n not in members)
        cost = nodes * price + others
        if cost < separate - 1e-9 and (best is None or cost < best["cost_usd_per_hour"]):
            best = {
                "instance_type": entry.name,
                "provider": entry.provider,
                "region": region,
                "node_usd_per_hour": price,
                "nodes": nodes,
                "models": sorted(members),
                "members": {m: placement(e) for m, e in members.items()},
                "pool_cost_usd_per_hour": round(nodes * price, 4),
                "cost_usd_per_hour": round(cost, 4),
                "saving_usd_per_hour": round(separate - cost, 4),
                "note": "pods keep dedicated vCPUs/GPUs; each model's simulated latency stands; "
                "memory-bandwidth contention between neighbours is not modelled",
            }
    return best
