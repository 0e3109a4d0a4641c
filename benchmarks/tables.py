"""README tables generated from benchmark records, so no benchmark figure is typed by hand.

A table sits between ``<!-- bench:ID -->`` and ``<!-- /bench -->``; ID names a renderer
below, or is ``ratios:MODULE`` for any benchmark's plain ratio table. Each table comes
from the newest record that measured its benchmark and says under it which run that was
(machine, date, commit). ``scripts/bench_tables.py`` rewrites the README, ``--check``
says which tables are out of date.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.cross_machine import machine_kind
from benchmarks.record import Benchmark, RunRecord, newest
from optiserve.serve.loadtest import CLIENT_BUSY_WARN

MARKER = re.compile(r"<!-- bench:(?P<id>[\w:.-]+) -->\n(?P<body>.*?)<!-- /bench -->", re.DOTALL)

Render = Callable[[Benchmark], list[str]]


@dataclass(frozen=True)
class Table:
    module: str
    render: Render


def _num(v: Any, fmt: str = ".2f", suffix: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:{fmt}}{suffix}"


def _ms(v: Any) -> str:
    """Milliseconds with the digits a reader can use, microseconds below 0.1 ms."""
    if v is None:
        return "—"
    return f"{v * 1e3:.1f} µs" if v < 0.1 else f"{v:.2f} ms"


def _verdict(r: Any) -> str:
    return "reports only" if r.passed is None else ("met" if r.passed else "**missed**")


def ratios_table(b: Benchmark) -> list[str]:
    """Every ratio of a benchmark, its target and whether it was met (or only reports)."""
    lines = ["| measured | value | target | result | detail |", "|---|---:|---|---|---|"]
    for r in b.ratios:
        detail = r.detail.replace("|", "/")
        lines.append(f"| {r.name} | {_num(r.value, '.4g')} | {r.target} | {_verdict(r)} | {detail} |")
    return lines


PRECISION_COLUMNS = ("int8-static", "int8-dynamic", "fp16", "bf16")


def precision_speedup(b: Benchmark) -> list[str]:
    rows = b.tables.get("precisions", ())
    ok = [r for r in rows if "failed" not in r]
    failed = {(r["model"], r["precision"]): r["failed"] for r in rows if "failed" in r}
    cases = sorted({(r["model"], r["batch"], r["threads"]) for r in ok}, key=lambda c: (c[0], c[1]))
    head = "| model, batch, threads | fp32 p50 | " + " | ".join(PRECISION_COLUMNS) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(PRECISION_COLUMNS)]
    for model, batch, threads in cases:
        here = {r["precision"]: r for r in ok if (r["model"], r["batch"], r["threads"]) == (model, batch, threads)}
        fp32 = next(iter(here.values()))["fp32_ms"] if here else None
        best = max(here.values(), key=lambda r: r["speedup"])["precision"] if here else ""
        cells = []
        for p in PRECISION_COLUMNS:
            r = here.get(p)
            if r is None:
                cells.append("n/a" if (model, p) in failed else "—")
                continue
            cell = f"{r['speedup']:.2f}x"
            cell = f"**{cell}**" if p == best and r["speedup"] > 1 else cell
            cells.append(cell + (" (auto)" if r.get("auto_choice") else ""))
        lines.append(f"| {model}, {batch}, {threads} | {_ms(fp32)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Speed-up against fp32 (bold: fastest, when faster than fp32; (auto): what `--precision auto` "
        "sweeps for that family). n/a: " + "; ".join(sorted({f"{p}: {why}" for (_, p), why in failed.items()}))
        if failed
        else "Speed-up against fp32 (bold: fastest, when faster than fp32; (auto): `--precision auto`'s choice)."
    )
    return lines


def precision_drift(b: Benchmark) -> list[str]:
    """Drift at the largest batch (items are the same at every batch) beside the committed profile's."""
    rows = [r for r in b.tables.get("precisions", ()) if "failed" not in r]
    top: dict[tuple[str, str], Any] = {}
    for r in rows:
        key = (r["model"], r["precision"])
        if key not in top or r["batch"] > top[key]["batch"]:
            top[key] = r
    lines = [
        "| model | precision | rel. L2 / top-1 here | committed profile | same cache key? |",
        "|---|---|---|---|---|",
    ]
    for (model, precision), r in sorted(top.items()):
        here = f"{_num(r['rel_l2'], '.3g')} / {_num(r['top1'], '.0%')}"
        if r.get("profile_variant_key") is None:
            then, same = "—", "no reference profile"
        else:
            then = f"{_num(r['profile_rel_l2'], '.3g')} / {_num(r['profile_top1'], '.0%')}"
            same = "yes" if r["profile_variant_key"] == r["variant_key"] else "no: older builder or libraries"
        lines.append(f"| {model} | {precision} | {here} | {then} | {same} |")
    return lines


REAL_MODEL_LABELS = {
    "ppocr-cls": "PP-OCR orientation cls (11, `x[N,3,48,192]`)",
    "ppocr-rec": "PP-OCRv4 rec (12, `x[N,3,48,320]`)",
    "ppocr-det": "PP-OCRv4 det (12, `x[N,3,96,96]`)",
    "silero-vad": "silero VAD (15, `state[2,N,128]`, `sr` 0-d)",
    "ddddocr-det": "ddddocr detector (11, fixed `[1,3,416,416]`)",
}
METRIC_LABELS = {
    "top1-disagreement": "changed top-1",
    "step-disagreement": "changed CTC steps",
    "relative-l2": "rel. L2",
    "detection-disagreement": "1 - box F1",
    "detection-iou-loss": "IoU loss",
}


def real_models(b: Benchmark) -> list[str]:
    rows = b.tables.get("precisions", ())
    settings = next(iter(b.tables.get("settings", ())), {})
    cols = ("fp16", "int8-dynamic", "int8-static")
    lines = ["| model (opset, inputs) | " + " | ".join(cols) + " | gate figure |", "|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        here = {r["precision"]: r for r in rows if r["model"] == model}
        cells: list[str] = []
        metrics: list[str] = []
        for p in cols:
            r = here.get(p)
            if r is None or "failed" in r:
                cells.append(f"failed: {r['failed']}" if r else "—")
                continue
            drop = f"{r['drop']:.2g}" if r["drop"] else "0"
            cells.append(f"{r['speedup']:.2f}x, " + (drop if r.get("within_tolerance") is not False else f"**{drop}**"))
            metrics.append(str(METRIC_LABELS.get(r["metric"], r["metric"])))
        gate = " / ".join(dict.fromkeys(metrics))
        lines.append(f"| {REAL_MODEL_LABELS.get(model, model)} | " + " | ".join(cells) + f" | {gate} |")
    lines.append("")
    tol = settings.get("tolerance")
    lines.append(
        f"Speed-up against fp32, then the gate's figure (bold: refused at {tol}). {settings.get('settings', '')}."
    )
    return lines


def preprocess_speed(b: Benchmark) -> list[str]:
    rows = {r["impl"]: r for r in b.tables.get("implementations", ())}
    names = {
        "fused": "Numba CPU, fused (`numba-cpu`)",
        "opencv": "OpenCV pipeline (`cv2.resize` + NumPy normalise + transpose)",
        "numpy": "NumPy reference (`numpy`, float64)",
    }
    targets = {r.name: r for r in b.ratios}
    lines = ["| implementation | time per batch | effective bandwidth | fused is ... |", "|---|---:|---:|---|"]
    for key, label in names.items():
        r = rows.get(key)
        if r is None:
            continue
        if key == "fused":
            versus = "—"
        else:
            t = next((x for x in targets.values() if f"vs {'OpenCV' if key == 'opencv' else 'NumPy'}" in x.name), None)
            versus = f"{r['fused_speedup']:.2f}x faster" + (f" (target {t.target}: {_verdict(t)})" if t else "")
        lines.append(f"| {label} | {r['ms']:.1f} ms | {r['gb_s']:.2f} GB/s | {versus} |")
    copy = rows.get("copy")
    fused = rows.get("fused")
    if copy and fused:
        share = f"fused reaches {fused['gb_s'] / copy['gb_s']:.0%} of it"
        lines.append(f"| machine copy bandwidth ({copy['how']}) | | {copy['gb_s']:.1f} GB/s | {share} |")
        lines.append("")
        lines.append(f"Batch 32 of 640x480 -> 224x224; {copy['mb_per_batch']:.1f} MB read + written per batch.")
    return lines


def load_fidelity(b: Benchmark) -> list[str]:
    lines = [
        "| model, load | client | p50 predicted / measured (ms) | p99 predicted / measured (ms) "
        "| measured p99 95% CI | p99 error | target ±15% | hand-fitted p99 error |",
        "|---|---|---|---|---|---:|---|---:|",
    ]
    for r in b.tables.get("rates", ()):
        lo, hi = r["p99_ci_ms"]
        late = f"; {r['late_fraction']:.1%} sends late" if r["late_fraction"] > 0.01 else ""
        busy = r.get("client_busy")  # records before the client measured its own CPU have none
        if busy is not None:
            late += f"; client {busy:.0%} busy" + (" (its queueing in the tail)" if busy > CLIENT_BUSY_WARN else "")
        err = f"{r['p99_error']:+.0%}"
        ok = abs(r["p99_error"]) <= 0.15
        judged = r.get("judged", True)  # records before a second client judge every row
        verdict = ("met" if ok else "**missed**") if judged else "not judged (client-limited)"
        err = err if ok or not judged else f"**{err}**"
        lines.append(
            f"| {r['model']}, {r['load']:.0%} ({r['rate']:.0f}/s) | {r.get('client', 'Locust')} "
            f"| {r['p50_predicted_ms']:.1f} / "
            f"{r['p50_measured_ms']:.1f} | {r['p99_predicted_ms']:.1f} / {r['p99_measured_ms']:.1f} | "
            f"{_num(lo, '.1f')}-{_upper(hi)} (n={r['requests']}){late} | {err} | {verdict} | {_fitted(r)} |"
        )
    return lines


def _upper(hi: Any) -> str:
    """A confidence interval's upper end: too few requests above the p99 leave it unbounded (infinite,
    which a JSON record keeps as null)."""
    return "unbounded" if hi is None or (isinstance(hi, int | float) and not math.isfinite(hi)) else _num(hi, ".1f")


def _span(values: Sequence[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.0%}" if round(lo * 100) == round(hi * 100) else f"{lo:.0%}-{hi:.0%}"


def cross_machine(b: Benchmark) -> list[str]:
    """Per machine kind pair, the planner's transfer with effective ceilings on quiet calls (what
    the benchmark asserts): the range over recordings of the mean |error|, of the "no transfer"
    baseline, and the band's coverage summed, fp32 and int8 side by side; bold where any
    recording's pair missed. Per-recording pairs, the datasheet path and all-calls figures
    stay in the record."""
    pairs = [r for r in b.tables.get("pairs", ()) if r["ceilings"] == "effective" and r["statistic"] == "quiet"]
    precisions = sorted({r["precision"] for r in pairs})
    head = " | ".join(f"{p}: error (no transfer), band" for p in precisions)
    lines = [f"| source -> target | {head} |", "|---|" + "---|" * len(precisions)]
    by_kind: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for r in pairs:
        kinds = (machine_kind(r["source"]), machine_kind(r["target"]))
        by_kind.setdefault(kinds, {}).setdefault(r["precision"], []).append(r)
    for (src, dst), cells in sorted(by_kind.items(), key=lambda kv: (kv[0][0] == kv[0][1], kv[0])):
        repeat = src == dst
        out = []
        for prec in precisions:
            rows = cells.get(prec)
            if not rows:
                out.append("—")
                continue
            covered, n = sum(r["covered"] for r in rows), sum(r["rows"] for r in rows)
            errs, base = [r["mean_abs_error"] for r in rows], [r["no_transfer"] for r in rows]
            text = f"{_span(errs)} ({_span(base)}), {covered}/{n}"
            out.append(text if repeat or all(r["met"] for r in rows) else f"**{text}**")  # the benchmark's verdict
        label = f"{src} -> {dst}" + (" (repeat: noise floor)" if repeat else "")
        lines.append(f"| {label} | " + " | ".join(out) + " |")
    return lines


def _fitted(r: Mapping[str, Any]) -> str:
    """The hand-fitted path's p99 error (older records asserted on it and have no second figure)."""
    e = r.get("p99_fitted_error")
    return "—" if e is None else f"{e:+.0%}"


TABLES: dict[str, Table] = {
    "precision-speedup": Table("test_precision_speedup", precision_speedup),
    "precision-drift": Table("test_precision_speedup", precision_drift),
    "real-models": Table("test_real_models", real_models),
    "preprocess-speed": Table("test_preprocess_speed", preprocess_speed),
    "load-fidelity": Table("test_load_fidelity", load_fidelity),
    "cross-machine": Table("test_cross_machine", cross_machine),
}


def table_for(table_id: str) -> Table:
    if table_id.startswith("ratios:"):
        return Table(table_id.split(":", 1)[1], ratios_table)
    if table_id not in TABLES:
        raise KeyError(f"unknown bench table {table_id!r}: one of {sorted(TABLES)} or ratios:MODULE")
    return TABLES[table_id]


def provenance(run: RunRecord, b: Benchmark) -> str:
    """Under every table: which run, where, when, at which commit, and whether it asserts."""
    m = run.machine
    commit = (
        f"commit `{run.git_commit[:10]}`{' + local changes' if run.git_dirty else ''}"
        if run.git_commit
        else "commit unknown"
    )
    fp = f", machine `{m.fingerprint}`" if m.fingerprint else ""
    k, n = sum(r.asserts for r in b.ratios), len(b.ratios)
    kind = "only reports" if k == 0 else ("asserts every target" if k == n else f"asserts {k} of {n}, reports the rest")
    note = f" {run.note[0].upper()}{run.note[1:]}." if run.note else ""
    note = f" Partial run ({len(b.outcomes)} of its tests).{note}" if b.partial else note
    return (
        f"<sub>Measured by `benchmarks/{b.module}.py` ({kind}) on {m.cpu_model}, "
        f"{m.usable_cpus} usable CPUs{fp}, {run.date}, {commit}.{note}</sub>"
    )


def render(table_id: str, records: Sequence[RunRecord]) -> str:
    table = table_for(table_id)
    found = newest(records, table.module)
    if found is None:
        return f"_No record of `benchmarks/{table.module}.py` yet: run `make bench`, then `scripts/bench_tables.py`._\n"
    run, bench = found
    return "\n".join([*table.render(bench), "", provenance(run, bench)]) + "\n"


def update(text: str, records: Sequence[RunRecord]) -> str:
    """``text`` with every marked table regenerated from ``records``."""
    return MARKER.sub(lambda m: f"<!-- bench:{m['id']} -->\n{render(m['id'], records)}<!-- /bench -->", text)


def stale(text: str, records: Sequence[RunRecord]) -> list[str]:
    """IDs of the marked tables whose text differs from what the records give."""
    return [m["id"] for m in MARKER.finditer(text) if m["body"] != render(m["id"], records)]
