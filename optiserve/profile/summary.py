"""The end-of-sweep table and header, shared by ``profile`` and ``show``."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from optiserve.profile.contention import contended
from optiserve.types import InputLayout, Measurement, Precision, Profile, Status


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if x < 100 else f"{x:.0f}"


def layout_line(layout: dict[str, object]) -> str:
    """``inputs: x[N,3,48,192] state[2,N,128] sr (scalar, not batched)``: where the batch goes."""
    parts = []
    for t in InputLayout.from_dict(layout).inputs:
        if not t.shape:
            parts.append(f"{t.name} (scalar, not batched)")
            continue
        dims = ["N" if i == t.batch_axis else str(d) for i, d in enumerate(t.shape)]
        parts.append(f"{t.name}[{','.join(dims)}]" + ("" if t.batch_axis is not None else " (not batched)"))
    return "inputs: " + " ".join(parts)


def header(profile: Profile) -> Text:
    m, hw, v = profile.meta["model"], profile.meta["hardware"], profile.meta["versions"]
    lines = [
        f"model {m['name']} ({m['family']}, sha256 {m['sha256'][:12]})",
        f"measured on {hw['cpu_model']}, {hw['usable_cpus']} usable CPUs, {hw['memory_gb']} GiB"
        + (f", GPU {hw['gpus'][0]['name']}" if hw.get("gpus") else ", no GPU"),
        f"{profile.meta['created']}  onnxruntime {v.get('onnxruntime', '?')}  python {v.get('python', '?')}",
    ]
    if profile.meta.get("precision_auto"):
        lines.append(str(profile.meta["precision_auto"]))
    if profile.meta.get("layout"):
        lines.append(layout_line(profile.meta["layout"]))
    if profile.meta.get("batch_note"):
        lines.append(str(profile.meta["batch_note"]))
    from optiserve.profile.serving import describe

    serving = describe(profile.meta)
    if serving:
        lines.append(serving)
    if any(m.accuracy and m.accuracy.synthetic for m in profile.measurements):
        lines.append("accuracy figures are SYNTHETIC (no --inputs / --calibration data): drift, not task accuracy")
    built = [m for m in profile.measurements if m.variant]
    if built:
        hits = sum(1 for m in built if m.variant.get("cache_hit"))
        lines.append(f"variants: {hits} of {len(built)} from the cache, {len(built) - hits} built")
    done, planned = len(profile.measurements), profile.meta.get("planned_configs", 0)
    if not profile.meta.get("complete"):
        lines.append(f"PARTIAL: {done} of {planned} configs measured (run again with --resume)")
    return Text("\n".join(lines))


def table(profile: Profile) -> Table:
    t = Table(title="latency per call (ms), single stream", title_justify="left")
    for col, just in (
        ("runtime", "left"),
        ("prec", "left"),
        ("batch", "right"),
        ("thr", "right"),
        ("p50", "right"),
        ("p90", "right"),
        ("p99", "right"),
        ("p99 95% CI", "right"),
        ("p99.9", "right"),
        ("drift", "right"),
        ("items/s", "right"),
        ("load s", "right"),
        ("mem MB", "right"),
        ("n", "right"),
        ("note", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    rows = sorted(
        profile.measurements,
        key=lambda m: (
            m.config.runtime,
            list(Precision).index(m.config.precision),
            m.config.options,
            m.config.variant,
            m.config.threads,
            m.config.batch_size,
        ),
    )
    for m in rows:
        c = m.config
        base = [
            c.runtime + "".join(f" {k}={v}" for k, v in c.options),
            c.precision.value,
            str(c.batch_size),
            str(c.threads),
        ]
        if m.status is Status.FAILED or m.stats is None:
            t.add_row(*base, *["-"] * 10, Text("FAILED: " + m.error, style="red"))
            continue
        s = m.stats
        note = Text(f"{len(m.warnings)} warning(s)", style="yellow") if m.warnings else Text("stable", style="green")
        if m.variant:
            note.append(" cached" if m.variant.get("cache_hit") else f" built {m.variant.get('build_s', 0):.1f}s")
        t.add_row(
            *base,
            _fmt(s.p50),
            _fmt(s.p90),
            _fmt(s.p99),
            f"{_fmt(s.p99_ci_low)}-{_fmt(s.p99_ci_high)}",
            _fmt(s.p999),
            _drift(m),
            f"{m.throughput:.0f}",
            f"{m.load_time_s:.2f}",
            f"{m.peak_rss_mb:.0f}",
            str(s.n),
            note,
        )
    return t


def _drift(m: Measurement) -> Text:
    """The accuracy drop in the units of its metric; red when outside the tolerance."""
    a = m.accuracy
    if a is None:
        return Text("-")
    units = {"accuracy": "acc", "top1-disagreement": "top1", "relative-l2": "relL2", "step-disagreement": "steps"}
    unit = units.get(a.drop_metric, a.drop_metric)
    value = f"{a.drop:.1%} {unit}" if a.drop_metric != "relative-l2" else ""
    value += f"{' ' if value else ''}relL2 {a.rel_l2_error:.1e}"
    if a.worst_group and m.within_tolerance is False:
        value += f" at {a.worst_output}{a.worst_group}"
    style = "red" if m.within_tolerance is False else ""
    return Text(value + (" X" if m.within_tolerance is False else ""), style=style)


_TAIL = "p99.9 from"  # true on most rows of short runs: summarised once instead


def warnings_block(profile: Profile) -> Text:
    out = Text()
    short = 0
    for m in profile.measurements:
        for w in m.warnings:
            if w.startswith(_TAIL):
                short += 1
                continue
            out.append(f"! {m.config.label()}: {w}\n", style="yellow")
    if short:
        out.append(f"! {short} row(s) have under 1000 samples: their p99.9 is an extrapolation\n", style="yellow")
    for c in contended(profile):
        out.append(f"! {c.describe()}\n", style="yellow")
    return out


def stage_table(profile: Profile) -> Table | None:
    """Where the time of a call goes, for rows that timed a pre-processing stage."""
    rows = [m for m in profile.ok if m.stages.get("preprocess")]
    if not rows:
        return None
    t = Table(title="stage breakdown, p50 ms per call (CPU path: no device transfers)", title_justify="left")
    for col in ("config", "pre-process", "inference", "pre-process share", "pre-processor"):
        t.add_column(col, justify="left" if col in ("config", "pre-processor") else "right")
    for m in rows:
        pre, inf = m.stages["preprocess"]["p50_ms"], m.stages["inference"]["p50_ms"]
        t.add_row(m.config.label(), _fmt(pre), _fmt(inf), f"{pre / (pre + inf):.0%}", str(m.extra.get("preprocessor")))
    return t


def render(profile: Profile, console: Console | None = None) -> None:
    console = console or Console()
    parts: list[Text | Table] = [header(profile), table(profile)]
    stages = stage_table(profile)
    if stages is not None:
        parts.append(stages)
    from optiserve.profile.runtime_compare import compare_runtimes, rich_table

    side_by_side = compare_runtimes(profile)  # several runtimes swept: read across them
    if side_by_side is not None:
        parts.append(rich_table(side_by_side))
    console.print(Group(*parts, warnings_block(profile)))
