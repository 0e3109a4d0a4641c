"""``predict`` and ``plan``: latency under load from a profile, and the cheapest placement meeting an SLA."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from optiserve.cli._common import (
    Catalogs,
    Instances,
    MaxBatch,
    MaxDelayMs,
    Mlflow,
    err,
    mlflow_run,
    one_line_errors,
    out,
    pairs,
)


@one_line_errors
def predict(
    path: Annotated[Path, typer.Argument(help="profile folder whose samples are the service times")],
    rate: Annotated[float, typer.Option(help="arrival rate, requests/s")],
    max_batch: MaxBatch = 8,
    max_delay_ms: MaxDelayMs = 2.0,
    instances: Instances = 1,
    replicas: Annotated[int, typer.Option(help="replicas behind a load balancer")] = 1,
    arrival: Annotated[str, typer.Option(help="poisson or gamma")] = "poisson",  # a trace has its own rate
    cv: Annotated[float, typer.Option(help="gamma arrivals: coefficient of variation")] = 2.0,
    requests: Annotated[int, typer.Option(help="simulated requests")] = 200_000,
    runtime: Annotated[Optional[str], typer.Option(help="which profiled runtime")] = None,  # noqa: UP045
    precision: Annotated[Optional[str], typer.Option(help="which profiled precision")] = None,  # noqa: UP045
    threads: Annotated[Optional[int], typer.Option(help="which profiled thread count")] = None,  # noqa: UP045
    p99_ms: Annotated[Optional[float], typer.Option(help="also find the highest rate meeting this p99")] = None,  # noqa: UP045
) -> None:
    """Predict latency under load from a profile with the queueing simulator (labelled predicted)."""
    from optiserve.errors import UsageError
    from optiserve.estimate import BatchingPolicy, ServiceModel, max_rate_for_p99
    from optiserve.estimate import simulate as run_simulation
    from optiserve.estimate.arrivals import make_arrivals
    from optiserve.profile.store import load_profile

    if rate <= 0 or requests < 1:
        raise UsageError("--rate and --requests must be positive")
    service = ServiceModel.from_profile(load_profile(path), runtime, precision, threads)
    policy = BatchingPolicy(max_batch, max_delay_ms / 1e3, (), instances, replicas)
    arr = make_arrivals(arrival, rate, requests, cv)
    s = run_simulation(arr, service, policy).summary
    unmeasured = service.predicted_sizes(max_batch)
    out.print(
        f"PREDICTED at {rate:g} req/s ({arrival}): p50 {s['p50_ms']:.2f}  p95 {s['p95_ms']:.2f}  "
        f"p99 {s['p99_ms']:.2f}  p99.9 {s['p999_ms']:.2f} ms; "
        f"wait {s['mean_wait_ms']:.2f} + service {s['mean_service_ms']:.2f} ms (mean); "
        f"utilisation {s['utilisation']:.0%}; mean batch {s['mean_batch']:.2f}"
    )
    if unmeasured:
        out.print(f"batch sizes {unmeasured} were not profiled: their service times are interpolated")
    if p99_ms is not None:
        best = max_rate_for_p99(service, policy, p99_ms)
        out.print(f"PREDICTED highest Poisson rate with p99 <= {p99_ms:g} ms: {best:.1f} req/s")


@one_line_errors
def plan(
    sla: Annotated[Path, typer.Option(help="SLA file (YAML): per model rate, peak factor, p99, accuracy, regions")],
    profile: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="NAME=PROFILE_DIR per model (repeatable); a bare folder when the SLA has one model"),
    ] = None,
    catalog: Catalogs = None,
    measured_on: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="catalog instance the profiles were measured on (default: matched from CPU flags)"),
    ] = None,
    trials: Annotated[int, typer.Option(help="Optuna trials per model (a resumed study counts its past ones)")] = 300,
    seed: Annotated[int, typer.Option(help="sampler seed")] = 0,
    sampler: Annotated[str, typer.Option(help="tpe, nsga2 or random")] = "tpe",
    storage: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Optuna storage URL (sqlite:///study.db, postgresql://...): resumable, shared by workers"),
    ] = None,
    workers: Annotated[int, typer.Option(help="search processes sharing the study (needs --storage)")] = 1,
    gathered: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(help="folder written by `optiserve gather`: those entries get measured curves (repeatable)"),
    ] = None,
    requests: Annotated[int, typer.Option(help="simulated requests per candidate during the search")] = 20_000,
    output: Annotated[Path, typer.Option("--output", "-o", help="where the plan JSON goes")] = Path("plan.json"),
    sign_key: Annotated[
        Optional[Path], typer.Option(help="Ed25519 private key: sign the plan (PLAN.sig beside it)")  # noqa: UP045
    ] = None,
    mlflow: Mlflow = None,
    register: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="with --mlflow: register the chosen variant as a version of this registered model"),
    ] = None,
) -> None:
    """Find the cheapest placement that meets the SLA over the hardware catalog (Optuna + the simulator)."""
    from optiserve.errors import InfeasibleError, UsageError
    from optiserve.plan.planner import PlanOptions, make_plan
    from optiserve.plan.render import closest_misses, render
    from optiserve.plan.result import write_plan
    from optiserve.plan.search import SAMPLERS
    from optiserve.plan.sla import load_sla

    if trials < 1 or workers < 1 or requests < 1000:
        raise UsageError("--trials and --workers must be >= 1, --requests >= 1000")
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}; valid samplers: {', '.join(SAMPLERS)}")
    spec, _ = load_sla(sla)
    lone = next(iter(spec.models)) if len(spec.models) == 1 else None
    hint = "the SLA has several models, write NAME=PROFILE_DIR"
    profiles = {k: Path(v) for k, v in pairs(profile, "--profile", lone, hint).items()}
    unknown = sorted(set(profiles) - set(spec.models))
    if unknown:
        raise UsageError(
            f"--profile names models not in the SLA: {', '.join(unknown)}; SLA models: {', '.join(spec.models)}"
        )
    opts = PlanOptions(
        sla, profiles, tuple(catalog or ()), measured_on, trials, seed, sampler, storage, workers, requests
    )
    opts = replace(opts, gathered=tuple(gathered or ()))
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        tasks: dict[str, Any] = {}

        def tick(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"search {name}", total=total)
            bar.update(tasks[name], completed=min(done, total))

        result = make_plan(opts, tick)
    write_plan(result, output)
    written = [output]
    if sign_key is not None:
        from optiserve._signing import sign

        written.append(sign(output, sign_key))
    from optiserve.cli.trust import audit

    audit("plan", result, output, written)
    render(result, output, out, err)
    if register and not mlflow:
        raise UsageError("--register needs --mlflow TRACKING_URI")
    if mlflow:
        from optiserve._mlflow import plan_metrics, register_chosen

        rid = mlflow_run(mlflow, "plan", plan_metrics(result), written)
        if register and rid and result["feasible"]:
            version = register_chosen(mlflow, result, rid, register)
            out.print(f"registered models:/{register}/{version} (the chosen variant, digest-tagged)")
    if not result["feasible"]:
        raise InfeasibleError(closest_misses(result, output))
