"""fp32 vs int8-static vs int8-dynamic vs fp16 on the CNN and the encoder, batch 1
and 8: speed-up against fp32 (medians of interleaved rounds, all sessions on
the same cores) and each variant's drift from fp32 on the same 32 inputs."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import pytest

from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.models.zoo import build_zoo
from optiserve.runtimes.onnxruntime_cpu import OnnxRuntimeCPU
from optiserve.types import Precision
from optiserve.variants.accuracy import compare_outputs
from optiserve.variants.build import build_variant
from optiserve.variants.cache import VariantCache
from optiserve.variants.recipe import VariantRecipe

PRECISIONS = (Precision.FP32, Precision.INT8_STATIC, Precision.INT8_DYNAMIC, Precision.FP16)
ROUNDS = 5
BUDGET_S = 0.6  # per precision per round


def _median_ms(run: object, feeds: dict[str, np.ndarray]) -> float:
    times = []
    deadline = time.perf_counter() + BUDGET_S
    while time.perf_counter() < deadline or len(times) < 3:
        t0 = time.perf_counter_ns()
        run(feeds)  # type: ignore[operator]
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e6


@pytest.mark.parametrize("model", ["cnn", "encoder"])
def test_precision_speedups(model: str, tmp_path_factory: pytest.TempPathFactory, record_ratio) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp(model)
    (src,) = build_zoo(root, [model])
    info = inspect_model(src)
    cache = VariantCache(root / "cache")
    rt = OnnxRuntimeCPU()

    def calibration() -> Iterable[dict[str, np.ndarray]]:
        return (make_inputs(info, 8, seed=i) for i in range(4))

    paths = {Precision.FP32: src}
    for p in PRECISIONS[1:]:
        paths[p] = build_variant(src, info.sha256, VariantRecipe(p), cache, calibration).path
    sessions = {p: rt.load(path, p, 2, {}) for p, path in paths.items()}
    eval_feeds = make_inputs(info, 32, seed=1_000_003)
    reference = sessions[Precision.FP32].run(eval_feeds)
    for batch in (1, 8):
        feeds = make_inputs(info, batch, seed=7)
        for s in sessions.values():
            for _ in range(3):
                s.run(feeds)
        med: dict[Precision, list[float]] = {p: [] for p in PRECISIONS}
        for r in range(ROUNDS):
            for p in np.roll(np.array(PRECISIONS, dtype=object), r):
                med[p].append(_median_ms(sessions[p].run, feeds))
        base = float(np.median(med[Precision.FP32]))
        for p in PRECISIONS[1:]:
            ms = float(np.median(med[p]))
            drift = compare_outputs(reference, sessions[p].run(eval_feeds))
            top1 = f"top1 {drift.top1_agreement:.0%}, " if drift.top1_agreement is not None else ""
            record_ratio(
                f"{model} b={batch} {p} speed-up vs fp32",
                base / ms,
                "report",
                True,
                f"fp32 {base:.2f} ms, {p} {ms:.2f} ms; drift: {top1}relL2 {drift.rel_l2_error:.3g}, "
                f"cos {drift.cosine:.4f}",
            )
