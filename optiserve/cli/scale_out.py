"""``fanout`` and ``gather``: profile the plan's candidate hardware as Kubernetes Jobs, collect the results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from optiserve.cli._common import err, one_line_errors, out, pairs


@one_line_errors
def fanout(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="plan JSON written by optiserve plan")],
    store: Annotated[
        str, typer.Option(help="where the Jobs leave their profiles: pvc://CLAIM/PATH, s3://BUCKET/PREFIX, gs://...")
    ],
    top: Annotated[
        int, typer.Option(help="per model, the K cheapest feasible placements with transferred latency")
    ] = 3,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for the Job files")] = Path("fanout"),
    model_uri: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="NAME=URI where the Jobs fetch the model (oci://, pvc://, https://)"),
    ] = None,
    image: Annotated[str, typer.Option(help="image with optiserve in it")] = "ghcr.io/optiserve/optiserve:0.1.0",
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace")] = "default",
    k8s_version: Annotated[str, typer.Option(help="cluster version whose schemas validate the Jobs")] = "1.35",
    service_account: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="service account allowed to write to an object store (IRSA, Workload Identity)"),
    ] = None,
    deadline_s: Annotated[int, typer.Option(help="a Job running longer is stopped (activeDeadlineSeconds)")] = 3600,
    budget: Annotated[float, typer.Option(help="profile recipe: seconds of measuring per config")] = 10.0,
    warmup: Annotated[float, typer.Option(help="profile recipe: most seconds of warm-up per config")] = 5.0,
    min_samples: Annotated[int, typer.Option(help="profile recipe: fewest timed calls per config")] = 100,
    run_here: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="also run the Jobs on this machine (the local executor); this folder stands in for --store"),
    ] = None,
    model: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="NAME=FILE: the model file for --run-here (checked against the plan's digest)"),
    ] = None,
) -> None:
    """Write one validated Kubernetes Job per candidate instance type that profiles the model there."""
    from optiserve.emit.common import EmitOptions
    from optiserve.emit.fanout import FanoutOptions, Recipe
    from optiserve.emit.fanout import fanout as write_jobs
    from optiserve.emit.local_jobs import run_local
    from optiserve.errors import UsageError
    from optiserve.plan.result import read_plan

    if budget <= 0 or warmup < 0 or min_samples < 1:
        raise UsageError("--budget must be > 0, --warmup >= 0 and --min-samples >= 1")
    plan = read_plan(plan_file)
    emit = EmitOptions(
        image=image, namespace=namespace, k8s_version=k8s_version, model_uris=pairs(model_uri, "--model-uri")
    )
    opts = FanoutOptions(store, top, deadline_s, Recipe(budget, warmup, min_samples), emit, service_account)
    jobs = write_jobs(plan, opts, output)
    for j in jobs:
        out.print(f"{escape(str(output / (j.name + '.yaml')))}: {j.model} on {j.entry} -> {escape(store)}/{j.out}")
    if run_here is None:
        out.print(f"apply with: kubectl apply -f {escape(str(output))}/  (then copy {escape(store)} down and gather)")
        return
    files = {k: Path(v) for k, v in pairs(model, "--model").items()}
    failed = 0
    for r in run_local(output, run_here, files):
        ok = r.returncode == 0
        failed += not ok
        line = f"ran {r.job} here -> {escape(str(r.out))}" + ("" if ok else f": exit {r.returncode}: {escape(r.log)}")
        (out if ok else err).print(line, highlight=False, soft_wrap=True)
    if failed:
        raise UsageError(f"{failed} of {len(jobs)} Jobs failed on this machine")


@one_line_errors
def gather(
    source: Annotated[Path, typer.Argument(help="the store's contents, copied down (or --run-here's folder)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="folder of the checked profiles")] = Path("gathered"),
    catalog: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(help="extra catalog YAML (repeatable)"),
    ] = None,
) -> None:
    """Check and collect the fanout Jobs' profiles; `plan --gathered DIR` then uses them as measured curves."""
    from optiserve.errors import UsageError
    from optiserve.estimate.catalog import load_catalog
    from optiserve.plan.gathered import gather as collect

    got = collect(source, output, load_catalog(tuple(catalog or ())))
    for g in got.gathered:
        note = f" ({'; '.join(g.warnings)})" if g.warnings else ""
        out.print(f"{g.model} on {g.entry}: {escape(str(output / g.path))}{escape(note)}", highlight=False)
    for folder, why in got.refused:
        err.print(f"refused {escape(folder)}: {escape(why)}", highlight=False, soft_wrap=True)
    if not got.gathered:
        raise UsageError(f"nothing gathered from {source}: every result was refused")
    out.print(f"index: {escape(str(got.index))}")
