"""Measure one config, in its own process: ``python -m optiserve.profile.worker JOB OUT``.

The parent (``runner``) reads OUT; anything that goes wrong in here that Python
can catch becomes a failed ``Measurement`` with its reason. A crash, hang or
out-of-memory kill is caught by the parent instead.

Testing hook: ``OPTISERVE_FAULT=crash@batch_size=4`` (or ``hang@...``) makes
the matching config abort or hang, so the isolation of failing configs can be
tested for real without a buggy model.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optiserve._reasons import one_line
from optiserve._rows import measurement_row
from optiserve.errors import OptiserveError
from optiserve.types import (
    AccuracyReport,
    BenchConfig,
    InputLayout,
    Measurement,
    Precision,
    Status,
)

if TYPE_CHECKING:
    import numpy as np

    from optiserve.models.graph import ModelInfo
    from optiserve.profile.pipeline import Pipeline, StageSpec
    from optiserve.profile.timing import TimingPolicy, WarmupResult
    from optiserve.runtimes.base import Runtime, Session


def stage_of(stage: str) -> dict[str, Any]:
    """Where a failed config stopped (input, build, run): lets auto fall back on build failures."""
    return {"failed_stage": stage}


def _inject_fault(config: BenchConfig) -> None:
    spec = os.environ.get("OPTISERVE_FAULT", "")
    if "@" not in spec:
        return
    action, _, cond = spec.partition("@")
    key, _, value = cond.partition("=")
    if str(config.to_dict().get(key)) != value:
        return
    if action == "crash":
        os.abort()
    if action == "hang":
        time.sleep(3600)


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _synthetic_hint(layout: InputLayout, feeds: dict[str, Any]) -> str:
    """What a failure on synthetic inputs may owe to them: unbatched values (a sample
    rate, a flag) can only be guessed, and a graph may branch on them."""
    scalars = [
        f"{t.name}={feeds[t.name].reshape(-1)[0]}" for t in layout.inputs if t.batch_axis is None and t.name in feeds
    ]
    if not scalars:
        return ""
    return f" (synthetic inputs set {', '.join(scalars[:3])}: pass --inputs with real values)"


def _layout(job: dict[str, Any], info: Any) -> InputLayout:
    from optiserve.models.layout import infer_layout

    return InputLayout.from_dict(job["layout"]) if job.get("layout") else infer_layout(info)


@dataclass(frozen=True)
class _Inputs:
    """What the config runs on: the graph, its layout, real inputs if given, the timed stage."""

    model: Path
    info: ModelInfo
    layout: InputLayout
    npz: dict[str, Any] | None
    stage: StageSpec | None
    image_input: str


@dataclass(frozen=True)
class _Timed:
    """The timing step's results, and the session the accuracy step reuses."""

    session: Session
    pipe: Pipeline
    load_time_s: float
    warmup: WarmupResult
    samples: np.ndarray
    stop_reason: str
    foreign_cpu: float
    peak_rss_mb: float
    base_rss_mb: float
    gpu: dict[str, Any] | None


def _refusal(config: BenchConfig, runtime: Runtime) -> Measurement | None:
    """A failed row when the runtime cannot run this config here at all."""
    reason = runtime.available()
    if reason:
        return Measurement(config, Status.FAILED, error=f"runtime unavailable: {reason}")
    if not runtime.supports(config.precision):
        return Measurement(config, Status.FAILED, error=f"{config.runtime} does not support {config.precision}")
    return None


def _inputs(job: dict[str, Any], config: BenchConfig) -> _Inputs:
    from optiserve.models.graph import inspect_model
    from optiserve.models.inputs import load_npz
    from optiserve.profile.pipeline import StageSpec

    model = Path(job["model"])
    info = inspect_model(model)
    stage = StageSpec.parse(config.preprocess) if config.preprocess else None
    image_input = stage.image_input(info) if stage else ""
    npz = load_npz(Path(job["inputs"])) if job.get("inputs") else None
    return _Inputs(model, info, _layout(job, info), npz, stage, image_input)


def _build_variant(
    job: dict[str, Any], config: BenchConfig, runtime: Runtime, inp: _Inputs
) -> tuple[Path, dict[str, Any]] | Measurement:
    """The file to load (the model, or its precision variant from the cache) and the variant's record."""
    from optiserve.variants.calibration import build_from_recipe
    from optiserve.variants.recipe import VariantRecipe

    if config.precision not in runtime.variant_precisions:
        return inp.model, {}
    recipe = VariantRecipe.from_identity(config.precision, dict(config.variant))
    try:
        built = build_from_recipe(
            inp.model,
            inp.info,
            inp.layout,
            recipe,
            Path(job["calibration"]) if job.get("calibration") else None,
            Path(job["cache_dir"]) if job.get("cache_dir") else None,
            time_limit_s=float(job.get("build_timeout") or 600.0),
        )
    except Exception as exc:
        return Measurement(config, Status.FAILED, error=one_line(exc), extra=stage_of("build"))
    return built.path, built.as_dict()


def _feeds(
    job: dict[str, Any], config: BenchConfig, inp: _Inputs, run_path: Path
) -> tuple[dict[str, str], dict[str, Any]]:
    """Input dtypes of the file that runs, and one call's inputs in them."""
    from optiserve.models.graph import inspect_model
    from optiserve.models.inputs import make_inputs
    from optiserve.profile.evaluation import as_dtypes

    # a variant may take other input types than the model (fp16 without fp32 I/O)
    graph = inspect_model(run_path) if run_path != inp.model else inp.info
    dtypes = {i.name: i.dtype for i in graph.inputs}
    made = make_inputs(inp.info, config.batch_size, npz=inp.npz, seed=job.get("seed", 0), layout=inp.layout)
    return dtypes, as_dtypes(made, dtypes)


def _time(
    job: dict[str, Any],
    config: BenchConfig,
    runtime: Runtime,
    policy: TimingPolicy,
    inp: _Inputs,
    run_path: Path,
    dtypes: dict[str, str],
    feeds: dict[str, Any],
) -> _Timed:
    """Load the session, warm it up until stable, then take the timed samples."""
    from optiserve.profile.gpu_monitor import GpuMonitor
    from optiserve.profile.hardware import ForeignLoad
    from optiserve.profile.pipeline import Pipeline
    from optiserve.profile.timing import measure, warm_up
    from optiserve.runtimes.gpu import StagedSession

    base_rss = _rss_mb()
    t0 = time.perf_counter()
    session = runtime.load(run_path, config.precision, config.threads, dict(config.options), layout=inp.layout)
    load_time = time.perf_counter() - t0
    run = session.run

    def call() -> object:  # the bare path: nothing but the session call is timed
        return run(feeds)

    staged = session if isinstance(session, StagedSession) else None
    seed = job.get("seed", 0)
    pipe = Pipeline(run, feeds, inp.stage, inp.image_input, dtypes.get(inp.image_input, "float32"), seed, staged)
    timed = pipe if inp.stage or staged else call
    wu = warm_up(timed, policy)
    pipe.reset()
    foreign = ForeignLoad()
    monitor = GpuMonitor(int(dict(config.options).get("device_id", 0))) if runtime.device == "gpu" else None
    if monitor:
        with monitor:
            samples, stop_reason = measure(timed, policy, wu.per_call_s)
    else:
        samples, stop_reason = measure(timed, policy, wu.per_call_s)
    return _Timed(
        session,
        pipe,
        load_time,
        wu,
        samples,
        stop_reason,
        foreign.fraction(),
        _peak_rss_mb(),
        base_rss,
        monitor.summary() if monitor else None,
    )


def _accuracy(
    job: dict[str, Any], config: BenchConfig, runtime: Runtime, inp: _Inputs, session: Session, dtypes: dict[str, str]
) -> AccuracyReport:
    """The variant's outputs against the fp32 reference (and task metrics when labels are given)."""
    from optiserve.profile.evaluation import eval_batches, evaluate, load_labels

    labels = load_labels(Path(job["labels"])) if job.get("labels") else None
    batches, batch_labels = eval_batches(
        inp.info,
        config.batch_size,
        int(job.get("eval_samples", 32)),
        inp.layout,
        inp.npz,
        labels,
        int(job.get("seed", 0)),
    )
    synthetic = inp.npz is None or (
        config.precision is Precision.INT8_STATIC and dict(config.variant).get("calibration") == "synthetic"
    )
    return evaluate(
        runtime,
        inp.model,
        session,
        config,
        batches,
        batch_labels,
        synthetic,
        dtypes,
        output_axes=inp.layout.output_axes,
        metric=job.get("metric"),
    )


def _measurement(
    job: dict[str, Any],
    config: BenchConfig,
    policy: TimingPolicy,
    t: _Timed,
    accuracy: Any,
    variant: dict[str, Any],
    started: float,
) -> Measurement:
    """The row: statistics, stability warnings and the accuracy verdict."""
    from optiserve.profile.stats import stability_warnings, summarize

    stats = summarize(t.samples)
    warnings = stability_warnings(
        stats,
        target_ci=policy.target_ci,
        warmup_stable=t.warmup.stable,
        stop_reason=t.stop_reason,
        foreign_cpu=t.foreign_cpu,
    )
    limit = job.get("max_accuracy_drop")
    within = None if limit is None else bool(accuracy.drop <= float(limit))
    if within is False:
        where = f" at {accuracy.worst_output}{accuracy.worst_group}" if accuracy.worst_output else ""
        warnings.append(f"accuracy drop {accuracy.drop:.4g} ({accuracy.drop_metric}{where}) exceeds {limit}")
    return Measurement(
        config=config,
        status=Status.OK,
        stats=stats,
        throughput=config.batch_size / (stats.mean / 1e3),
        load_time_s=t.load_time_s,
        warmup_iterations=t.warmup.iterations,
        warmup_stable=t.warmup.stable,
        peak_rss_mb=t.peak_rss_mb,
        model_rss_mb=max(t.peak_rss_mb - t.base_rss_mb, 0.0),
        wall_time_s=time.perf_counter() - started,
        stop_reason=t.stop_reason,
        warnings=tuple(warnings),
        samples_ns=tuple(int(s) for s in t.samples),
        accuracy=accuracy,
        within_tolerance=within,
        variant=variant,
        stages=t.pipe.breakdown(t.samples),
        extra={
            "foreign_cpu": round(t.foreign_cpu, 4),
            "preprocessor": t.pipe.preprocessor_name,
            **({"gpu": t.gpu} if t.gpu is not None else {}),
        },
    )


def measure_config(job: dict[str, Any]) -> Measurement:
    """Build or fetch the variant, load, warm up, measure, then judge accuracy — in this process."""
    from optiserve.profile.timing import TimingPolicy
    from optiserve.runtimes import custom_ops
    from optiserve.runtimes.registry import get_runtime

    config = BenchConfig.from_dict(job["config"])
    policy = TimingPolicy(**job["policy"])
    started = time.perf_counter()
    variant: dict[str, Any] = {}
    hint = ""
    try:
        custom_ops.use(job.get("custom_ops") or ())
        runtime = get_runtime(config.runtime)
        refused = _refusal(config, runtime)
        if refused:
            return refused
        inp = _inputs(job, config)
        if not inp.layout.allows(config.batch_size):
            why = f"the model fixes its batch at {inp.layout.fixed_batch}"
            return Measurement(config, Status.FAILED, error=why, extra=stage_of("input"))
        built = _build_variant(job, config, runtime, inp)
        if isinstance(built, Measurement):
            return built
        run_path, variant = built
        dtypes, feeds = _feeds(job, config, inp, run_path)
        if inp.npz is None:
            hint = _synthetic_hint(inp.layout, feeds)
        _inject_fault(config)
        timed = _time(job, config, runtime, policy, inp, run_path, dtypes, feeds)
        accuracy = _accuracy(job, config, runtime, inp, timed.session, dtypes)
        timed.session.close()
    except MemoryError:
        return Measurement(config, Status.FAILED, error="out of memory (MemoryError)", variant=variant)
    except OptiserveError as exc:
        return Measurement(config, Status.FAILED, error=str(exc), variant=variant)
    except Exception as exc:  # the back end's own failure: record it, the sweep goes on
        msg = one_line(exc) + hint
        if "alloc" in msg.lower() or "memory" in msg.lower():
            msg = f"out of memory? {msg}"
        return Measurement(config, Status.FAILED, error=msg, variant=variant, extra=stage_of("run"))
    return _measurement(job, config, policy, timed, accuracy, variant, started)


def main(argv: list[str]) -> int:
    job_path, out_path = Path(argv[0]), Path(argv[1])
    job = json.loads(job_path.read_text())
    if job.get("parent_pid"):
        from optiserve.profile.lifeline import die_with_parent

        tmp = job_path.parent
        die_with_parent(job, tmp if tmp.name.startswith("optiserve-") else None)
    limit = job.get("memory_limit_mb")
    if limit:
        cap = int(limit) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        m = measure_config(job)
    except Exception as exc:  # a library that cannot even load (under a memory cap, say): still a row
        m = Measurement(
            BenchConfig.from_dict(job["config"]), Status.FAILED, error=one_line(exc), extra=stage_of("load")
        )
    if limit and m.status is Status.FAILED:
        m = replace(m, error=f"{m.error} [under a {limit} MiB memory cap: likely out of memory]")
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(measurement_row(m)))
    os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
