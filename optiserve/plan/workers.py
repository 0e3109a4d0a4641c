"""Several search processes on one shared study, any of which may die.

Each worker is its own process (spawned: nothing inherited but its arguments)
running the ordinary ask/tell search against the study's storage, so the same
command runs on one machine or on many that share a PostgreSQL. The parent
seeds the study once before starting them (so N workers do not enqueue N copies
of the baseline) and then only waits: a worker killed mid-trial (SIGKILL, the
OOM killer) loses nothing but that trial, which Optuna's heartbeat marks failed
and its retry callback enqueues again; the others carry on. When every worker
has exited, a trial still RUNNING from a dead one is failed (and retried) once
its grace period has passed, so the caller's own search finishes the budget.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait

from optiserve.errors import OptiserveError
from optiserve.plan.evaluate import Evaluator
from optiserve.plan.search import enqueue_first, run_search
from optiserve.plan.storage import HEARTBEAT_S, grace_s, open_storage


@dataclass(frozen=True)
class WorkerExit:
    pid: int
    exitcode: int  # negative: killed by that signal


@dataclass(frozen=True)
class WorkersRun:
    exits: tuple[WorkerExit, ...]

    @property
    def lost(self) -> tuple[WorkerExit, ...]:
        """Workers that did not finish cleanly (their finished trials are still in the study)."""
        return tuple(e for e in self.exits if e.exitcode != 0)


def _worker(
    factory: Callable[[], Evaluator], trials: int, seed: int, sampler: str, storage: str, name: str, heartbeat_s: int
) -> None:
    try:
        run_search(factory(), trials, seed, sampler, storage, name, heartbeat_s=heartbeat_s)
    except OptiserveError as exc:  # one line, as the CLI would print it; the parent reports the exit
        print(f"search worker: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def run_workers(
    ev: Evaluator,
    factory: Callable[[], Evaluator],
    workers: int,
    trials: int,
    seed: int,
    sampler: str,
    storage: str,
    study_name: str,
    heartbeat_s: int = HEARTBEAT_S,
) -> WorkersRun:
    """``workers`` processes optimise one study in ``storage`` together (each its own seed) until it
    holds ``trials`` finished trials or every worker has exited."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=open_storage(storage, heartbeat_s),
        directions=["minimize", "minimize"],
        load_if_exists=True,
    )
    if not study.get_trials(deepcopy=False):
        enqueue_first(study, ev, trials)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker,
            args=(factory, trials, seed + 1000 * (i + 1), sampler, storage, study_name, heartbeat_s),
            name=f"optiserve-search-{i}",
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    pending = {p.sentinel: p for p in procs}
    exits: list[WorkerExit] = []
    last_death = None
    try:
        while pending:
            for sentinel in wait(list(pending)):
                p = pending.pop(sentinel)  # type: ignore[arg-type]
                p.join()
                exits.append(WorkerExit(p.pid or 0, p.exitcode or 0))
                if p.exitcode:
                    last_death = time.monotonic()
    finally:
        for p in pending.values():  # the parent itself was interrupted: take its workers down with it
            p.terminate()
            p.join()
    if last_death is not None:
        _fail_orphans(study, last_death + grace_s(heartbeat_s) + 1)
    return WorkersRun(tuple(exits))


def _fail_orphans(study: object, not_before: float) -> None:
    """Once a dead worker's heartbeat is past its grace, let Optuna fail (and retry) its trial."""
    import optuna

    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))  # type: ignore[attr-defined]
    if not running:
        return
    time.sleep(max(0.0, not_before - time.monotonic()))
    optuna.storages.fail_stale_trials(study)  # type: ignore[arg-type]
