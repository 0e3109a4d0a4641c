"""The HTML report (self-contained: figures inlined as PNG data URIs) and its Markdown summary.

The header says what was measured, on which machine, when and with which
versions; warnings come before the figures, not after them. Every figure is
also written as a PNG beside ``index.html`` for slides and pull requests.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from optiserve._files import read_json
from optiserve._version import __version__
from optiserve.errors import UsageError
from optiserve.profile.runtime_compare import compare_runtimes
from optiserve.report import figures, runtimes
from optiserve.types import LatencySource, Profile, Status

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1b1f24;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right}
th{background:#f6f8fa} td.l,th.l{text-align:left} .warn{background:#fff8c5;border:1px solid #d4a72c;padding:.6em 1em}
.pred{color:#8250df;font-weight:600} .meas{color:#1a7f37;font-weight:600} figure{margin:1.2em 0}
figcaption{font-size:.85em;color:#57606a} img{max-width:100%} .muted{color:#57606a;font-size:.85em}
"""


@dataclass(frozen=True)
class Figure_:
    name: str
    title: str
    png: bytes | None
    caption: str
    missing: str  # what input would draw it, when png is None


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    figures.close(fig)
    return buf.getvalue()


def load_loadtest(path: Path) -> dict[str, Any]:
    data = read_json(path, "load-test result")
    if not isinstance(data, dict) or "p99_ms" not in data:
        raise UsageError(f"{path} is not an `optiserve loadtest --json` result (no p99_ms)")
    data.pop("latency_ms", None)
    data.pop("index", None)
    data["file"] = str(path)
    return data


def build_figures(
    profiles: Mapping[str, Profile], plan: Mapping[str, Any] | None, loadtests: Sequence[Mapping[str, Any]]
) -> list[Figure_]:
    p99 = None
    if plan and plan.get("models"):
        p99 = float(plan["models"][0]["sla"]["p99_ms"])
    made = [
        ("latency_vs_batch", "Latency vs batch size", figures.latency_vs_batch(profiles),
         "Measured. Line: p50 per call; dashed: p99; band between them.", "a profile with OK rows"),
        ("throughput_vs_p99", "Throughput vs p99", figures.throughput_vs_p99(profiles, p99),
         "Measured, one request stream per config; the red line is the plan's p99 target.", "a profile"),
        ("speedup_vs_drift", "Speed-up vs accuracy drift", figures.speedup_vs_drift(profiles),
         "Measured: throughput over the fp32 row of the same batch and threads, against the accuracy drop "
         "(accuracy, else top-1 disagreement, else relative L2).",
         "a profile with several precisions and accuracy (optiserve profile --precision ...)"),
        ("pareto", "Cost vs p99 (plan)", figures.pareto(plan) if plan else None,
         "Predicted: cost from catalog prices, p99 at the target rate from the queueing simulator; the star is "
         "the chosen placement; hollow points are predicted latency, filled are measured.", "--plan PLAN.json"),
        ("load_fidelity", "Latency under load: predicted vs measured", figures.load_fidelity(loadtests),
         "Measured by an open-loop Locust load test (latency from the scheduled send); dashed: the simulator's "
         "prediction for the same schedule, with the p99 error.",
         "--loadtest RESULT.json from `optiserve loadtest --json ... --predict-from PROFILE`"),
        ("stage_breakdown", "Per-stage breakdown", figures.stage_breakdown(profiles),
         "Measured p50 per stage (pre-processing, host-to-device, inference, device-to-host).",
         "a profile made with --preprocess, or on a GPU"),
    ]  # fmt: skip
    return [Figure_(n, t, _png(f) if f is not None else None, c, miss) for n, t, f, c, miss in made]


def _profile_header(name: str, prof: Profile) -> str:
    meta = prof.meta
    hw = meta.get("hardware", {})
    model = meta.get("model", {})
    versions = meta.get("versions", {})
    vers = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if v) or "unknown"
    gpus = ", ".join(g.get("name", "?") for g in hw.get("gpus", [])) or "none"
    return (
        f"<tr><td class=l>{html.escape(name)}</td><td class=l>{html.escape(str(model.get('name', '?')))} "
        f"<span class=muted>sha256 {html.escape(str(model.get('sha256', ''))[:12])}</span></td>"
        f"<td class=l>{html.escape(str(hw.get('cpu_model', '?')))}, {hw.get('usable_cpus', '?')} CPUs, "
        f"{hw.get('memory_gb', '?')} GiB; GPUs: {html.escape(gpus)}</td>"
        f"<td class=l>{html.escape(str(meta.get('created', '?')))[:19]}</td>"
        f"<td class=l class=muted>{html.escape(vers)}</td></tr>"
    )


def _warnings(
    profiles: Mapping[str, Profile], plan: Mapping[str, Any] | None, loadtests: Sequence[Mapping[str, Any]]
) -> list[str]:
    out: list[str] = []
    for name, prof in profiles.items():
        failed = [m for m in prof.measurements if m.status is not Status.OK]
        for m in failed:
            out.append(f"{name}: {m.config.precision.value} b{m.config.batch_size} {m.config.threads}t "
                       f"{m.status.value}: {m.error.splitlines()[0] if m.error else 'no reason recorded'}")  # fmt: skip
        counts: Counter[str] = Counter()
        for m in prof.ok:
            for w in m.warnings:
                counts[re.sub(r"(?<![A-Za-z.\d])\d+(\.\d+)?", "N", w.split(";")[0])] += (
                    1  # one line per kind, not per number
                )
        for kind, n in counts.most_common():
            out.append(f"{name}: {n} row(s): {kind}")
        if not prof.meta.get("complete", True):
            out.append(f"{name}: the sweep is incomplete (resume it with optiserve profile --resume)")
    if plan:
        if not plan.get("feasible"):
            out.append("plan: infeasible — no placement meets the SLA (see closest_miss in the plan)")
        for m in plan.get("models", []):
            c = m.get("chosen")
            if c and LatencySource.transferred(c["provenance"]["latency"]):
                out.append(
                    f"plan {m['model']}: latency on {c['instance_type']} is PREDICTED "
                    f"(service-time band ±{c['provenance']['service_time_band']:.0%}); "
                    f"price as of {c['provenance']['price_as_of']}"
                )
    for r in loadtests:
        if not r.get("valid", True):
            out.append(f"load test {r['file']}: INVALID (client sent {r.get('late_fraction', 0):.1%} late)")
    return out


def _profile_table(name: str, prof: Profile) -> str:
    rows = []
    for m in sorted(prof.measurements, key=lambda m: (m.config.precision.value, m.config.threads, m.config.batch_size)):
        s = m.stats
        if m.status is not Status.OK or s is None:
            rows.append(f"<tr><td class=l>{html.escape(m.config.precision.value)}</td><td>{m.config.batch_size}</td>"
                        f"<td>{m.config.threads}</td><td class=l colspan=6>{html.escape(m.status.value)}: "
                        f"{html.escape((m.error or '').splitlines()[0] if m.error else '')}</td></tr>")  # fmt: skip
            continue
        bounded = s.p99_ci_high is not None and math.isfinite(s.p99_ci_high)
        hi = f"{s.p99_ci_high:.2f}" if bounded else "&infin;"
        lo = f"{s.p99_ci_low:.2f}" if s.p99_ci_low is not None else "?"
        drop = f"{m.accuracy.drop:.4f}" if m.accuracy else "-"
        rows.append(
            f"<tr><td class=l>{html.escape(m.config.precision.value)}</td><td>{m.config.batch_size}</td>"
            f"<td>{m.config.threads}</td><td>{s.p50:.2f}</td>"
            f"<td>{s.p99:.2f} <span class=muted>({lo}&ndash;{hi})</span></td>"
            f"<td>{m.throughput:.0f}</td><td>{s.n}</td><td>{drop}</td><td>{len(m.warnings)}</td></tr>"
        )
    head = (
        "<tr><th class=l>precision</th><th>batch</th><th>threads</th><th>p50 ms</th><th>p99 ms (95% CI)</th>"
        "<th>items/s</th><th>samples</th><th>accuracy drop</th><th>warnings</th></tr>"
    )
    return f"<h3>{html.escape(name)}</h3><table>{head}{''.join(rows)}</table>"


def _plan_table(plan: Mapping[str, Any]) -> str:
    rows = []
    for m in plan.get("models", []):
        c = m.get("chosen")
        if not c:
            rows.append(f"<tr><td class=l>{html.escape(m['model'])}</td><td class=l colspan=8>infeasible</td></tr>")
            continue
        cls = "pred" if LatencySource.transferred(c["provenance"]["latency"]) else "meas"
        band = c["at_peak"].get("p99_band_ms")
        band_txt = f" <span class=muted>[{band[0]:.1f}&ndash;{band[1]:.1f}]</span>" if band else ""
        rows.append(
            f"<tr><td class=l>{html.escape(m['model'])}</td>"
            f"<td class=l>{html.escape(c['provider'] + ':' + c['instance_type'])} {html.escape(str(c['region']))}</td>"
            f"<td class=l>{html.escape(c['precision'])}, batch≤{c['max_batch']}, delay {c['max_delay_ms']:g} ms</td>"
            f"<td>{c['replicas']} / {c['nodes']}</td><td>{c['cost_usd_per_hour']:.3f}</td>"
            f"<td>{c['cost_usd_per_million_requests']:.3f}</td><td>{c['at_target']['p99_ms']:.1f}</td>"
            f"<td>{c['at_peak']['p99_ms']:.1f}{band_txt}</td><td class='l {cls}'>{c['provenance']['latency']}</td></tr>"
        )
    head = (
        "<tr><th class=l>model</th><th class=l>instance, region</th><th class=l>knobs</th><th>replicas / nodes</th>"
        "<th>$/h</th><th>$/M req</th><th>p99 target ms</th><th>p99 peak ms [band]</th><th class=l>latency</th></tr>"
    )
    total = plan.get("total_cost_usd_per_hour")
    tail = f"<p>Total: <b>${total:.3f}/h</b>; plan id {html.escape(str(plan.get('plan_id', '')))}</p>" if total else ""
    return f"<table>{head}{''.join(rows)}</table>{tail}"


def render_html(
    title: str,
    profiles: Mapping[str, Profile],
    plan: Mapping[str, Any] | None,
    loadtests: Sequence[Mapping[str, Any]],
    figs: Sequence[Figure_],
) -> str:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    warnings = _warnings(profiles, plan, loadtests)
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=muted>Generated {now} by optiserve {__version__}. Figures in green are "
        "<span class=meas>measured</span>; in purple <span class=pred>predicted</span>.</p>",
        "<h2>What was measured</h2><table><tr><th class=l>profile</th><th class=l>model</th><th class=l>machine</th>"
        "<th class=l>when (UTC)</th><th class=l>versions</th></tr>",
        *(_profile_header(n, p) for n, p in profiles.items()),
        "</table>",
    ]
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        parts.append(f"<h2>Warnings</h2><div class=warn><ul>{items}</ul></div>")
    if plan:
        parts.append("<h2>Plan</h2>" + _plan_table(plan))
    parts.append("<h2>Figures</h2>")
    for f in figs:
        if f.png is None:
            parts.append(f"<p class=muted>{html.escape(f.title)}: not drawn — needs {html.escape(f.missing)}.</p>")
            continue
        data = base64.b64encode(f.png).decode()
        parts.append(
            f"<figure id={f.name}><img alt='{html.escape(f.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{html.escape(f.title)}.</b> {html.escape(f.caption)} ({f.name}.png)</figcaption></figure>"
        )
    if loadtests:
        rows = "".join(
            f"<tr><td class=l>{html.escape(r['file'])}</td><td>{r.get('target_rate', 0):.1f}</td>"
            f"<td>{r['p50_ms']:.2f}</td><td>{r['p99_ms']:.2f}</td>"
            f"<td>{r['predicted']['p99_ms']:.2f}</td>"
            f"<td>{(r['predicted']['p99_ms'] - r['p99_ms']) / r['p99_ms']:+.0%}</td>"
            f"<td>{'yes' if r.get('valid', True) else 'NO'}</td></tr>"
            if r.get("predicted")
            else f"<tr><td class=l>{html.escape(r['file'])}</td><td>{r.get('target_rate', 0):.1f}</td>"
            f"<td>{r['p50_ms']:.2f}</td><td>{r['p99_ms']:.2f}</td><td>-</td><td>-</td>"
            f"<td>{'yes' if r.get('valid', True) else 'NO'}</td></tr>"
            for r in loadtests
        )
        parts.append(
            "<h2>Load tests</h2><table><tr><th class=l>result</th><th>rate req/s</th><th>p50 ms</th><th>p99 ms</th>"
            f"<th>predicted p99 ms</th><th>error</th><th>valid</th></tr>{rows}</table>"
        )
    compared = {n: c for n, c in ((n, compare_runtimes(p)) for n, p in profiles.items()) if c is not None}
    if compared:
        parts.append("<h2>Runtimes side by side</h2>")
        parts += [runtimes.html_table(n, c) for n, c in compared.items()]
    parts.append("<h2>Measurements</h2>")
    parts += [_profile_table(n, p) for n, p in profiles.items()]
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(
    title: str, profiles: Mapping[str, Profile], plan: Mapping[str, Any] | None, loadtests: Sequence[Mapping[str, Any]]
) -> str:
    """A few lines for a pull-request comment: where, best config, plan, load-test error, warnings."""
    lines = [f"### {title}", ""]
    for name, prof in profiles.items():
        hw = prof.meta.get("hardware", {})
        ok = [m for m in prof.ok if m.stats]
        best = max(ok, key=lambda m: m.throughput, default=None)
        when = str(prof.meta.get("created", "?"))[:10]
        line = f"- **{name}** on {hw.get('cpu_model', '?')} ({hw.get('usable_cpus', '?')} CPUs), {when}: "
        line += f"{len(ok)}/{len(prof.measurements)} configs ok"
        if best and best.stats:
            c = best.config
            line += f"; best throughput {best.throughput:.0f} items/s ({c.precision.value}, batch {c.batch_size}, "
            line += f"{c.threads}t, p99 {best.stats.p99:.2f} ms)"
        lines.append(line)
    if plan:
        for m in plan.get("models", []):
            c = m.get("chosen")
            if c:
                lines.append(
                    f"- plan **{m['model']}**: {c['provider']}:{c['instance_type']} ({c['region']}) x{c['nodes']}, "
                    f"{c['precision']}, **${c['cost_usd_per_hour']:.3f}/h**, p99 {c['at_target']['p99_ms']:.1f} ms "
                    f"at {m['sla']['rate']:g} req/s ({c['provenance']['latency']}; SLA {m['sla']['p99_ms']:g} ms)"
                )
            else:
                lines.append(f"- plan **{m['model']}**: infeasible")
    for r in loadtests:
        pred = r.get("predicted")
        err = (
            f", predicted {pred['p99_ms']:.1f} ms ({(pred['p99_ms'] - r['p99_ms']) / r['p99_ms']:+.0%})" if pred else ""
        )
        lines.append(f"- load test at {r.get('target_rate', 0):.1f} req/s: p99 {r['p99_ms']:.1f} ms measured{err}"
                     + ("" if r.get("valid", True) else " — INVALID run"))  # fmt: skip
    n_warn = len(_warnings(profiles, plan, loadtests))
    if n_warn:
        lines.append(f"- ⚠ {n_warn} warning(s): see the HTML report")
    for prof in profiles.values():  # several runtimes swept: the side-by-side table
        cmp = compare_runtimes(prof)
        if cmp is not None:
            lines += ["", *runtimes.markdown_table(cmp)]
    return "\n".join(lines) + "\n"


def write_report(
    out: Path,
    profiles: Mapping[str, Profile],
    plan: Mapping[str, Any] | None = None,
    loadtests: Sequence[Mapping[str, Any]] = (),
    title: str = "optiserve report",
) -> list[Path]:
    """index.html, summary.md and one PNG per drawn figure into ``out``."""
    if not profiles and not plan:
        raise UsageError("a report needs at least one profile or a plan")
    figs = build_figures(profiles, plan, loadtests)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for f in figs:
            if f.png is not None:
                (out / f"{f.name}.png").write_bytes(f.png)
                written.append(out / f"{f.name}.png")
        (out / "index.html").write_text(render_html(title, profiles, plan, loadtests, figs))
        (out / "summary.md").write_text(render_markdown(title, profiles, plan, loadtests))
    except OSError as exc:
        raise UsageError(f"cannot write the report to {out}: {exc.strerror}") from None
    return [out / "index.html", out / "summary.md", *written]
