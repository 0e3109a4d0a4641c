"""The sweep: validate everything up front, then measure each config in isolation,
flushing each result before the next starts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from optiserve.errors import StoreError, UsageError
from optiserve.models.graph import ModelInfo, inspect_model
from optiserve.models.inputs import load_npz, make_inputs, samples_in, user_shapes
from optiserve.models.layout import infer_layout, parse_batch_axes, parse_shape_overrides
from optiserve.profile.evaluation import load_labels
from optiserve.profile.hardware import fingerprint, library_versions, now_iso
from optiserve.profile.pipeline import StageSpec
from optiserve.profile.reference import reference_for
from optiserve.profile.runner import run_isolated
from optiserve.profile.store import ParquetStore, StoreWriteError
from optiserve.profile.summary import layout_line
from optiserve.profile.sweep import AUTO, AUTO_CHOICE, AUTO_FALLBACK, SweepSpec
from optiserve.profile.timing import TimingPolicy
from optiserve.runtimes import custom_ops
from optiserve.runtimes.registry import get_runtime
from optiserve.types import BenchConfig, InputLayout, Measurement, Profile, Status


@dataclass(frozen=True)
class SweepPlan:
    """What a run will do: all configs, and which of them are still to measure."""

    info: ModelInfo
    configs: tuple[BenchConfig, ...]
    todo: tuple[BenchConfig, ...]
    layout: InputLayout  # batch axis per input and every dim resolved: what each worker runs


Progress = Callable[[str, BenchConfig, Measurement | None], None]


def _validate_inputs(info: ModelInfo, spec: SweepSpec) -> InputLayout:
    """The input layout with every user file checked against it (keys, item shapes, scalars)."""
    shapes = parse_shape_overrides(spec.shape)
    axes = parse_batch_axes(spec.batch_axis)
    npz = load_npz(spec.inputs) if spec.inputs is not None else None
    if npz is not None:
        for name, item in user_shapes(info, npz, axes).items():
            shapes.setdefault(name, item)
    layout = infer_layout(info, shapes, axes)  # raises naming a missing dynamic dim
    if npz is not None:
        make_inputs(info, 1, npz=npz, layout=layout)  # keys and item shapes
    if spec.calibration is not None:
        make_inputs(info, 1, npz=load_npz(spec.calibration), layout=layout)
    if spec.labels is not None:
        if npz is None:
            raise UsageError("--labels needs --inputs: labels name the classes of those samples")
        labels = load_labels(spec.labels)
        n = samples_in(npz, layout)
        if len(labels) < n:
            raise UsageError(f"--labels has {len(labels)} labels for {n} samples in --inputs")
    if spec.metric:
        from optiserve.variants.metrics import parse_metric

        parse_metric(spec.metric)
    custom_ops.check(spec.custom_ops)
    if spec.preprocess:
        stage = StageSpec.parse(spec.preprocess)
        stage.image_input(info)
        stage.preprocessor()
    return layout


def metadata(info: ModelInfo, spec: SweepSpec, configs: list[BenchConfig], layout: InputLayout) -> dict[str, Any]:
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
        "layout": layout.to_dict(),
        "batch_note": spec.batches(layout)[1],
        "hardware": fingerprint(),
        "versions": versions,
        "created": now_iso(),
        "updated": now_iso(),
        "sweep": spec.model_dump(mode="json"),
        "precision_auto": _auto_note(info, spec),
        "planned_configs": len(configs),
        "complete": False,
        "reference": reference_for(info, layout, spec.inputs, spec.seed).to_dict(),  # what serve scores drift on
    }


def _auto_note(info: ModelInfo, spec: SweepSpec) -> str | None:
    """Why ``--precision auto`` chose what it did, for the summary."""
    if AUTO not in spec.precision:
        return None
    choice, why = AUTO_CHOICE[info.family]
    return f"precision auto -> fp32 + {choice} for a {info.family} graph: {why}"


def plan_sweep(model: Path, spec: SweepSpec, out: Path, *, resume: bool, overwrite: bool) -> SweepPlan:
    """Every check that can fail before measuring starts, so bad input costs nothing."""
    store = ParquetStore(out)
    store.check_unlocked()
    info = inspect_model(model)
    layout = _validate_inputs(info, spec)
    configs = spec.configs(info.family, layout)
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
        old_layout = prof.meta.get("layout")
        if old_layout and InputLayout.from_dict(old_layout) != layout:
            raise StoreError(
                f"{store.folder} was measured with other input shapes or batch axes "
                f"({layout_line(old_layout)}): resuming would mix them; use another -o or the same --shape"
            )
        done = {m.config.key for m in prof.measurements}
        todo = tuple(c for c in configs if not c.done_in(done))
    else:
        store.check_writable()
        todo = tuple(configs)
    return SweepPlan(info, tuple(configs), todo, layout)


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
    with store.writing():  # a second writer is refused; nothing is written until the first row
        return _measure_locked(model, spec, store, plan, resume=resume, overwrite=overwrite, progress=progress)


def _measure_locked(
    model: Path,
    spec: SweepSpec,
    store: ParquetStore,
    plan: SweepPlan,
    *,
    resume: bool,
    overwrite: bool,
    progress: Progress | None,
) -> Profile:
    if store.exists() and not (resume or overwrite):  # written since plan_sweep looked
        raise StoreError(
            f"{store.folder} already holds a profile: pass --resume to finish it or --overwrite to start again"
        )
    if resume and store.exists():
        done_now = {m.config.key for m in store.load().measurements}
        plan = replace(plan, todo=tuple(c for c in plan.todo if not c.done_in(done_now)))
        meta = store.read_meta()
        meta.update(
            sweep=spec.model_dump(mode="json"),
            planned_configs=len(plan.configs),
            precision_auto=_auto_note(plan.info, spec),
            layout=plan.layout.to_dict(),
            batch_note=spec.batches(plan.layout)[1],
            reference=reference_for(plan.info, plan.layout, spec.inputs, spec.seed).to_dict(),
        )
        store.stage(meta, keep_rows=True)
    else:  # fresh or --overwrite: the old profile stays until the first new row replaces it
        store.stage(metadata(plan.info, spec, list(plan.configs), plan.layout), keep_rows=False)
    written = {"n": 0}
    try:
        return _measure(
            model, spec, store, plan, resume=resume, overwrite=overwrite, progress=progress, written=written
        )
    except StoreWriteError as exc:
        if written["n"]:
            raise StoreError(
                f"{exc}; {written['n']} config(s) of this run are on disk: free space, then --resume"
            ) from None
        raise StoreError(f"{exc}; nothing was written, the folder is as it was: free space and run again") from None


def _measure(
    model: Path,
    spec: SweepSpec,
    store: ParquetStore,
    plan: SweepPlan,
    *,
    resume: bool,
    overwrite: bool,
    progress: Progress | None,
    written: dict[str, int],
) -> Profile:
    policy = TimingPolicy(
        budget_s=spec.budget,
        warmup_max_s=spec.warmup,
        target_ci=spec.target_ci,
        min_samples=spec.min_samples,
    )

    libs = custom_ops.check(spec.custom_ops)

    def measure_all(configs: tuple[BenchConfig, ...]) -> None:
        for config in configs:
            if progress:
                progress("start", config, None)
            job = {
                "model": str(Path(model).resolve()),
                "config": config.to_dict(),
                "policy": asdict(policy),
                "layout": plan.layout.to_dict(),
                "inputs": str(Path(spec.inputs).resolve()) if spec.inputs else None,
                "seed": spec.seed,
                "memory_limit_mb": spec.memory_limit_mb,
                "calibration": str(Path(spec.calibration).resolve()) if spec.calibration else None,
                "labels": str(Path(spec.labels).resolve()) if spec.labels else None,
                "eval_samples": spec.eval_samples,
                "cache_dir": str(Path(spec.cache_dir).resolve()) if spec.cache_dir else None,
                "max_accuracy_drop": spec.max_accuracy_drop,
                "metric": spec.metric,
                "build_timeout": spec.build_timeout,
                "custom_ops": list(libs),
                "parent_pid": os.getpid(),  # the worker dies with this process
                "timeout_s": spec.config_timeout(),  # and enforces the timeout itself if orphaned
            }
            t0 = time.perf_counter()
            m = run_isolated(job, spec.config_timeout())
            if m.status is Status.FAILED and not m.wall_time_s:
                m = replace(m, wall_time_s=time.perf_counter() - t0)
            store.append(m)  # on disk before the next config starts
            written["n"] += 1
            if progress:
                progress("done", config, m)

    measure_all(plan.todo)
    configs = list(plan.configs)
    if AUTO in spec.precision:
        configs += _auto_fallback(plan, spec, store, measure_all)
    if spec.serving and (overwrite or not resume or not store.read_meta().get("serving")):
        from optiserve.profile.serving import measure_serving

        if progress:
            progress("serving", plan.configs[0], None)
        threads = min(spec.threads)
        store.update_meta(serving=measure_serving(Path(model), plan.layout, threads, custom_ops=libs))
    if spec.ceilings and (overwrite or not resume or not store.read_meta().get("ceilings")):
        from optiserve.profile.ceilings import for_machine

        if progress:
            progress("ceilings", plan.configs[0], None)
        machine = str((store.read_meta().get("hardware") or {}).get("id") or "")
        ceilings = for_machine(spec.threads, machine, spec.cache_dir)  # measured once per machine and runtime
        store.update_meta(ceilings=ceilings.to_dict())  # the fit's source ceilings (estimate/targets)
    prof = store.load()
    done = {m.config.key for m in prof.measurements}
    store.update_meta(updated=now_iso(), complete=all(c.done_in(done) for c in configs), planned_configs=len(configs))
    store.flush()  # a resume with nothing left to measure still records its settings
    return store.load()


def _auto_fallback(
    plan: SweepPlan,
    spec: SweepSpec,
    store: ParquetStore,
    measure_all: Callable[[tuple[BenchConfig, ...]], None],
) -> list[BenchConfig]:
    """When ``--precision auto``'s choice failed to build on every config, sweep the
    family's next choice instead, and say so in the profile's note."""
    family = plan.info.family
    current = AUTO_CHOICE[family][0]
    note = _auto_note(plan.info, spec) or ""
    added: list[BenchConfig] = []
    for fallback in AUTO_FALLBACK.get(family, ()):
        rows = [m for m in store.load().measurements if m.config.precision is current]
        if not rows or any(m.status is Status.OK for m in rows):
            break
        if not all(m.extra.get("failed_stage") == "build" for m in rows):
            break
        done = {m.config.key for m in store.load().measurements}
        fresh = spec.model_copy(update={"precision": [fallback.value]}).configs(family, plan.layout)
        todo = tuple(c for c in fresh if not c.done_in(done))
        note += f"; {current} failed to build ({rows[0].error}): fell back to {fallback}"
        store.update_meta(precision_auto=note)
        measure_all(todo)
        added.extend(fresh)
        current = fallback
    return added
