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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from optiserve.errors import OptiserveError
from optiserve.types import BenchConfig, Measurement, Status


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


def measure_config(job: dict[str, Any]) -> Measurement:
    """Load, warm up and measure one config in this process."""
    from optiserve.models.graph import inspect_model
    from optiserve.models.inputs import load_npz, make_inputs
    from optiserve.profile.hardware import ForeignLoad
    from optiserve.profile.stats import stability_warnings, summarize
    from optiserve.profile.timing import TimingPolicy, measure, warm_up
    from optiserve.runtimes.registry import get_runtime

    config = BenchConfig.from_dict(job["config"])
    policy = TimingPolicy(**job["policy"])
    started = time.perf_counter()
    try:
        runtime = get_runtime(config.runtime)
        reason = runtime.available()
        if reason:
            return Measurement(config, Status.FAILED, error=f"runtime unavailable: {reason}")
        if not runtime.supports(config.precision):
            return Measurement(config, Status.FAILED, error=f"{config.runtime} does not support {config.precision}")
        info = inspect_model(Path(job["model"]))
        npz = load_npz(Path(job["inputs"])) if job.get("inputs") else None
        overrides = {k: tuple(v) for k, v in job.get("shapes", {}).items()}
        feeds = make_inputs(info, config.batch_size, overrides, npz, seed=job.get("seed", 0))
        _inject_fault(config)
        base_rss = _rss_mb()
        t0 = time.perf_counter()
        session = runtime.load(Path(job["model"]), config.precision, config.threads, dict(config.options))
        load_time = time.perf_counter() - t0
        run = session.run

        def call() -> object:
            return run(feeds)

        wu = warm_up(call, policy)
        foreign = ForeignLoad()
        samples, stop_reason = measure(call, policy, wu.per_call_s)
        foreign_cpu = foreign.fraction()
        peak = _peak_rss_mb()
        session.close()
    except MemoryError:
        return Measurement(config, Status.FAILED, error="out of memory (MemoryError)")
    except OptiserveError as exc:
        return Measurement(config, Status.FAILED, error=str(exc))
    except Exception as exc:  # the back end's own failure: record it, the sweep goes on
        text = str(exc).strip().splitlines()
        msg = f"{type(exc).__name__}: {text[0] if text else ''}"
        if "alloc" in msg.lower() or "memory" in msg.lower():
            msg = f"out of memory? {msg}"
        return Measurement(config, Status.FAILED, error=msg[:500])
    stats = summarize(samples)
    warnings = stability_warnings(
        stats,
        target_ci=policy.target_ci,
        warmup_stable=wu.stable,
        stop_reason=stop_reason,
        foreign_cpu=foreign_cpu,
    )
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
        extra={"foreign_cpu": round(foreign_cpu, 4)},
    )


def main(argv: list[str]) -> int:
    job_path, out_path = Path(argv[0]), Path(argv[1])
    job = json.loads(job_path.read_text())
    limit = job.get("memory_limit_mb")
    if limit:
        cap = int(limit) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    m = measure_config(job)
    if limit and m.status is Status.FAILED:
        m = replace(m, error=f"{m.error} [under a {limit} MiB memory cap: likely out of memory]")
    tmp = out_path.with_suffix(".tmp")
    d = asdict(m)
    d["config"] = m.config.to_dict()
    d["status"] = m.status.value
    tmp.write_text(json.dumps(d))
    os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
