"""The sweep: validate everything up front, then measure each config in isolation,
flushing each result before the next starts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from optiserve.errors import StoreError, UsageError
from optiserve.models.graph import ModelInfo, inspect_model
from optiserve.models.inputs import load_npz, make_inputs, parse_shape_overrides, resolve_shape
from optiserve.profile.evaluation import load_labels
from optiserve.profile.hardware import fingerprint, library_versions, now_iso
from optiserve.profile.pipeline import StageSpec
from optiserve.profile.runner import run_isolated
from optiserve.profile.store import ParquetStore
from optiserve.profile.sweep import AUTO, AUTO_CHOICE, SweepSpec
from optiserve.profile.timing import TimingPolicy
from optiserve.runtimes.registry import get_runtime
from optiserve.types import BenchConfig, Measurement, Profile, Status


@dataclass(frozen=True)
class SweepPlan:
    """What a run will do: all configs, and which of them are still to measure."""

    info: ModelInfo
    configs: tuple[BenchConfig, ...]
    todo: tuple[BenchConfig, ...]
    overrides: dict[str, tuple[int, ...]]  # resolved --shape and --inputs item shapes


Progress = Callable[[str, BenchConfig, Measurement | None], None]


def _validate_inputs(info: ModelInfo, spec: SweepSpec) -> dict[str, tuple[int, ...]]:
    overrides = parse_shape_overrides(spec.shape)
    known = {i.name for i in info.inputs} | {d for i in info.inputs for d in i.dims if isinstance(d, str)}
    unknown = [k for k in overrides if k not in known]
    if unknown:
        raise UsageError(
            f"--shape names {', '.join(unknown)}, which the model does not have; it has {', '.join(sorted(known))}"
        )
    npz = load_npz(spec.inputs) if spec.inputs is not None else None
    if npz is not None:
        for s in info.inputs:
            if s.name in npz:
                overrides.setdefault(s.name, tuple(npz[s.name].shape[1:]))
        make_inputs(info, 1, overrides, {k: v[:1] for k, v in npz.items()})  # keys and item shapes
    if spec.calibration is not None:
        calib = load_npz(spec.calibration)
        make_inputs(info, 1, overrides, {k: v[:1] for k, v in calib.items()})
    if spec.labels is not None:
        if npz is None:
            raise UsageError("--labels needs --inputs: labels name the classes of those samples")
        labels = load_labels(spec.labels)
        n = min(len(v) for v in npz.values())
        if len(labels) < n:
            raise UsageError(f"--labels has {len(labels)} labels for {n} samples in --inputs")
    for spec_in in info.inputs:
        resolve_shape(spec_in, 1, overrides)  # raises naming a missing dynamic dim
    if spec.preprocess:
        stage = StageSpec.parse(spec.preprocess)
        stage.image_input(info)
        stage.preprocessor()
    return overrides


def metadata(info: ModelInfo, spec: SweepSpec, configs: list[BenchConfig]) -> dict[str, Any]:
    versions = library_versions()
    for name in spec.runtimes():
        rt = get_runtime(name)
        if rt.available() is None:
            versions.update(rt.versions())
    return {
        "model": {
            "path": str(info.path),
            "name": info.path.stem,
            "sha256": info.sha256,
            "family": info.family,
            "opset": info.opset,
            "inputs": [asdict(i) for i in info.inputs],
            "outputs": list(info.outputs),
        },
        "hardware": fingerprint(),
        "versions": versions,
        "created": now_iso(),
        "updated": now_iso(),
        "sweep": spec.model_dump(mode="json"),
        "precision_auto": _auto_note(info, spec),
        "planned_configs": len(configs),
        "complete": False,
    }


def _auto_note(info: ModelInfo, spec: SweepSpec) -> str | None:
    """Why ``--precision auto`` chose what it did, for the summary."""
    if AUTO not in spec.precision:
        return None
    choice, why = AUTO_CHOICE[info.family]
    return f"precision auto -> fp32 + {choice} for a {info.family} graph: {why}"


def plan_sweep(model: Path, spec: SweepSpec, out: Path, *, resume: bool, overwrite: bool) -> SweepPlan:
    """Every check that can fail before measuring starts, so bad input costs nothing."""
    info = inspect_model(model)
    overrides = _validate_inputs(info, spec)
    configs = spec.configs(info.family)
    store = ParquetStore(out)
    if store.exists() and not (resume or overwrite):
        raise StoreError(
            f"{store.folder} already holds a profile: pass --resume to finish it or --overwrite to start again"
        )
    if resume and store.exists():
        prof = store.load()
        if prof.meta["model"]["sha256"] != info.sha256:
            raise StoreError(
                f"{store.folder} was measured on a different model (sha256 {prof.meta['model']['sha256'][:12]}); "
                "use another -o or --overwrite"
            )
        hw = fingerprint()["id"]
        if prof.meta["hardware"].get("id") != hw:
            raise StoreError(
                f"{store.folder} was measured on other hardware ({prof.meta['hardware'].get('cpu_model')}); "
                "resuming would mix machines: use another -o"
            )
        done = {m.config.key for m in prof.measurements}
        todo = tuple(c for c in configs if c.key not in done)
    else:
        store.check_writable()
        todo = tuple(configs)
    return SweepPlan(info, tuple(configs), todo, overrides)


def run_sweep(
    model: Path,
    spec: SweepSpec,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    plan: SweepPlan | None = None,
) -> Profile:
    """Measure every config still to do. ``plan`` (from ``plan_sweep``) skips re-validation."""
    plan = plan or plan_sweep(model, spec, out, resume=resume, overwrite=overwrite)
    store = ParquetStore(out)
    if resume and store.exists():
        store.update_meta(
            sweep=spec.model_dump(mode="json"),
            planned_configs=len(plan.configs),
            precision_auto=_auto_note(plan.info, spec),
        )
    elif overwrite:
        store.overwrite(metadata(plan.info, spec, list(plan.configs)))
    else:
        store.create(metadata(plan.info, spec, list(plan.configs)))
    policy = TimingPolicy(
        budget_s=spec.budget,
        warmup_max_s=spec.warmup,
        target_ci=spec.target_ci,
        min_samples=spec.min_samples,
    )
    for config in plan.todo:
        if progress:
            progress("start", config, None)
        job = {
            "model": str(Path(model).resolve()),
            "config": config.to_dict(),
            "policy": asdict(policy),
            "shapes": {k: list(v) for k, v in plan.overrides.items()},
            "inputs": str(Path(spec.inputs).resolve()) if spec.inputs else None,
            "seed": spec.seed,
            "memory_limit_mb": spec.memory_limit_mb,
            "calibration": str(Path(spec.calibration).resolve()) if spec.calibration else None,
            "labels": str(Path(spec.labels).resolve()) if spec.labels else None,
            "eval_samples": spec.eval_samples,
            "cache_dir": str(Path(spec.cache_dir).resolve()) if spec.cache_dir else None,
            "max_accuracy_drop": spec.max_accuracy_drop,
        }
        t0 = time.perf_counter()
        m = run_isolated(job, spec.config_timeout())
        if m.status is Status.FAILED and not m.wall_time_s:
            m = replace(m, wall_time_s=time.perf_counter() - t0)
        store.append(m)  # on disk before the next config starts
        if progress:
            progress("done", config, m)
    prof = store.load()
    done = {m.config.key for m in prof.measurements}
    store.update_meta(updated=now_iso(), complete=all(c.key in done for c in plan.configs))
    return store.load()
