"""Precision speed-ups and drifts behind ``--precision auto``, every precision of a model side by side.

fp32 vs int8-static, int8-dynamic, fp16 and bf16 (a failed row where ONNX Runtime's
CPU provider has no kernels) on the CNN and the encoder (2 threads, batch 1 and 8)
and the MLP (1 thread, batch 1, 8 and 64): speed-up against fp32 from medians of
interleaved rounds, all sessions on the same cores. Variants are built and judged
as ``optiserve profile`` does (same recipe and cache key, the same 32 evaluation
inputs, the same comparison), so the drift here is the profile's drift; the committed
reference profile's figure (``profiles/reference/<model>-precisions``) is recorded
beside it, with both variant keys, so a stale profile shows.

Asserts, per model family, the claim ``AUTO_CHOICE`` (optiserve/profile/sweep.py)
makes: auto's choice beats fp32 at the largest batch measured here. Every other
speed-up and every drift only reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.models.layout import infer_layout
from optiserve.models.zoo import build_zoo
from optiserve.profile.evaluation import as_dtypes, eval_batches, evaluate
from optiserve.profile.store import load_profile
from optiserve.profile.sweep import AUTO_CHOICE
from optiserve.runtimes.base import Session
from optiserve.runtimes.onnxruntime_cpu import OnnxRuntimeCPU
from optiserve.types import BenchConfig, Precision
from optiserve.variants.calibration import build_from_recipe, recipe_for

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = (Precision.FP32, Precision.INT8_STATIC, Precision.INT8_DYNAMIC, Precision.FP16, Precision.BF16)
ROUNDS = 5
BUDGET_S = 0.6  # per precision per round
EVAL_SAMPLES = 32  # optiserve profile's default --eval-samples
CASES = [("cnn", 2, (1, 8)), ("encoder", 2, (1, 8)), ("mlp", 1, (1, 8, 64))]


def _median_ms(run: Callable[[dict[str, np.ndarray]], object], feeds: dict[str, np.ndarray]) -> float:
    times: list[int] = []
    deadline = time.perf_counter() + BUDGET_S
    while time.perf_counter() < deadline or len(times) < 3:
        t0 = time.perf_counter_ns()
        run(feeds)
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e6


def _committed(model: str) -> dict[tuple[str, int], Any]:
    """The committed reference profile's rows by (precision, batch), if there is one."""
    path = REPO / "profiles" / "reference" / f"{model}-precisions"
    if not (path / "profile.json").exists():
        return {}
    return {(str(m.config.precision), m.config.batch_size): m for m in load_profile(path).ok}


@pytest.mark.parametrize(("model", "threads", "batches"), CASES, ids=[c[0] for c in CASES])
def test_precision_speedups(  # type: ignore[no-untyped-def]
    model: str,
    threads: int,
    batches: tuple[int, ...],
    tmp_path_factory: pytest.TempPathFactory,
    record_ratio,
    record_rows,
) -> None:
    root = tmp_path_factory.mktemp(model)
    (src,) = build_zoo(root, [model])
    info = inspect_model(src)
    layout = infer_layout(info)
    rt = OnnxRuntimeCPU()
    rows: list[dict[str, Any]] = []
    paths: dict[Precision, Path] = {Precision.FP32: src}
    keys: dict[Precision, str] = {}
    for p in PRECISIONS[1:]:
        if not rt.supports(p):
            rows.append({"model": model, "threads": threads, "precision": str(p), "failed": f"{rt.name}: no {p}"})
            continue
        try:
            built = build_from_recipe(src, info, layout, recipe_for(p), None, root / "cache")
        except Exception as exc:  # a variant that does not build is a row with its reason, as in a profile
            rows.append({"model": model, "threads": threads, "precision": str(p), "failed": str(exc)[:300]})
            continue
        paths[p], keys[p] = built.path, str(built.as_dict().get("key", ""))
    measured = tuple(paths)
    choice = AUTO_CHOICE[info.family][0]
    assert choice in measured, f"auto's choice for a {info.family} graph, {choice}, did not build: {rows}"
    sessions: dict[Precision, Session] = {p: rt.load(path, p, threads, {}, layout=layout) for p, path in paths.items()}
    dtypes = {p: {i.name: i.dtype for i in inspect_model(path).inputs} for p, path in paths.items()}
    committed = _committed(model)
    for batch in batches:
        feeds = {p: as_dtypes(make_inputs(info, batch, seed=0, layout=layout), dtypes[p]) for p in measured}
        for p in measured:
            for _ in range(3):
                sessions[p].run(feeds[p])
        med: dict[Precision, list[float]] = {p: [] for p in measured}
        for r in range(ROUNDS):  # interleaved, rotating who goes first, so drift hits every precision
            for p in np.roll(np.array(measured, dtype=object), r):
                med[p].append(_median_ms(sessions[p].run, feeds[p]))
        base = float(np.median(med[Precision.FP32]))
        evals, _ = eval_batches(info, batch, EVAL_SAMPLES, layout, None, None, 0)
        for p in measured[1:]:
            ms = float(np.median(med[p]))
            config = BenchConfig(rt.name, p, batch, threads)
            acc = evaluate(rt, src, sessions[p], config, evals, None, True, dtypes[p], output_axes=layout.output_axes)
            ref = committed.get((str(p), batch))
            ref_acc = ref.accuracy if ref is not None else None
            row = {
                "model": model,
                "family": info.family,
                "batch": batch,
                "threads": threads,
                "precision": str(p),
                "fp32_ms": round(base, 4),
                "ms": round(ms, 4),
                "speedup": round(base / ms, 4),
                "rel_l2": acc.rel_l2_error,
                "top1": acc.top1_agreement,
                "drop": acc.drop,
                "drop_metric": acc.drop_metric,
                "variant_key": keys[p],
                "auto_choice": p is choice,
                "profile_rel_l2": ref_acc.rel_l2_error if ref_acc is not None else None,
                "profile_top1": ref_acc.top1_agreement if ref_acc is not None else None,
                "profile_variant_key": ref.variant.get("key") if ref is not None else None,
            }
            rows.append(row)
            top1 = f"top1 {acc.top1_agreement:.0%}, " if acc.top1_agreement is not None else ""
            then = f"; committed profile relL2 {ref_acc.rel_l2_error:.3g}" if ref_acc is not None else ""
            asserted = p is choice and batch == batches[-1]
            record_ratio(
                f"{model} b={batch} t={threads} {p} speed-up vs fp32" + (" (auto's choice)" if asserted else ""),
                base / ms,
                "> 1" if asserted else "report",
                base / ms > 1,
                f"fp32 {base:.3f} ms, {p} {ms:.3f} ms; drift: {top1}relL2 {acc.rel_l2_error:.3g}{then}",
            )
    for s in sessions.values():
        s.close()
    record_rows("precisions", rows)
