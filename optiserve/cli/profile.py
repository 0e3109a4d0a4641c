"""``profile``, ``show`` and ``env``: measure a model here and say what here is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optiserve.cli._common import Mlflow, err, mlflow_run, one_line_errors, out, with_sweep_options
from optiserve.errors import OptiserveError
from optiserve.types import BenchConfig, Measurement, Status


@one_line_errors
@with_sweep_options
def profile(
    model: Annotated[str, typer.Argument(help="ONNX file, or a zoo name (built on demand)")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="profile folder (default: profiles/MODEL_NAME)")
    ] = None,
    sweep: Annotated[Optional[Path], typer.Option(help="YAML sweep file; flags override it")] = None,  # noqa: UP045
    resume: Annotated[bool, typer.Option(help="measure only the configs still missing")] = False,
    overwrite: Annotated[bool, typer.Option(help="discard an existing profile in the folder")] = False,
    mlflow: Mlflow = None,
    sweep_overrides: dict[str, Any] | None = None,
) -> None:
    """Sweep runtimes x precisions x batch sizes x threads and store every measurement."""
    from optiserve.models.zoo import resolve_model
    from optiserve.profile.profiler import run_sweep
    from optiserve.profile.summary import render
    from optiserve.profile.sweep import build_spec

    if resume and overwrite:
        raise OptiserveError("--resume and --overwrite contradict each other; pick one")
    spec = build_spec(sweep, sweep_overrides)
    if mlflow:  # models:/ arguments resolve through the same store
        os.environ["MLFLOW_TRACKING_URI"] = mlflow
    path = resolve_model(model)
    folder = output or Path("profiles") / path.stem
    from optiserve.profile.profiler import plan_sweep

    plan = plan_sweep(path, spec, folder, resume=resume, overwrite=overwrite)  # all checks, before any work
    done = {"n": 0}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}"),
        console=err,
    ) as bar:
        task = bar.add_task(f"profiling {path.name}", total=len(plan.todo), current="")

        def progress(event: str, config: BenchConfig, m: Measurement | None) -> None:
            if event == "start":
                bar.update(task, current=config.label())
                return
            if event == "serving":
                bar.update(task, current="the serving path through optiserve serve")
                return
            if event == "ceilings":
                bar.update(task, current="ONNX Runtime's effective ceilings (a few seconds)")
                return
            done["n"] += 1
            bar.advance(task)
            if m is not None and m.status is Status.FAILED:
                bar.console.print(f"[red]failed[/red] {escape(config.label())}: {escape(m.error)}", highlight=False)

        try:
            prof = run_sweep(path, spec, folder, resume=resume, overwrite=overwrite, progress=progress, plan=plan)
        except KeyboardInterrupt:
            bar.stop()
            err.print(
                f"interrupted: {done['n']} config(s) of this run are on disk in {folder}; "
                "run again with --resume to finish"
            )
            raise typer.Exit(130) from None
    render(prof, out)
    out.print(f"profile written to {folder}/")
    if mlflow:
        from optiserve._mlflow import profile_metrics

        mlflow_run(mlflow, "profile", profile_metrics(folder), [folder / "profile.json", folder / "profile.parquet"])


@one_line_errors
def show(path: Annotated[Path, typer.Argument(help="profile folder (or its .parquet/.json)")]) -> None:
    """Print a stored profile's summary again."""
    from optiserve.profile.store import load_profile
    from optiserve.profile.summary import render

    render(load_profile(path), out)


def env() -> None:
    """The detected hardware and which runtimes are available here (and why not)."""
    from optiserve.profile.hardware import fingerprint, library_versions
    from optiserve.runtimes.registry import RUNTIMES

    hw = fingerprint()
    out.print(
        f"[bold]CPU[/bold]  {hw['cpu_model']} ({hw['arch']}), {hw['physical_cores']} cores, "
        f"{hw['logical_cpus']} logical, {hw['usable_cpus']} usable"
    )
    out.print(f"[bold]memory[/bold]  {hw['memory_gb']} GiB   [bold]flags[/bold]  {' '.join(hw['cpu_flags']) or '-'}")
    out.print(
        "[bold]GPU[/bold]  "
        + (", ".join(g["name"] for g in hw["gpus"]) or "none found (nvidia-smi absent or no device)")
    )
    out.print("[bold]versions[/bold]  " + "  ".join(f"{k} {v}" for k, v in library_versions().items()))
    t = Table("runtime", "available", "precisions", "why not")
    from optiserve.types import Precision

    for r in RUNTIMES:
        reason = r.available()
        precs = ",".join(p.value for p in Precision if r.supports(p))
        t.add_row(r.name, "[green]yes[/green]" if reason is None else "[red]no[/red]", precs, escape(reason or ""))
    out.print(t)
    from optiserve.estimate.catalog import load_catalog
    from optiserve.estimate.cpu_id import explain

    out.print("[bold]catalog match[/bold]  " + escape(explain(hw, load_catalog())))
