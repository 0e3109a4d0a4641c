"""The end-of-sweep table and header, shared by ``profile`` and ``show``."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from optiserve.types import Profile, Status


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if x < 100 else f"{x:.0f}"


def header(profile: Profile) -> Text:
    m, hw, v = profile.meta["model"], profile.meta["hardware"], profile.meta["versions"]
    lines = [
        f"model {m['name']} ({m['family']}, sha256 {m['sha256'][:12]})",
        f"measured on {hw['cpu_model']}, {hw['usable_cpus']} usable CPUs, {hw['memory_gb']} GiB"
        + (f", GPU {hw['gpus'][0]['name']}" if hw.get("gpus") else ", no GPU"),
        f"{profile.meta['created']}  onnxruntime {v.get('onnxruntime', '?')}  python {v.get('python', '?')}",
    ]
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
        ("mean", "right"),
        ("items/s", "right"),
        ("load s", "right"),
        ("mem MB", "right"),
        ("n", "right"),
        ("note", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    rows = sorted(
        profile.measurements,
        key=lambda m: (m.config.runtime, m.config.precision, m.config.options, m.config.threads, m.config.batch_size),
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
        t.add_row(
            *base,
            _fmt(s.p50),
            _fmt(s.p90),
            _fmt(s.p99),
            f"{_fmt(s.p99_ci_low)}-{_fmt(s.p99_ci_high)}",
            _fmt(s.p999),
            _fmt(s.mean),
            f"{m.throughput:.0f}",
            f"{m.load_time_s:.2f}",
            f"{m.peak_rss_mb:.0f}",
            str(s.n),
            note,
        )
    return t


def warnings_block(profile: Profile) -> Text:
    out = Text()
    for m in profile.measurements:
        for w in m.warnings:
            out.append(f"! {m.config.label()}: {w}\n", style="yellow")
    return out


def render(profile: Profile, console: Console | None = None) -> None:
    console = console or Console()
    console.print(Group(header(profile), table(profile), warnings_block(profile)))
