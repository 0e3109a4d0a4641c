"""Runtimes side by side: one row per precision, batch and threads, one column per runtime.

A profile swept on several runtimes (``--runtime onnxruntime-cpu,openvino``)
answers "which runtime is faster for this model here" only when the same
precision, batch and threads are read across. Each cell is the runtime's best
p50 over its knob settings and variant recipes (the one a planner would pick),
and its ratio to the baseline runtime's (``onnxruntime-cpu`` when swept): under
1 is faster. A cell is empty where that runtime has no OK row.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

from optiserve.types import Precision, Profile

BASELINE = "onnxruntime-cpu"


@dataclass(frozen=True)
class Cell:
    p50_ms: float
    ratio: float | None  # p50 over the baseline's at the same precision, batch and threads; None on the baseline


@dataclass(frozen=True)
class Row:
    precision: str
    batch: int
    threads: int
    cells: tuple[Cell | None, ...]  # in ``RuntimeComparison.runtimes`` order


@dataclass(frozen=True)
class RuntimeComparison:
    model: str
    baseline: str
    runtimes: tuple[str, ...]  # baseline first
    rows: tuple[Row, ...]


def compare_runtimes(profile: Profile) -> RuntimeComparison | None:
    """The side-by-side table, or None when fewer than two runtimes have an OK row."""
    best: dict[tuple[Precision, int, int], dict[str, float]] = {}
    for m in profile.ok:
        if m.stats is None:
            continue
        c = m.config
        cell = best.setdefault((c.precision, c.batch_size, c.threads), {})
        cell[c.runtime] = min(cell.get(c.runtime, float("inf")), m.stats.p50)
    found = sorted({r for cell in best.values() for r in cell})
    if len(found) < 2:
        return None
    baseline = BASELINE if BASELINE in found else found[0]
    runtimes = (baseline, *(r for r in found if r != baseline))
    order = list(Precision)
    rows = []
    for (prec, batch, threads), cell in sorted(best.items(), key=lambda kv: (order.index(kv[0][0]), *kv[0][1:])):
        base = cell.get(baseline)
        cells = tuple(
            None
            if r not in cell
            else Cell(cell[r], None if r == baseline or base is None or base <= 0 else cell[r] / base)
            for r in runtimes
        )
        rows.append(Row(prec.value, batch, threads, cells))
    return RuntimeComparison(str(profile.meta.get("model", {}).get("name", "?")), baseline, runtimes, tuple(rows))


def cell_text(cell: Cell | None) -> str:
    """``1.23 (0.61x)``: p50 ms and its ratio to the baseline; ``-`` where not measured."""
    if cell is None:
        return "-"
    p50 = f"{cell.p50_ms:.3g}" if cell.p50_ms < 100 else f"{cell.p50_ms:.0f}"
    return p50 if cell.ratio is None else f"{p50} ({cell.ratio:.2f}x)"


def rich_table(cmp: RuntimeComparison) -> Table:
    t = Table(  # a short title: rich wraps it to the table's width
        title=f"{cmp.model}: p50 ms by runtime ({cmp.baseline} = 1x)",
        caption="each runtime's best knobs and variant; under 1x: faster",
        title_justify="left",
        caption_justify="left",
    )
    for col in ("prec", "batch", "thr"):
        t.add_column(col, justify="left" if col == "prec" else "right")
    for r in cmp.runtimes:
        t.add_column(r, justify="right")
    for row in cmp.rows:
        t.add_row(row.precision, str(row.batch), str(row.threads), *(cell_text(c) for c in row.cells))
    return t
