"""From profiles, a catalog and an SLA file to a ``Plan`` (see ``result.py``).

Per model: build the evaluator (curves on every usable catalog entry, measured
or transferred), search with Optuna, then *verify* the cheapest feasible
candidates with five times more simulated requests on another random stream
and the error band's edges; the first that still meets the SLA is chosen.
Models of one SLA file may then share a node pool where packing their pods
together needs fewer nodes (``pack.py``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from optiserve._version import __version__
from optiserve.errors import SLAError, UsageError
from optiserve.estimate.catalog import Catalog, load_catalog
from optiserve.estimate.source import source_entry
from optiserve.estimate.targets import CurveBuilder
from optiserve.models.graph import file_sha256, model_sha256
from optiserve.plan.artifact import artifact_for
from optiserve.plan.evaluate import Evaluation, Evaluator, cpu_runtimes
from optiserve.plan.gathered import gathered_inputs, gathered_profiles
from optiserve.plan.pack import shared_pools
from optiserve.plan.result import PLAN_SCHEMA_VERSION, placement, plan_id
from optiserve.plan.search import pareto, run_search
from optiserve.plan.sla import SLA, load_sla
from optiserve.plan.storage import HEARTBEAT_S
from optiserve.plan.workers import run_workers
from optiserve.profile.store import ParquetStore, load_profile
from optiserve.types import LatencySource


@dataclass(frozen=True)
class PlanOptions:
    sla: Path
    profiles: Mapping[str, Path] = field(default_factory=dict)  # model name -> profile folder (CLI beats SLA)
    catalogs: tuple[Path, ...] = ()
    measured_on: str | None = None
    trials: int = 300
    seed: int = 0
    sampler: str = "tpe"
    storage: str | None = None
    workers: int = 1
    requests: int = 20_000
    verify_requests: int = 100_000
    alternatives: int = 5
    heartbeat_s: int = HEARTBEAT_S  # a worker silent this long x3 is dead: its trial is retried
    gathered: tuple[Path, ...] = ()  # `optiserve gather` folders: profiles measured on other entries


def _relative_to_sla(path: str, opts: PlanOptions) -> Path:
    """Paths in an SLA file are relative to the file, as in a compose file."""
    p = Path(path)
    return p if p.is_absolute() else Path(opts.sla).parent / p


def _profile_path(name: str, sla: SLA, opts: PlanOptions) -> Path:
    if name in opts.profiles:
        return Path(opts.profiles[name])
    given = sla.models[name].profile
    if given:
        return _relative_to_sla(given, opts)
    raise SLAError(f"no profile for model {name!r}: give 'profile:' in the SLA or --profile {name}=PATH")


def build_evaluator(name: str, opts: PlanOptions, catalog: Catalog | None = None) -> Evaluator:
    """Everything one model's search needs, rebuilt from the options alone (worker processes call this)."""
    sla, _ = load_sla(opts.sla)
    if name not in sla.models:
        raise SLAError(f"model {name!r} is not in the SLA; models: {', '.join(sla.models)}")
    catalog = catalog or load_catalog(opts.catalogs)
    profile = load_profile(_profile_path(name, sla, opts))
    meta_model = profile.meta.get("model", {})
    given = sla.models[name].model
    model = _relative_to_sla(given, opts) if given else Path(meta_model.get("path", ""))
    if not model.is_file():
        raise SLAError(f"model {name!r}: the ONNX file {str(model) or '?'} is not there; give 'model:' in the SLA")
    want = meta_model.get("sha256")
    if want and model_sha256(model) != want:
        raise SLAError(f"model {name!r}: {model} is not the model the profile measured (sha256 differs)")
    source, explicit = source_entry(catalog, profile.meta.get("hardware", {}), opts.measured_on)
    elsewhere, _ = gathered_profiles(opts.gathered, want, catalog)  # entries measured on themselves
    builder = CurveBuilder(profile, model, catalog, source, measured_on_source=explicit, elsewhere=elsewhere)
    others = {  # every other CPU runtime the profile measured: a dimension of the CPU placements
        r: CurveBuilder(profile, model, catalog, source, measured_on_source=explicit, runtime=r, elsewhere=elsewhere)
        for r in cpu_runtimes(profile, builder.runtime)[1:]
    }
    resolved = sla.resolved(name)
    return Evaluator(resolved, builder, catalog, sla.search, builder.runtime, opts.requests, opts.seed, others)


def _artifact(ev: Evaluator, e: Evaluation) -> dict[str, Any]:
    """The file of the very rows the placement's curve was made of (its family's recipe)."""
    c, b = e.candidate, ev.builder_for(e.candidate)  # that runtime's rows: its own variant
    threads = c.threads or max(b.threads(c.precision))
    fam = b.family(c.precision, threads)
    return artifact_for(b.profile, e.runtime, c.precision, fam.variant)


def _study_name(name: str, digest: str) -> str:
    return f"optiserve-{name}-{digest[:12]}"


def _inputs(opts: PlanOptions, sla_sha: str, sla: SLA, catalog: Catalog) -> dict[str, Any]:
    profiles = []
    for name in sla.models:
        p = _profile_path(name, sla, opts)
        pq = p / "profile.parquet"
        meta = ParquetStore(p).read_meta()  # one line for a missing, corrupt or odd profile.json
        profiles.append(
            {
                "model": name,
                "path": str(p),
                "parquet_sha256": file_sha256(pq) if pq.is_file() else None,
                "model_sha256": meta.get("model", {}).get("sha256"),
                "hardware_id": meta.get("hardware", {}).get("id"),
                "layout": meta.get("layout"),  # shapes and batch axes the profile ran: serve gets the same
            }
        )
    cat_hash = hashlib.sha256(
        json.dumps([e.instance.model_dump(mode="json") for e in catalog.entries], sort_keys=True).encode()
    ).hexdigest()
    return {
        "sla": {"path": str(opts.sla), "sha256": sla_sha},
        "profiles": profiles,
        "catalog": {
            "files": list(catalog.files),
            "sha256": cat_hash,
            "instance_types": len(catalog.entries),
            "warnings": list(catalog.warnings),
        },
        "measured_on": opts.measured_on,
    } | ({"gathered": gathered_inputs(opts.gathered, profiles, catalog)} if opts.gathered else {})


def _verified(ev: Evaluator, ranked: Sequence[Evaluation], opts: PlanOptions, want: int) -> list[Evaluation]:
    out: list[Evaluation] = []
    for e in ranked:
        v = ev.verify(e.candidate, opts.verify_requests, opts.seed + 7919)
        if v.feasible:
            out.append(v)
            if len(out) >= want:
                break
    return out


def plan_model(
    name: str, opts: PlanOptions, catalog: Catalog, digest: str, progress: Callable[[int, int], None] | None = None
) -> tuple[dict[str, Any], Evaluator, Evaluation | None]:
    ev = build_evaluator(name, opts, catalog)
    study = _study_name(name, digest)
    lost: list[dict[str, int]] = []  # workers that died: their finished trials stayed in the study
    if opts.workers > 1:
        if not opts.storage:
            raise UsageError("--workers needs --storage (sqlite:///study.db or an RDB URL) for the shared study")
        factory = functools.partial(build_evaluator, name, opts)
        run = run_workers(
            ev, factory, opts.workers, opts.trials, opts.seed, opts.sampler, opts.storage, study, opts.heartbeat_s
        )
        lost = [{"pid": e.pid, "exitcode": e.exitcode} for e in run.lost]
    t0 = time.perf_counter()
    res = run_search(ev, opts.trials, opts.seed, opts.sampler, opts.storage, study, progress, opts.heartbeat_s)
    search_s = time.perf_counter() - t0
    # cheapest first; among equal costs the lower p99 (a tie in price is no reason to be slower)
    feasible = sorted(
        (e for e in res.evaluations if e.feasible), key=lambda e: (e.cost_usd_per_hour, e.at_target.p99_ms)
    )
    verified = _verified(ev, feasible, opts, 1)
    chosen = verified[0] if verified else None
    alts: list[Evaluation] = []
    if chosen is not None:
        seen_types = {chosen.candidate.instance}
        for e in feasible:
            if e.candidate.instance in seen_types:
                continue
            v = _verified(ev, [e], opts, 1)
            if v:
                alts.append(v[0])
                seen_types.add(e.candidate.instance)
            if len(alts) >= opts.alternatives:
                break
    closest = None
    if chosen is None and res.evaluations:
        miss = min(res.evaluations, key=lambda e: (e.violation, e.cost_usd_per_hour))
        closest = ev.verify(miss.candidate, opts.verify_requests, opts.seed + 7919)
    sla = ev.sla
    space = sum(1 for _ in ev.candidates())
    doc: dict[str, Any] = {
        "model": name,
        "sla": sla.model_dump(mode="json"),
        "feasible": chosen is not None,
        "chosen": placement(chosen) if chosen else None,
        "binding_constraint": chosen.binding if chosen else (closest.binding if closest else None),
        "alternatives": [placement(a) for a in alts],
        "pareto_front": [
            {
                "instance_type": e.candidate.instance,
                "precision": e.candidate.precision,
                "max_batch": e.candidate.max_batch,
                "max_delay_ms": e.candidate.max_delay_ms,
                "instances_per_pod": e.candidate.instances,
                "threads_per_instance": e.candidate.threads or None,
                "replicas": e.replicas,
                "cost_usd_per_hour": round(e.cost_usd_per_hour, 4),
                "p99_ms_at_target": round(e.at_target.p99_ms, 3),
                "latency": str(LatencySource.of(e.predicted)),
            }
            for e in pareto(res.evaluations)
        ],
        "closest_miss": None,
        "excluded_instance_types": [{"instance_type": k, "reason": why} for k, why in ev.excluded],
        "accuracy_gate": ev.accuracy_gate(),  # which precisions the tolerance lets in, and why not
        "search": {
            "sampler": res.sampler,
            "seed": opts.seed,
            "trials": res.trials,
            "distinct_placements_evaluated": len(res.evaluations),
            "space_size": space,
            "study_name": res.study_name,
            "storage": res.storage,
            "workers": opts.workers,
            "workers_lost": lost,
            "simulated_requests": {"search": opts.requests, "verify": opts.verify_requests},
            "wall_s": round(search_s, 2),
        },
        "source_hardware": {"catalog_entry": ev.builder.source.key, "named_by_user": ev.builder.measured_on_source},
    }
    if chosen is not None:  # the very file the profile measured, by digest: what emit ships
        doc["chosen"]["artifact"] = _artifact(ev, chosen)
        for a, alt in zip(doc["alternatives"], alts, strict=True):
            a["artifact"] = _artifact(ev, alt)
    if closest is not None:
        c = closest.constraints
        doc["closest_miss"] = {
            "placement": placement(closest),
            "misses": {k: f"{v:+.1%}" if k != "accuracy" else f"{v:+.4f}" for k, v in c.items() if v > 0},
            # re-simulated with the verification's requests it may meet what the search's shorter run missed
            "meets_when_verified": closest.feasible,
            "verify_requests": opts.verify_requests,
        }
    return doc, ev, chosen


def make_plan(opts: PlanOptions, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    sla, sla_sha = load_sla(opts.sla)
    catalog = load_catalog(opts.catalogs)
    inputs = _inputs(opts, sla_sha, sla, catalog)
    digest = hashlib.sha256(
        json.dumps([inputs, sla.search.model_dump(mode="json"), opts.sampler], sort_keys=True, default=str).encode()
    ).hexdigest()
    models, chosen = [], {}
    evaluators: dict[str, Evaluator] = {}
    for name in sla.models:
        cb = functools.partial(progress, name) if progress else None
        doc, ev, best = plan_model(name, opts, catalog, digest, cb)
        models.append(doc)
        evaluators[name] = ev
        if best is not None:
            chosen[name] = best
    separate = sum(e.cost_usd_per_hour for e in chosen.values())
    pools = shared_pools(evaluators, chosen) if len(chosen) > 1 and len(chosen) == len(sla.models) else None
    feasible = len(chosen) == len(sla.models)
    total = pools["cost_usd_per_hour"] if pools and pools["cost_usd_per_hour"] < separate else separate
    plan: dict[str, Any] = {
        "schema_version": PLAN_SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "optiserve_version": __version__,
        "feasible": feasible,
        "total_cost_usd_per_hour": round(total, 4) if feasible else None,
        "separate_cost_usd_per_hour": round(separate, 4) if feasible else None,
        "shared_pool": pools if pools and pools["cost_usd_per_hour"] < separate else None,
        "models": models,
        "inputs": inputs,
        "notes": [
            "Latency figures are predicted by the queueing simulator from measured service times; "
            "on hardware other than the profiling machine the service times are transferred by a "
            "roofline model and carry the band given in provenance.",
            "Prices: see each placement's price_source and price_as_of; catalog entries whose notes say "
            "'not re-fetched' are list prices as known at that date.",
        ],
    }
    plan["plan_id"] = plan_id(plan)
    return plan
