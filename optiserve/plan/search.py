"""The Optuna ask/tell search over one model's placements.

A baseline is enqueued first (Triton Model Analyzer's habit): the profiled
config itself, batch 1, no delay, on the cheapest usable CPU entry, so the
study always has a sane point to improve on; then, when the budget allows, one
capacity-minded seed per instance type (``seeds``), so no instance type goes
untried. Trials are multi-objective (cost
per hour, p99 at the target rate) with the constraint values the evaluator
finds stored on each trial (``Trial.set_constraint``), so a resumed study (SQLite
or any RDB URL) knows its past without re-simulating, and several worker
processes can share one study.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from optiserve._registry import Entry, Registry
from optiserve.errors import UsageError
from optiserve.estimate.targets import CurveBuilder
from optiserve.plan.evaluate import Candidate, Evaluation, Evaluator
from optiserve.plan.storage import HEARTBEAT_S, open_storage


@dataclass(frozen=True)
class SearchResult:
    evaluations: tuple[Evaluation, ...]  # one per distinct candidate, in first-seen order
    trials: int
    study_name: str
    storage: str | None
    sampler: str


SAMPLERS: Registry[optuna.samplers.BaseSampler] = Registry(
    "sampler",
    (
        Entry(
            "tpe",
            lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=20),
            description="multivariate TPE over the categorical space (the default)",
        ),
        Entry("random", lambda seed: optuna.samplers.RandomSampler(seed=seed), description="uniform, a baseline"),
        Entry(
            "nsga2",
            lambda seed: optuna.samplers.NSGAIISampler(seed=seed, population_size=30),
            description="NSGA-II, for long multi-objective runs",
        ),
    ),
)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler registered as ``name``, seeded; an unknown name lists the valid ones."""
    return SAMPLERS.create(name, seed)


def _suggest(trial: Any, ev: Evaluator) -> Candidate:
    keys = [e.key for e, _ in ev.entries]
    inst = trial.suggest_categorical("instance", keys)
    entry = next(e for e, _ in ev.entries if e.key == inst)
    precision = trial.suggest_categorical("precision", list(ev.precisions))
    threads = trial.suggest_categorical("threads", list(ev.threads)) if entry.accelerator is None else 0
    several = entry.accelerator is None and len(ev.cpu_runtimes) > 1  # the runtime is a CPU dimension
    runtime = trial.suggest_categorical("runtime", list(ev.cpu_runtimes)) if several else ""
    return Candidate(
        inst,
        precision,
        threads,
        trial.suggest_categorical("instances", list(ev.space.instances)),
        trial.suggest_categorical("max_batch", list(ev.batches)),
        trial.suggest_categorical("max_delay_ms", list(ev.space.max_delay_ms)),
        runtime,
    )


def _objective(ev: Evaluator, seen: dict[Candidate, Evaluation]) -> Callable[[Any], tuple[float, float]]:
    def run(trial: Any) -> tuple[float, float]:
        trial.set_user_attr("pid", os.getpid())  # which worker, set first: a killed worker's trial names it
        e = ev.evaluate(_suggest(trial, ev))
        seen.setdefault(e.candidate, e)
        for name, value in e.constraints.items():
            trial.set_constraint(name, value)  # read by TPE and NSGA-II (optuna >= 5)
        trial.set_user_attr("candidate", e.candidate.params())
        return e.cost_usd_per_hour, e.at_target.p99_ms

    return run


def baseline(ev: Evaluator) -> Candidate | None:
    cpus = [(o.usd_per_hour, e.key) for e, o in ev.entries if e.accelerator is None]
    if not cpus or not ev.precisions:
        return None
    p = "fp32" if "fp32" in ev.precisions else ev.precisions[0]
    return Candidate(min(cpus)[1], p, max(ev.builder.threads(p)), 1, min(ev.batches), 0.0)


def seeds(ev: Evaluator) -> list[Candidate]:
    """One capacity-minded candidate per usable instance type, tried before the sampler takes over.

    The instance type is the costliest choice and a categorical one; a sampler
    that never tried an entry cannot know it is cheap. Each seed uses the
    fastest precision within the accuracy tolerance, the largest batch, the
    most instances that fit the node, and a queue delay of about a tenth of the
    p99 target: the config most likely to make that hardware cheap. A CPU entry gets
    one seed per CPU runtime the profile measured."""

    def best(b: CurveBuilder) -> tuple[str, int]:
        best_p, best_tp = "fp32" if "fp32" in b.precisions else b.precisions[0], 0.0
        for p in b.precisions:
            drop = b.accuracy_drop(p)
            if drop is None or drop > ev.sla.max_accuracy_drop:
                continue
            for t in b.threads(p):
                rows = b.batches(p, t)
                if rows:
                    big = max(rows)
                    tp = big / b.measured_mean_s(p, t, big)  # measured here: the ranking transfers to any CPU
                    if tp > best_tp:
                        best_p, best_tp = p, tp
        return best_p, max(b.threads(best_p))

    delays = sorted(ev.space.max_delay_ms)
    delay = max([d for d in delays if d <= ev.sla.p99_ms / 10] or delays[:1])
    out = []
    for entry, _ in ev.entries:
        if entry.accelerator is None:
            for runtime, b in ev.builders.items():
                best_p, threads = best(b)
                fits = [i for i in ev.space.instances if i * threads + 0.5 <= entry.instance.vcpus - 0.5] or [
                    min(ev.space.instances)
                ]
                r = "" if runtime == ev.runtime else runtime
                out.append(Candidate(entry.key, best_p, threads, max(fits), max(ev.batches), delay, r))
        else:
            out.append(Candidate(entry.key, best(ev.builder)[0], 0, max(ev.space.instances), max(ev.batches), delay))
    return out


def enqueue_first(study: Any, ev: Evaluator, trials: int) -> None:
    """The baseline, and one seed per instance type when the budget allows, queued once per study."""
    first = [c for c in [baseline(ev)] if c is not None]
    if trials >= 2 * len(ev.entries) + len(first):
        first += seeds(ev)
    for c in first:
        params = {k: v for k, v in c.params().items() if not (k == "threads" and v == 0)}
        params["runtime"] = c.runtime or ev.runtime  # "" is the main runtime, named as the sampler names it
        study.enqueue_trial(params)


def run_search(
    ev: Evaluator,
    trials: int,
    seed: int = 0,
    sampler: str = "tpe",
    storage: str | None = None,
    study_name: str = "optiserve",
    progress: Callable[[int, int], None] | None = None,
    heartbeat_s: int = HEARTBEAT_S,
) -> SearchResult:
    """Run until the study holds ``trials`` finished trials (a resumed study counts its past ones)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if not ev.entries:
        relevant = [(k, w) for k, w in ev.excluded if "instance_types" not in w] or ev.excluded
        why = "; ".join(f"{k}: {w}" for k, w in relevant[:3])
        raise UsageError(f"no catalog entry is usable for {ev.sla.name}: {why}")
    study = optuna.create_study(
        study_name=study_name,
        storage=open_storage(storage, heartbeat_s),
        sampler=make_sampler(sampler, seed),
        directions=["minimize", "minimize"],
        load_if_exists=True,
    )
    seen: dict[Candidate, Evaluation] = {}
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if not study.get_trials(deepcopy=False):  # a fresh study (workers' parents seed it before they start)
        enqueue_first(study, ev, trials)
    remaining = max(0, trials - done)
    callbacks: list[Any] = [optuna.study.MaxTrialsCallback(trials, states=(optuna.trial.TrialState.COMPLETE,))]
    if progress is not None:
        callbacks.append(lambda study, trial: progress(trial.number + 1, trials))
    if remaining:
        study.optimize(_objective(ev, seen), n_trials=remaining, callbacks=callbacks, catch=())
    # past trials (resumed or from other workers): re-judge from their stored parameters (cached, cheap)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        params = t.user_attrs.get("candidate")
        if params:
            c = Candidate(**params)
            if c.instance in {e.key for e, _ in ev.entries}:
                seen.setdefault(c, ev.evaluate(c))
    n = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    return SearchResult(tuple(seen.values()), n, study_name, storage, sampler)


def pareto(evals: Sequence[Evaluation]) -> list[Evaluation]:
    """Feasible placements no other feasible one beats on both cost and p99 at the target rate."""
    pts = sorted((e for e in evals if e.feasible), key=lambda e: (e.cost_usd_per_hour, e.at_target.p99_ms))
    front: list[Evaluation] = []
    best_p99 = math.inf
    for e in pts:
        if e.at_target.p99_ms < best_p99:
            front.append(e)
            best_p99 = e.at_target.p99_ms
    return front
