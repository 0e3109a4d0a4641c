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
from dataclasses import replace
from pathlib import Path
from typing import Any

from optiserve._reasons import one_line
from optiserve.errors import OptiserveError
from optiserve.types import BenchConfig, InputLayout, Measurement, Precision, Status, measurement_row


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


def measure_config(job: dict[str, Any]) -> Measurement:
    """Build or fetch the variant, load, warm up, measure, then judge accuracy — in this process."""
    from optiserve.models.graph import inspect_model
    from optiserve.models.inputs import load_npz, make_inputs
    from optiserve.profile.evaluation import as_dtypes, eval_batches, evaluate, load_labels
    from optiserve.profile.gpu_monitor import GpuMonitor
    from optiserve.profile.hardware import ForeignLoad
    from optiserve.profile.pipeline import Pipeline, StageSpec
    from optiserve.profile.stats import stability_warnings, summarize
    from optiserve.profile.timing import TimingPolicy, measure, warm_up
    from optiserve.runtimes import custom_ops
    from optiserve.runtimes.gpu import StagedSession
    from optiserve.runtimes.registry import get_runtime
    from optiserve.variants.calibration import build_from_recipe
    from optiserve.variants.recipe import VariantRecipe

    config = BenchConfig.from_dict(job["config"])
    policy = TimingPolicy(**job["policy"])
    started = time.perf_counter()
    variant: dict[str, Any] = {}
    hint = ""
    try:
        custom_ops.use(job.get("custom_ops") or ())
        runtime = get_runtime(config.runtime)
        reason = runtime.available()
        if reason:
            return Measurement(config, Status.FAILED, error=f"runtime unavailable: {reason}")
        if not runtime.supports(config.precision):
            return Measurement(config, Status.FAILED, error=f"{config.runtime} does not support {config.precision}")
        model = Path(job["model"])
        info = inspect_model(model)
        stage = StageSpec.parse(config.preprocess) if config.preprocess else None
        image_input = stage.image_input(info) if stage else ""
        npz = load_npz(Path(job["inputs"])) if job.get("inputs") else None
        layout = _layout(job, info)
        if not layout.allows(config.batch_size):
            why = f"the model fixes its batch at {layout.fixed_batch}"
            return Measurement(config, Status.FAILED, error=why, extra=stage_of("input"))
        run_path = model
        if config.precision in runtime.variant_precisions:
            recipe = VariantRecipe.from_identity(config.precision, dict(config.variant))
            try:
                built = build_from_recipe(
                    model,
                    info,
                    layout,
                    recipe,
                    Path(job["calibration"]) if job.get("calibration") else None,
                    Path(job["cache_dir"]) if job.get("cache_dir") else None,
                    time_limit_s=float(job.get("build_timeout") or 600.0),
                )
            except Exception as exc:
                return Measurement(config, Status.FAILED, error=one_line(exc), extra=stage_of("build"))
            run_path, variant = built.path, built.as_dict()
        # a variant may take other input types than the model (fp16 without fp32 I/O)
        dtypes = {i.name: i.dtype for i in (inspect_model(run_path) if run_path != model else info).inputs}
        feeds = as_dtypes(make_inputs(info, config.batch_size, npz=npz, seed=job.get("seed", 0), layout=layout), dtypes)
        if npz is None:
            hint = _synthetic_hint(layout, feeds)
        _inject_fault(config)
        base_rss = _rss_mb()
        t0 = time.perf_counter()
        session = runtime.load(run_path, config.precision, config.threads, dict(config.options), layout=layout)
        load_time = time.perf_counter() - t0
        run = session.run

        def call() -> object:  # the bare path: nothing but the session call is timed
            return run(feeds)

        staged = session if isinstance(session, StagedSession) else None
        pipe = Pipeline(run, feeds, stage, image_input, dtypes.get(image_input, "float32"), job.get("seed", 0), staged)
        timed = pipe if stage or staged else call
        wu = warm_up(timed, policy)
        pipe.reset()
        foreign = ForeignLoad()
        monitor = GpuMonitor(int(dict(config.options).get("device_id", 0))) if runtime.device == "gpu" else None
        if monitor:
            with monitor:
                samples, stop_reason = measure(timed, policy, wu.per_call_s)
        else:
            samples, stop_reason = measure(timed, policy, wu.per_call_s)
        foreign_cpu = foreign.fraction()
        peak = _peak_rss_mb()
        labels = load_labels(Path(job["labels"])) if job.get("labels") else None
        batches, batch_labels = eval_batches(
            info, config.batch_size, int(job.get("eval_samples", 32)), layout, npz, labels, int(job.get("seed", 0))
        )
        synthetic = npz is None or (
            config.precision is Precision.INT8_STATIC and dict(config.variant).get("calibration") == "synthetic"
        )
        accuracy = evaluate(
            runtime,
            model,
            session,
            config,
            batches,
            batch_labels,
            synthetic,
            dtypes,
            output_axes=layout.output_axes,
            metric=job.get("metric"),
        )
        session.close()
    except MemoryError:
        return Measurement(config, Status.FAILED, error="out of memory (MemoryError)", variant=variant)
    except OptiserveError as exc:
        return Measurement(config, Status.FAILED, error=str(exc), variant=variant)
    except Exception as exc:  # the back end's own failure: record it, the sweep goes on
        msg = one_line(exc) + hint
        if "alloc" in msg.lower() or "memory" in msg.lower():
            msg = f"out of memory? {msg}"
        return Measurement(config, Status.FAILED, error=msg, variant=variant, extra=stage_of("run"))
    stats = summarize(samples)
    warnings = stability_warnings(
        stats,
        target_ci=policy.target_ci,
        warmup_stable=wu.stable,
        stop_reason=stop_reason,
        foreign_cpu=foreign_cpu,
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
        load_time_s=load_time,
        warmup_iterations=wu.iterations,
        warmup_stable=wu.stable,
        peak_rss_mb=peak,
        model_rss_mb=max(peak - base_rss, 0.0),
        wall_time_s=time.perf_counter() - started,
        stop_reason=stop_reason,
        warnings=tuple(warnings),
        samples_ns=tuple(int(s) for s in samples),
        accuracy=accuracy,
        within_tolerance=within,
        variant=variant,
        stages=pipe.breakdown(samples),
        extra={
            "foreign_cpu": round(foreign_cpu, 4),
            "preprocessor": pipe.preprocessor_name,
            **({"gpu": monitor.summary()} if monitor else {}),
        },
    )


def main(argv: list[str]) -> int:
    job_path, out_path = Path(argv[0]), Path(argv[1])
    job = json.loads(job_path.read_text())
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
