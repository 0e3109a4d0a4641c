"""Real pretrained models (from PyPI wheels) through ``optiserve profile`` at every precision:
speed-up of each variant against fp32 (p50, batch 1, one thread, same run) and what the
variant did to the task (the accuracy gate's figure on real inputs: changed top-1 answers
for the OCR orientation classifier, changed CTC steps for OCR recognition, detection
agreement for the detector, the worst output group elsewhere).

Only reports: no speed-up target (a real model gains from int8 or it does not); the
accuracy gate's verdict at the tolerance is in each row. Its rows go into the run's
record (``benchmarks/results/``, table ``precisions``): the README's table comes from it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from optiserve.profile.store import load_profile
from optiserve.types import Status
from tests.real_models.conftest import REAL_MODELS, wheel_model
from tests.real_models.inputs import write_calib_and_eval

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
TOLERANCE = 0.05
SETTINGS = "batch 1, 1 thread, p50 over 2 s; accuracy on 32 real eval inputs; int8-static calibrated on 16"


@pytest.mark.parametrize("key", ["cls", "rec", "det", "vad", "dddet"])
def test_real_model_precisions(key: str, tmp_path: Path, record_ratio, record_rows) -> None:  # type: ignore[no-untyped-def]
    m = REAL_MODELS[key]
    model = tmp_path / f"{m.name}.onnx"
    shutil.copyfile(wheel_model(m), model)
    calib, ev = write_calib_and_eval(tmp_path, key)
    out = tmp_path / "prof"
    args = [sys.executable, "-m", "optiserve", "profile", str(model), "--precision", ",".join(PRECISIONS),
            "--batch", "1", "--threads", "1", "--budget", "2", "--warmup", "1", "--inputs", str(ev),
            "--calibration", str(calib), "--max-accuracy-drop", str(TOLERANCE), "-o", str(out)]  # fmt: skip
    for s in m.shape:
        args += ["--shape", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    rows = {str(r.config.precision): r for r in load_profile(out).measurements}
    base = rows["fp32"]
    assert base.status is Status.OK and base.stats is not None
    record_rows("settings", [{"settings": SETTINGS, "tolerance": TOLERANCE}])
    results: list[dict[str, object]] = []
    for prec in PRECISIONS:
        r = rows[prec]
        if r.status is not Status.OK or r.stats is None or r.accuracy is None:
            results.append({"model": m.name, "precision": prec, "failed": r.error})
            record_ratio(f"{m.name} {prec} speed-up vs fp32", float("nan"), "report", True, f"failed: {r.error}")
            continue
        a = r.accuracy
        speed = base.stats.p50 / r.stats.p50
        where = f" at {a.worst_output}{a.worst_group}" if a.worst_group else ""
        results.append(
            {
                "model": m.name,
                "precision": prec,
                "p50_ms": round(r.stats.p50, 3),
                "speedup": round(speed, 3),
                "drop": round(a.drop, 4),
                "metric": a.drop_metric,
                "where": where.strip(),
                "within_tolerance": r.within_tolerance,
                "method": r.variant.get("method"),
            }
        )
        verdict = {True: "within", False: "refused at", None: "no gate at"}[r.within_tolerance]
        record_ratio(
            f"{m.name} {prec} speed-up vs fp32",
            speed,
            "report",
            True,
            f"{a.drop_metric} {a.drop:.3g}{where}; {verdict} {TOLERANCE}",
        )
    record_rows("precisions", results)
