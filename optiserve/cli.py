"""The ``optiserve`` command. Each command maps an ``OptiserveError`` to one line
on stderr and its exit code; sweep flags are generated from ``SweepSpec``."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optiserve.errors import OptiserveError
from optiserve.types import BenchConfig, Measurement, Status

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Measure, predict and choose the cheapest way to serve a model inside an SLA.",
)
models_app = typer.Typer(no_args_is_help=True, help="The offline model zoo.")
app.add_typer(models_app, name="models")
catalog_app = typer.Typer(no_args_is_help=True, help="The hardware catalog: instance types, ceilings, prices.")
app.add_typer(catalog_app, name="catalog")

# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
out = Console() if sys.stdout.isatty() else Console(width=180)
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    """``NAME=VALUE`` items of a repeatable option, or one line saying which is malformed."""
    from optiserve.errors import UsageError

    out: dict[str, str] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise UsageError(f"{flag} {item!r}: expected NAME=VALUE")
        out[k.strip()] = v.strip()
    return out


def one_line_errors(func: F) -> F:
    """User errors become ``error: ...`` and the error's exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OptiserveError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def with_sweep_options(func: F) -> F:
    """Append one ``--flag`` per ``SweepSpec`` field; pass those given as ``sweep_overrides``."""
    from optiserve.profile.sweep import SweepSpec

    sig = inspect.signature(func, eval_str=True)
    params = [p for p in sig.parameters.values() if p.name != "sweep_overrides"]
    names = list(SweepSpec.model_fields)
    for name, field in SweepSpec.model_fields.items():
        default = field.get_default(call_default_factory=True)
        many = isinstance(default, list)
        shown = ",".join(map(str, default)) if many else default
        hint = " (repeatable)" if many else ""
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):  # a switch: --serving / --no-serving
            flag = f"{flag}/--no-{name.replace('_', '-')}"
        opt = typer.Option(
            None,
            flag,
            help=f"{field.description}{hint} (default: {shown if shown not in ('', None) else 'none'})",
            show_default=False,
        )
        scalar = Optional[bool] if isinstance(default, bool) else Optional[str]  # noqa: UP045
        kind = Optional[list[str]] if many else scalar  # noqa: UP045
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind))

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        given = {n: kwargs.pop(n) for n in names if n in kwargs}
        overrides = {k: ",".join(v) if isinstance(v, list) else v for k, v in given.items() if v not in (None, "", [])}
        return func(**kwargs, sweep_overrides=overrides)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper  # type: ignore[return-value]


@models_app.command("build")
@one_line_errors
def models_build(
    names: Annotated[Optional[list[str]], typer.Argument(help="zoo models (default: mlp cnn encoder)")] = None,  # noqa: UP045
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder to write to")] = Path("models"),
    seed: Annotated[int, typer.Option(help="weight seed")] = 0,
    force: Annotated[bool, typer.Option(help="rebuild existing files")] = False,
    all_models: Annotated[bool, typer.Option("--all", help="every zoo model")] = False,
) -> None:
    """Build zoo models deterministically (seeded weights, no download)."""
    from optiserve.models.zoo import ZOO, build_zoo

    wanted = list(ZOO) if all_models else names
    try:
        paths = build_zoo(out_dir, wanted, seed=seed, force=force)
    except OSError as exc:
        raise OptiserveError(f"cannot write models to {out_dir}: {exc.strerror or exc}") from None
    for p in paths:
        out.print(f"{p}  ({p.stat().st_size / 1e6:.1f} MB)")


@catalog_app.command("list")
@one_line_errors
def catalog_list(
    catalog: Annotated[Optional[list[Path]], typer.Option(help="extra catalog YAML (repeatable)")] = None,  # noqa: UP045
    region: Annotated[Optional[list[str]], typer.Option(help="region names or geo tags (EU, US, AE)")] = None,  # noqa: UP045
    gpu: Annotated[bool, typer.Option(help="accelerator instances only")] = False,
) -> None:
    """List instance types with their ceilings and cheapest on-demand price in the allowed regions."""
    from optiserve.estimate.catalog import load_catalog

    cat = load_catalog(catalog or ())
    t = Table("instance", "vCPU", "GiB", "accelerator", "fp32 TFLOP/s", "GB/s", "$/h", "region", "as of")
    for e in cat.entries:
        acc = e.accelerator
        if gpu and acc is None:
            continue
        offer = cat.offer(e, region or (), spot=False)
        if offer is None:
            continue
        cpu = e.instance.cpu
        tf = (
            acc.fp32_tflops * acc.count
            if acc
            else cpu.fp32_flops_per_cycle_per_core * cpu.ghz * e.instance.vcpus / cpu.threads_per_core / 1e3
        )
        bw = acc.memory_bandwidth_gbs * acc.count if acc else cpu.memory_bandwidth_gbs
        t.add_row(
            escape(e.key),
            str(e.instance.vcpus),
            f"{e.instance.memory_gib:g}",
            f"{acc.count} x {escape(acc.model)}" if acc else "",
            f"{tf:.1f}",
            f"{bw:.0f}",
            f"{offer.usd_per_hour:.3f}",
            offer.region,
            offer.as_of.isoformat(),
        )
    out.print(t)
    out.print(f"{t.row_count} of {len(cat.entries)} instance types; files: {', '.join(cat.files)}")


@catalog_app.command("check")
@one_line_errors
def catalog_check(files: Annotated[list[Path], typer.Argument(help="catalog YAML files to validate")]) -> None:
    """Validate catalog files (with the built-in regions): the first error names the entry and field."""
    from optiserve.estimate.catalog import load_catalog

    cat = load_catalog(files)
    out.print(f"ok: {len(cat.entries)} instance types after adding {', '.join(map(str, files))}")


@models_app.command("list")
def models_list() -> None:
    """List the zoo."""
    from optiserve.models.zoo import ZOO

    t = Table("name", "description", "in demo")
    for e in ZOO.values():
        t.add_row(e.name, e.description, "yes" if e.demo else "")
    out.print(t)


@app.command()
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


@app.command()
@one_line_errors
def show(path: Annotated[Path, typer.Argument(help="profile folder (or its .parquet/.json)")]) -> None:
    """Print a stored profile's summary again."""
    from optiserve.profile.store import load_profile
    from optiserve.profile.summary import render

    render(load_profile(path), out)


@app.command()
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


@app.command()
@one_line_errors
def predict(
    path: Annotated[Path, typer.Argument(help="profile folder whose samples are the service times")],
    rate: Annotated[float, typer.Option(help="arrival rate, requests/s")],
    max_batch: Annotated[int, typer.Option(help="most rows per batch")] = 8,
    max_delay_ms: Annotated[float, typer.Option(help="longest wait for a batch to fill")] = 2.0,
    instances: Annotated[int, typer.Option(help="model instances per replica")] = 1,
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


@app.command()
@one_line_errors
def plan(
    sla: Annotated[Path, typer.Option(help="SLA file (YAML): per model rate, peak factor, p99, accuracy, regions")],
    profile: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="NAME=PROFILE_DIR per model (repeatable); a bare folder when the SLA has one model"),
    ] = None,
    catalog: Annotated[Optional[list[Path]], typer.Option(help="extra catalog YAML (repeatable)")] = None,  # noqa: UP045
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
    requests: Annotated[int, typer.Option(help="simulated requests per candidate during the search")] = 20_000,
    output: Annotated[Path, typer.Option("--output", "-o", help="where the plan JSON goes")] = Path("plan.json"),
) -> None:
    """Find the cheapest placement that meets the SLA over the hardware catalog (Optuna + the simulator)."""
    from optiserve.errors import InfeasibleError, UsageError
    from optiserve.plan.planner import PlanOptions, make_plan
    from optiserve.plan.result import write_plan
    from optiserve.plan.search import SAMPLERS
    from optiserve.plan.sla import load_sla

    if trials < 1 or workers < 1 or requests < 1000:
        raise UsageError("--trials and --workers must be >= 1, --requests >= 1000")
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}; valid samplers: {', '.join(SAMPLERS)}")
    spec, _ = load_sla(sla)
    profiles: dict[str, Path] = {}
    for item in profile or []:
        if "=" in item:
            k, v = item.split("=", 1)
            profiles[k.strip()] = Path(v)
        elif len(spec.models) == 1:
            profiles[next(iter(spec.models))] = Path(item)
        else:
            raise UsageError(f"--profile {item!r}: the SLA has several models, write NAME=PROFILE_DIR")
    unknown = sorted(set(profiles) - set(spec.models))
    if unknown:
        raise UsageError(
            f"--profile names models not in the SLA: {', '.join(unknown)}; SLA models: {', '.join(spec.models)}"
        )
    opts = PlanOptions(
        sla, profiles, tuple(catalog or ()), measured_on, trials, seed, sampler, storage, workers, requests
    )
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
    _print_plan(result, output)
    if not result["feasible"]:
        misses = []
        for m in result["models"]:
            if not m["feasible"]:
                cm = m.get("closest_miss")
                if cm:
                    p = cm["placement"]
                    what = ", ".join(f"{k} {v}" for k, v in cm["misses"].items())
                    misses.append(
                        f"{m['model']}: closest is {p['instance_type']} {p['precision']} x{p['replicas']} "
                        f"(misses {what}; p99 at peak {p['at_peak']['p99_ms']:.1f} ms vs {m['sla']['p99_ms']:g} ms)"
                    )
                else:
                    misses.append(f"{m['model']}: nothing was evaluated")
        raise InfeasibleError(f"no placement meets the SLA (plan written to {output}): " + "; ".join(misses))


def _print_plan(result: dict[str, Any], output: Path) -> None:
    table = Table(title=f"plan ({output})", show_lines=False)
    for col in (
        "model",
        "placement",
        "replicas/nodes",
        "$/h",
        "$/M req",
        "p99 target",
        "p99 peak",
        "binding",
        "latency",
    ):
        table.add_column(col)
    for m in result["models"]:
        p = m["chosen"]
        if p is None:
            table.add_row(
                escape(m["model"]), "[red]infeasible[/red]", "", "", "", "", "", str(m["binding_constraint"]), ""
            )
            continue
        knobs = (
            f"{p['precision']}, batch<={p['max_batch']}, delay {p['max_delay_ms']:g} ms, {p['instances_per_pod']} inst"
        )
        if p["threads_per_instance"]:
            knobs += f" x{p['threads_per_instance']} thr"
        band = p["at_peak"].get("p99_band_ms")
        peak = f"{p['at_peak']['p99_ms']:.1f}" + (f" [{band[0]:.0f}-{band[1]:.0f}]" if band else "")
        table.add_row(
            escape(m["model"]),
            escape(f"{p['provider']}:{p['instance_type']} {p['region']}{' spot' if p['spot'] else ''}\n{knobs}"),
            f"{p['replicas']} / {p['nodes']}",
            f"{p['cost_usd_per_hour']:.3f}",
            f"{p['cost_usd_per_million_requests']:.3f}",
            f"{p['at_target']['p99_ms']:.1f}",
            peak,
            escape(str(m["binding_constraint"])),
            p["provenance"]["latency"],
        )
    out.print(table)
    if result.get("shared_pool"):
        sp = result["shared_pool"]
        out.print(
            f"shared pool: {', '.join(sp['models'])} on {sp['nodes']} x {sp['instance_type']} ({sp['region']}) "
            f"saves ${sp['saving_usd_per_hour']:.3f}/h"
        )
    if result["feasible"]:
        out.print(f"total: ${result['total_cost_usd_per_hour']:.3f}/h (latency PREDICTED; see provenance in the plan)")
    import datetime as _dt

    dates = [
        _dt.date.fromisoformat(m["chosen"]["provenance"]["price_as_of"])
        for m in result["models"]
        if m.get("chosen") and m["chosen"]["provenance"].get("price_as_of")
    ]
    if dates:
        age = (_dt.date.today() - min(dates)).days
        if age > 90:  # cloud list prices move; a plan on old prices should say so where it is read
            err.print(
                f"[yellow]![/yellow] the chosen prices are {age} days old (as of {min(dates).isoformat()}): "
                "check them, or pass current ones with --catalog"
            )
    for m in result["models"]:
        s = m["search"]
        out.print(
            f"{escape(m['model'])}: {s['distinct_placements_evaluated']} of {s['space_size']} placements evaluated "
            f"in {s['trials']} trials ({s['sampler']}, seed {s['seed']}), {s['wall_s']:.1f} s; "
            f"pareto front {len(m['pareto_front'])} points; {len(m['excluded_instance_types'])} instance types excluded"
        )


@app.command()
@one_line_errors
def emit(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="plan JSON written by optiserve plan")],
    target: Annotated[str, typer.Option(help="k8s, kserve, triton or all (comma list)")] = "all",
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for the files")] = Path("deploy"),
    model: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="NAME=FILE: the model file, checked against the plan's digest (triton copies it)"),
    ] = None,
    model_uri: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            help="NAME=URI where the cluster fetches the model (oci://, pvc://, https://; s3:// gs:// for kserve)"
        ),
    ] = None,
    image: Annotated[
        str, typer.Option(help="server image (runs `optiserve serve`)")
    ] = "ghcr.io/optiserve/optiserve:0.1.0",
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace")] = "default",
    k8s_version: Annotated[str, typer.Option(help="cluster version whose schemas validate the objects")] = "1.35",
    canary: Annotated[str, typer.Option(help="deployment (second Deployment), argo (Rollout) or none")] = "deployment",
    canary_weight: Annotated[int, typer.Option(help="percent of traffic for the canary")] = 10,
    canary_image: Annotated[Optional[str], typer.Option(help="image of the canary (default: --image)")] = None,  # noqa: UP045
) -> None:
    """Write validated Kubernetes, KServe and Triton files for a plan (nothing is written if any is invalid)."""
    from optiserve.emit import TARGETS, EmitOptions
    from optiserve.emit import emit as emit_files
    from optiserve.plan.result import read_plan

    targets = list(TARGETS) if target == "all" else [t.strip() for t in target.split(",") if t.strip()]
    plan_doc = read_plan(plan_file)
    opts = EmitOptions(
        image=image,
        namespace=namespace,
        k8s_version=k8s_version,
        model_uris=_pairs(model_uri, "--model-uri"),
        canary=canary,
        canary_weight=canary_weight,
        canary_image=canary_image,
    )
    files = {k: Path(v) for k, v in _pairs(model, "--model").items()}
    for m in plan_doc.get("models", []):
        c = m.get("chosen") or {}
        if c and c.get("precision") != "fp32" and "artifact" not in c:
            err.print(
                f"warning: the plan predates artifacts: {m['model']}'s {c['precision']} variant is rebuilt here with "
                "synthetic calibration, not the one measured; re-plan to ship the measured file"
            )
    written = emit_files(plan_doc, targets, output, opts, files)
    for w in written:
        out.print(f"wrote {escape(str(w))}")
    out.print(
        f"{len(written)} files, validated: Kubernetes {k8s_version} schemas (strict), KServe SDK types, "
        "Triton ModelConfig protobuf"
    )


@app.command()
@one_line_errors
def compare(
    base: Annotated[Path, typer.Argument(help="baseline: a profile folder or a load-test JSON (--json)")],
    new: Annotated[Path, typer.Argument(help="candidate: the same kind as BASE")],
    metric: Annotated[str, typer.Option(help="p50, median, p90, p95, p99 or mean")] = "p99",
    max_regression: Annotated[
        str, typer.Option(help="fail when new/base exceeds 1 + this with confidence (5% or 0.05)")
    ] = "5%",
    confidence: Annotated[float, typer.Option(help="confidence of the bootstrap interval")] = 0.95,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples per config")] = 2000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="table, md or json")] = "table",
) -> None:
    """Regression gate: compare two runs config by config (bootstrap CI of the ratio); exit 1 on a regression."""
    from optiserve.errors import UsageError
    from optiserve.report.compare import compare as run_compare
    from optiserve.report.compare import headline, to_dict, to_markdown, to_rows

    if fmt not in ("table", "md", "json"):
        raise UsageError(f"unknown --format {fmt!r}; valid: table, md, json")
    text = max_regression.strip()
    try:
        threshold = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"--max-regression {max_regression!r}: expected e.g. 5% or 0.05") from None
    result = run_compare(base, new, metric, threshold, confidence, resamples, seed)
    if fmt == "md":
        print(to_markdown(result))
    elif fmt == "json":
        import json

        print(json.dumps(to_dict(result), indent=2))
    else:
        t = Table("config", "n base/new", f"base {metric} ms", f"new {metric} ms", "new/base", "CI", "verdict")
        for r in to_rows(result):
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
            ci = "-" if r["ci_low"] is None else f"{r['ci_low']:.3f}-{r['ci_high']:.3f}"
            verdict = f"[red]{r['verdict']} REGRESSED[/red]" if r["regressed"] else escape(str(r["verdict"]))
            base_ms = "-" if r["base_ms"] is None else f"{r['base_ms']:.3f}"
            new_ms = "-" if r["new_ms"] is None else f"{r['new_ms']:.3f}"
            t.add_row(escape(r["config"]), f"{r['n_base']}/{r['n_new']}", base_ms, new_ms, ratio, ci, verdict)
        out.print(t)
        for w in result.warnings:
            err.print(f"[yellow]![/yellow] {escape(w)}")
        out.print(headline(result).replace("**", ""))
    if result.failed:
        raise typer.Exit(1)


@app.command()
@one_line_errors
def report(
    profiles: Annotated[list[Path], typer.Argument(metavar="PROFILE...", help="profile folders")],
    plan_file: Annotated[Optional[Path], typer.Option("--plan", help="plan JSON from optiserve plan")] = None,  # noqa: UP045
    loadtest: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(
            help="result JSON from optiserve loadtest --json (repeatable; --predict-from adds the prediction)"
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="report folder")] = Path("reports/latest"),
    title: Annotated[str, typer.Option(help="report title")] = "optiserve report",
    fmt: Annotated[
        str, typer.Option("--format", help="html (folder with index.html, PNGs, summary.md) or md")
    ] = "html",
) -> None:
    """A self-contained HTML report with figures (and a Markdown summary for pull requests)."""
    from optiserve._imports import optional_import
    from optiserve.errors import UsageError
    from optiserve.plan.result import read_plan
    from optiserve.profile.store import load_profile

    optional_import("matplotlib", "report")  # before anything is loaded: the install hint, not a traceback
    from optiserve.report.document import load_loadtest, render_markdown, write_report

    if fmt not in ("html", "md"):
        raise UsageError(f"unknown --format {fmt!r}; valid: html, md")
    loaded = {}
    for path in profiles:
        name = path.name
        while name in loaded:
            name += "'"
        loaded[name] = load_profile(path)
    plan_doc = read_plan(plan_file) if plan_file else None
    tests = [load_loadtest(p) for p in loadtest or []]
    if fmt == "md":
        print(render_markdown(title, loaded, plan_doc, tests), end="")
        return
    written = write_report(output, loaded, plan_doc, tests, title)
    out.print(f"report: {escape(str(written[0]))} ({len(written) - 2} figures, summary.md beside it)")


@app.command()
@one_line_errors
def serve(
    model: Annotated[str, typer.Argument(help="ONNX file, or a zoo name")],
    precision: Annotated[str, typer.Option(help="fp32, fp16, int8-dynamic, int8-static, int4")] = "fp32",
    threads: Annotated[int, typer.Option(help="intra-op threads of the session")] = 1,
    max_batch: Annotated[int, typer.Option(help="most rows per executed batch")] = 8,
    max_delay_ms: Annotated[float, typer.Option(help="longest a request waits for a batch to fill")] = 2.0,
    preferred: Annotated[str, typer.Option(help="preferred batch sizes, comma list (largest is the target)")] = "",
    instances: Annotated[int, typer.Option(help="batches run concurrently")] = 1,
    max_queue: Annotated[int, typer.Option(help="requests waiting before 503")] = 256,
    max_body_mb: Annotated[float, typer.Option(help="largest request body")] = 64.0,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind")] = 8000,
    name: Annotated[Optional[str], typer.Option(help="model name in URLs (default: file stem)")] = None,  # noqa: UP045
    expect_sha256: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="refuse to start unless the model file has this SHA-256 (what emitted manifests pass)"),
    ] = None,
    shape: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="dims the graph leaves open, as for profile: NAME=N or INPUT=D1,D2,.. (repeatable)"),
    ] = None,
    batch_axis: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="batch axis of an input, INPUT=AXIS or INPUT=none (default: inferred; repeatable)"),
    ] = None,
    custom_ops: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(help="custom-op shared library registered in the session (repeatable)"),
    ] = None,
    calibration: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="int8-static: the .npz the profile calibrated on, so the profiled variant is served"),
    ] = None,
    calibrator: Annotated[
        str, typer.Option(help="int8-static: minmax, entropy or percentile (as profiled)")
    ] = "minmax",
    prebuilt: Annotated[
        bool, typer.Option(help="MODEL already is the --precision variant (what emit ships): serve it as is")
    ] = False,
    runtime: Annotated[
        str, typer.Option(help="runtime to serve on (the plan's): onnxruntime-cpu, onnxruntime-cuda, ...")
    ] = "onnxruntime-cpu",
) -> None:
    """Serve a model over the Open Inference Protocol v2 with dynamic batching and /metrics."""
    import uvicorn

    from optiserve.errors import UsageError
    from optiserve.models.zoo import resolve_model
    from optiserve.serve.app import ServeConfig, app_for_model

    if min(threads, max_batch, instances, max_queue) < 1 or max_delay_ms < 0 or max_body_mb <= 0:
        raise UsageError("threads, max-batch, instances and max-queue must be >= 1, max-delay-ms >= 0")
    try:
        pref = tuple(int(p) for p in preferred.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"malformed --preferred {preferred!r}: expected a comma list of sizes") from None
    if any(p < 1 or p > max_batch for p in pref):
        raise UsageError(f"preferred batch sizes must lie in 1..{max_batch}")
    path = resolve_model(model)
    from optiserve.models.graph import inspect_model
    from optiserve.models.layout import infer_layout, parse_batch_axes, parse_shape_overrides
    from optiserve.runtimes import custom_ops as ops

    ops.use(custom_ops or ())

    info = inspect_model(path)
    layout = infer_layout(info, parse_shape_overrides(shape or []), parse_batch_axes(batch_axis or []))
    if layout.fixed_batch is not None and max_batch != layout.fixed_batch:  # app_for_model serves it at that batch
        err.print(f"the model fixes its batch at {layout.fixed_batch}: serving with --max-batch {layout.fixed_batch}")
    if expect_sha256:
        from optiserve.errors import ModelError

        got = info.sha256
        if got != expect_sha256.lower():
            raise ModelError(
                f"{path} has SHA-256 {got[:16]}..., not the expected {expect_sha256[:16]}...: refusing to serve"
            )
    config = ServeConfig(
        name or path.stem, max_batch, max_delay_ms, instances, max_queue, int(max_body_mb * 2**20), pref
    )
    if calibration is not None and not calibration.is_file():
        raise UsageError(f"calibration file not found: {calibration}")
    web = app_for_model(
        path,
        precision,
        threads,
        config,
        layout=layout,
        calibration=calibration,
        calibrator=calibrator,
        prebuilt=prebuilt,
        runtime_name=runtime,
        info=info,  # inspected (and hashed) once
    )
    err.print(f"serving {config.name} on http://{host}:{port}/v2/models/{config.name} (ready after warm-up)")
    uvicorn.run(web, host=host, port=port, log_level="warning", access_log=False)


@app.command()
@one_line_errors
def loadtest(
    url: Annotated[str, typer.Argument(help="server base URL, e.g. http://127.0.0.1:8000")],
    model: Annotated[str, typer.Option(help="model name on the server")],
    rate: Annotated[float, typer.Option(help="requests per second")] = 50.0,
    duration: Annotated[float, typer.Option(help="seconds of scheduled sends")] = 10.0,
    arrival: Annotated[str, typer.Option(help="poisson, gamma or trace")] = "poisson",
    cv: Annotated[float, typer.Option(help="gamma arrivals: coefficient of variation")] = 2.0,
    trace: Annotated[Optional[Path], typer.Option(help="arrival trace: a text file of timestamps")] = None,  # noqa: UP045
    users: Annotated[int, typer.Option(help="concurrent senders (0: derived from the rate)")] = 0,
    p99_target_ms: Annotated[Optional[float], typer.Option(help="judge p99 < this, with 95% confidence")] = None,  # noqa: UP045
    seed: Annotated[int, typer.Option(help="schedule seed")] = 0,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the result here")] = None,  # noqa: UP045
    predict_from: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="profile of the served model: also simulate this very schedule and record the prediction"),
    ] = None,
    precision: Annotated[str, typer.Option(help="with --predict-from: the served precision")] = "fp32",
    threads: Annotated[int, typer.Option(help="with --predict-from: the server's threads")] = 1,
    max_batch: Annotated[int, typer.Option(help="with --predict-from: the server's --max-batch")] = 8,
    max_delay_ms: Annotated[float, typer.Option(help="with --predict-from: the server's --max-delay-ms")] = 2.0,
    instances: Annotated[int, typer.Option(help="with --predict-from: the server's --instances")] = 1,
    per_request_ms: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="with --predict-from: server CPU per request besides inference (default: the profile's)"),
    ] = None,
    overhead_ms: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="with --predict-from: latency per request outside the server (default: the profile's)"),
    ] = None,
    overhead_from: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="with --predict-from: a light-load --json result made with --predict-from; its measured "
            "minus predicted latencies are the overhead distribution (instead of --overhead-ms)"
        ),
    ] = None,
    inputs: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help=".npz of real inputs keyed by input name (as for profile): the first sample is sent"),
    ] = None,
) -> None:
    """Open-loop load test with Locust: latency counts from each request's scheduled time."""
    import json as _json
    import math

    import numpy as np

    from optiserve.errors import UsageError
    from optiserve.estimate.arrivals import make_arrivals
    from optiserve.serve.loadtest import MAX_ERROR_RATE, MAX_REQUESTS, run_loadtest
    from optiserve.serve.verdict import p99_verdict

    if rate <= 0 or duration <= 0:
        raise UsageError("--rate and --duration must be positive")
    n = min(math.ceil(rate * duration), MAX_REQUESTS)
    stamps = None
    if trace is not None:
        if not trace.exists():
            raise UsageError(f"trace file not found: {trace}")
        try:
            stamps = np.loadtxt(trace, ndmin=1)
        except ValueError as exc:
            raise UsageError(f"{trace} is not a list of timestamps: {exc}") from None
    schedule = make_arrivals(arrival, rate, n, cv, seed, stamps)
    users = users or max(16, min(512, int(rate * 0.25) + 16))
    predicted = None
    if predict_from is not None:  # before the run: a bad profile must not waste a load test
        from optiserve.estimate import BatchingPolicy, ServiceModel, simulate
        from optiserve.profile.store import load_profile

        if (per_request_ms or 0) < 0 or (overhead_ms or 0) < 0:
            raise UsageError("--per-request-ms and --overhead-ms must be >= 0")
        from optiserve.profile.serving import serving_terms

        prof = load_profile(predict_from)
        service = ServiceModel.from_profile(prof, None, precision, threads)
        measured_terms = serving_terms(prof.meta) if per_request_ms is None and overhead_ms is None else None
        if measured_terms is not None:  # the serving path profile --serving measured: what the planner uses
            front_s, fixed_s = measured_terms
            policy = BatchingPolicy(max_batch, max_delay_ms / 1e3, (), instances, 1, front_s, fixed_s)
            per_request_ms, overhead_ms = front_s * 1e3, fixed_s * 1e3
        else:
            per_request_ms, overhead_ms = per_request_ms or 0.0, overhead_ms or 0.0
            # hand-given CPU per request shares the inference core: modelled per row, as the fidelity benchmark does
            service = service.plus_per_item(per_request_ms / 1e3)
            policy = BatchingPolicy(max_batch, max_delay_ms / 1e3, (), instances, 1, 0.0, overhead_ms / 1e3)
        sim = simulate(np.asarray(schedule, dtype=np.float64), service, policy)
        sim_ms = sim.latency_s * 1e3
        lat_ms = sim_ms
        if overhead_from is not None:
            lat_ms = sim_ms + np.random.default_rng(seed).choice(_measured_overheads(overhead_from), sim_ms.size)
        predicted = {
            "p50_ms": float(np.quantile(lat_ms, 0.5)),
            "p99_ms": float(np.quantile(lat_ms, 0.99)),
            "source": f"queueing simulator on {predict_from} ({precision}, {threads} threads), same schedule",
            "policy": {"max_batch": max_batch, "max_delay_ms": max_delay_ms, "instances": instances},
            "per_request_ms": per_request_ms,
            "overhead_ms": overhead_ms,
            "overhead_from": str(overhead_from) if overhead_from else None,
            "calibrated": bool(per_request_ms or overhead_ms or overhead_from),
            "serving_terms": "measured by profile --serving" if measured_terms is not None else "given or none",
        }
    samples = None
    if inputs is not None:
        from optiserve.models.inputs import load_npz

        samples = load_npz(inputs)
    try:
        result = run_loadtest(url, model, schedule, users, samples=samples)
    except OSError as exc:
        raise UsageError(f"cannot reach {url}: {exc}") from None
    s = result.summary()
    out.print(
        f"{s['completed']}/{s['scheduled']} ok at {s['achieved_rate']:.1f} req/s (target {s['target_rate']:.1f}); "
        f"p50 {s['p50_ms']:.2f}  p95 {s['p95_ms']:.2f}  p99 {s['p99_ms']:.2f}  p99.9 {s['p999_ms']:.2f} ms "
        f"(from scheduled send); late sends {s['late_fraction']:.1%}; errors {s['errors'] or 'none'}"
    )
    if predicted is not None:
        s["predicted"] = predicted
        err_p99 = (predicted["p99_ms"] - s["p99_ms"]) / s["p99_ms"] if s["p99_ms"] else float("nan")
        out.print(
            f"PREDICTED for this schedule: p50 {predicted['p50_ms']:.2f}  p99 {predicted['p99_ms']:.2f} ms "
            f"(p99 error {err_p99:+.0%} vs measured)"
        )
    if not result.valid:
        out.print("[red]INVALID[/red]: the client fell behind its schedule (>1% late sends); add --users or a core")
    too_many_errors = result.error_rate > MAX_ERROR_RATE
    if too_many_errors:
        out.print(
            f"[red]FAIL[/red]: {result.failed} of {result.scheduled} requests failed ({result.error_rate:.1%}; "
            f"a run passes with at most {MAX_ERROR_RATE:.1%})"
        )
    if p99_target_ms is not None:
        v = p99_verdict(result.verdict_latencies(), p99_target_ms)  # failed requests count as over the target
        s["verdict"] = "fail" if too_many_errors else v.outcome
        out.print(v.line())
    if json_out:
        s["latency_ms"] = [round(float(x), 4) for x in result.latency_ms]
        s["index"] = [int(i) for i in result.index]
        if predict_from is not None:  # per scheduled request, without any overhead: what --overhead-from subtracts
            s["predicted_service_ms"] = [round(float(x), 4) for x in sim_ms]
        json_out.write_text(_json.dumps(s))
    if not result.valid or s.get("verdict") == "fail" or too_many_errors:
        raise typer.Exit(1)


@app.command()
@one_line_errors
def verify(
    plan_file: Annotated[Path, typer.Argument(help="plan JSON from optiserve plan")],
    model: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="NAME=FILE: the planned model (checked against the plan's digest; repeatable)"),
    ] = None,
    duration: Annotated[float, typer.Option(help="seconds of load per rate")] = 10.0,
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for verify.json and the runs")] = Path(
        "verify"
    ),
) -> None:
    """Run the plan's serving configuration here at its per-replica target and peak rates: predicted vs measured."""
    from optiserve.plan.result import read_plan
    from optiserve.serve.verify import verify_plan

    files = {k: Path(v) for k, v in _pairs(model, "--model").items()}
    doc = verify_plan(read_plan(plan_file), files, duration, output)
    for m in doc["models"]:
        for r in m["rates"]:
            meas, pred = r["measured"], r["predicted"] or {}
            err = f"{r['p99_error']:+.0%}" if r["p99_error"] is not None else "-"
            out.print(
                f"{m['model']} {r['load']} {r['rate']:.1f} req/s ({r['requests']} requests): p99 measured "
                f"{meas['p99_ms']:.2f} ms, predicted {pred.get('p99_ms', float('nan')):.2f} ms ({err}); "
                f"errors {r['error_rate']:.1%}; {r['verdict'].upper()}"
            )
    out.print(f"verify: {doc['verdict'].upper()} ({output / 'verify.json'})")
    if doc["verdict"] == "fail":
        raise typer.Exit(1)


def _measured_overheads(path: Path) -> Any:
    """Measured minus simulated latency per request of a light-load run: what the simulator does not model."""
    import numpy as np

    from optiserve._files import read_json
    from optiserve.errors import UsageError

    data = read_json(path, "load-test result")
    try:
        lat = np.asarray(data["latency_ms"], dtype=np.float64)
        idx = np.asarray(data["index"], dtype=np.int64)
        sim = np.asarray(data["predicted_service_ms"], dtype=np.float64)
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{path} is not a loadtest --json result made with --predict-from") from None
    if lat.size == 0 or idx.size != lat.size or (idx.size and idx.max() >= sim.size):
        raise UsageError(f"{path} holds no usable latencies")
    return lat - sim[idx]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
