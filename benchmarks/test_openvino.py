"""ONNX Runtime vs OpenVINO on the CPU, side by side in one run: p50 per model, precision and batch.

The CNN, the encoder and one real pretrained model (PP-OCR's direction classifier
from its wheel), batch 1 and 8, 2 threads: fp32 on both; int8-static with each
runtime's own quantiser (ORT's ``quantize_static`` QDQ, NNCF's ``quantize``), built
through the variant cache exactly as ``optiserve profile`` builds them, on the same
synthetic calibration; bf16 on OpenVINO where the CPU has it (ONNX Runtime's CPU
provider does not run bf16). Rounds are interleaved so both runtimes see the same
machine noise; Only reports: the medians, nothing is asserted (a shared CPU's absolute
times mean nothing; the ratio is the figure).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiserve.errors import VariantError
from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.models.layout import infer_layout, parse_shape_overrides
from optiserve.models.zoo import build_zoo
from optiserve.runtimes.registry import get_runtime
from optiserve.types import Precision
from optiserve.variants.calibration import build_from_recipe, recipe_for
from tests.real_models.conftest import REAL_MODELS, wheel_model

pytest.importorskip("openvino", reason="openvino is not installed: pip install 'optiserve[openvino]'")
pytest.importorskip("nncf", reason="nncf is not installed: pip install 'optiserve[openvino]'")

RUNTIMES = ("onnxruntime-cpu", "openvino")
PRECISIONS = (Precision.FP32, Precision.INT8_STATIC, Precision.BF16)
BATCHES = (1, 8)
THREADS = 2
ROUNDS, CALLS = 5, 20
REPORT = "report"


def _p50_ms(run: Callable[[], Any]) -> float:
    run()  # warm
    samples: list[float] = []
    for _ in range(CALLS):
        t0 = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return float(np.median(samples))


def _models(tmp: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    zoo = build_zoo(tmp, ["cnn", "encoder"])
    out: dict[str, tuple[Path, tuple[str, ...]]] = {p.stem: (p, ()) for p in zoo}
    m = REAL_MODELS["cls"]
    out[m.name] = (wheel_model(m), m.shape)
    return out


def test_onnxruntime_vs_openvino_p50(
    tmp_path: Path, record_ratio: Callable[..., None], record_rows: Callable[..., None]
) -> None:
    rows: list[dict[str, Any]] = []
    for name, (model, shape) in _models(tmp_path).items():
        info = inspect_model(model)
        layout = infer_layout(info, parse_shape_overrides(shape))
        sessions: dict[tuple[str, Precision], Any] = {}
        for rname in RUNTIMES:
            rt = get_runtime(rname)
            for prec in PRECISIONS:
                if not rt.supports(prec):
                    continue
                path = model
                if prec in rt.variant_precisions:
                    recipe = recipe_for(prec, toolkit=rt.variant_toolkit)
                    try:
                        path = build_from_recipe(model, info, layout, recipe, cache_dir=tmp_path / "cache").path
                    except VariantError as exc:  # a failed row, as the profile records it
                        rows.append({"model": name, "runtime": rname, "precision": str(prec), "error": str(exc)})
                        print(f"\n{name} {rname} {prec}: {exc}")
                        continue
                sessions[(rname, prec)] = rt.load(path, prec, THREADS, {})
        for batch in BATCHES:
            feeds = make_inputs(info, batch, seed=1, layout=layout)
            times: dict[tuple[str, Precision], list[float]] = {k: [] for k in sessions}
            for _ in range(ROUNDS):  # interleaved: both runtimes share the machine's noise
                for key, s in sessions.items():
                    times[key].append(_p50_ms(lambda s=s, feeds=feeds: s.run(feeds)))
            for (rname, prec), ts in times.items():
                rows.append(
                    {"model": name, "runtime": rname, "precision": str(prec), "batch": batch, "p50_ms": min(ts)}
                )
            for prec in PRECISIONS:
                if ("onnxruntime-cpu", prec) in times and ("openvino", prec) in times:
                    ratio = min(times[("onnxruntime-cpu", prec)]) / min(times[("openvino", prec)])
                    record_ratio(f"openvino speed-up over onnxruntime, {name} {prec} b{batch}", ratio, REPORT, True)
            if ("openvino", Precision.BF16) in times:
                ratio = min(times[("onnxruntime-cpu", Precision.FP32)]) / min(times[("openvino", Precision.BF16)])
                record_ratio(f"openvino bf16 over onnxruntime fp32, {name} b{batch}", ratio, REPORT, True)
        for s in sessions.values():
            s.close()
    record_rows("openvino_vs_onnxruntime", rows)
    print(f"\n{'model':<10} {'precision':<12} {'batch':>5} {'onnxruntime ms':>15} {'openvino ms':>12}")
    for name in dict.fromkeys(r["model"] for r in rows):
        for prec in PRECISIONS:
            for b in BATCHES:
                got = {
                    r["runtime"]: r["p50_ms"]
                    for r in rows
                    if (r["model"], r["precision"], r["batch"]) == (name, str(prec), b)
                }
                if got:
                    ort, ov = got.get("onnxruntime-cpu"), got.get("openvino")
                    cell = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
                    print(f"{name:<10} {prec!s:<12} {b:>5} {cell(ort):>15} {cell(ov):>12}")
