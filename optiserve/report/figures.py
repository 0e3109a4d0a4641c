"""The report's figures, one function each, from profiles, a plan and load-test results.

Each returns a matplotlib Figure, or None when its inputs hold nothing to draw
(the report then says which input would add it). Measured and predicted
figures never share a style: predicted points are hollow, and titles say which.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from optiserve.types import LatencySource, Measurement, Profile

STAGE_ORDER = ("preprocess", "host_to_device", "inference", "device_to_host", "postprocess")
SIZE = (7.5, 4.2)
WIDE = (10.5, 4.6)  # room for a legend beside the axes


def _label(name: str, m: Measurement) -> str:
    variant = dict(m.config.variant)
    extra = f" {variant['calibrator']}" if "calibrator" in variant else ""
    pre = f" +{m.config.preprocess.split(':')[0]} pre-processing" if m.config.preprocess else ""
    return f"{name}: {m.config.precision.value}{extra} {m.config.threads}t{pre}"


def _groups(profiles: Mapping[str, Profile]) -> dict[str, list[Measurement]]:
    """Series label -> OK rows sorted by batch size (one series per runtime x precision x threads)."""
    out: dict[str, list[Measurement]] = defaultdict(list)
    runtimes = {m.config.runtime for p in profiles.values() for m in p.ok}
    for name, prof in profiles.items():
        for m in prof.ok:
            if m.stats is None:
                continue
            label = _label(name, m) + (f" ({m.config.runtime})" if len(runtimes) > 1 else "")
            out[label].append(m)
    return {k: sorted(v, key=lambda m: m.config.batch_size) for k, v in out.items()}


def latency_vs_batch(profiles: Mapping[str, Profile]) -> Figure | None:
    groups = _groups(profiles)
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=WIDE)
    for label, rows in groups.items():
        b = [m.config.batch_size for m in rows]
        p50 = [m.stats.p50 for m in rows if m.stats]
        p99 = [m.stats.p99 for m in rows if m.stats]
        (line,) = ax.plot(b, p50, marker="o", label=f"{label} p50")
        ax.fill_between(b, p50, p99, color=line.get_color(), alpha=0.18)
        ax.plot(b, p99, linestyle="--", color=line.get_color(), linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (rows per call)")
    ax.set_ylabel("latency per call (ms, log)")
    ax.set_title("Measured latency vs batch size: p50 (line) to p99 (dashed), band between")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def throughput_vs_p99(profiles: Mapping[str, Profile], p99_target_ms: float | None) -> Figure | None:
    groups = _groups(profiles)
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=WIDE)
    for label, rows in groups.items():
        x = [m.stats.p99 for m in rows if m.stats]
        y = [m.throughput for m in rows]
        ax.plot(x, y, marker="o", label=label)
        for m, xi, yi in zip(rows, x, y, strict=True):
            ax.annotate(f"b{m.config.batch_size}", (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if p99_target_ms is not None:
        ax.axvline(p99_target_ms, color="red", linestyle=":", label=f"SLA p99 {p99_target_ms:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel("p99 latency per call (ms, log)")
    ax.set_ylabel("throughput, one stream (items/s)")
    ax.set_title("Measured throughput vs p99 (labels: batch size)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def speedup_rows(profiles: Mapping[str, Profile]) -> list[dict[str, Any]]:
    """Per non-fp32 OK row: throughput over the fp32 row of the same runtime, batch and threads, and its drift."""
    out = []
    for name, prof in profiles.items():
        base = {
            (m.config.runtime, m.config.batch_size, m.config.threads): m
            for m in prof.ok
            if m.config.precision.value == "fp32" and not m.config.preprocess
        }
        for m in prof.ok:
            ref = base.get((m.config.runtime, m.config.batch_size, m.config.threads))
            if m.config.precision.value == "fp32" or ref is None or not ref.throughput:
                continue
            out.append(
                {
                    "profile": name,
                    "precision": m.config.precision.value,
                    "batch": m.config.batch_size,
                    "threads": m.config.threads,
                    "speedup": m.throughput / ref.throughput,
                    "drop": m.accuracy.drop if m.accuracy else None,
                    "metric": m.accuracy.drop_metric if m.accuracy else None,
                    "within": m.within_tolerance,
                }
            )
    return out


def speedup_vs_drift(profiles: Mapping[str, Profile]) -> Figure | None:
    rows = [r for r in speedup_rows(profiles) if r["drop"] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    markers = "osD^v<>P*X"
    precisions = sorted({r["precision"] for r in rows})
    names = sorted({r["profile"] for r in rows})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r in rows:
        ax.scatter(
            r["drop"],
            r["speedup"],
            marker=markers[precisions.index(r["precision"]) % len(markers)],
            color=colors[names.index(r["profile"]) % len(colors)],
            s=55,
        )
        ax.annotate(f"b{r['batch']}", (r["drop"], r["speedup"]), fontsize=7, xytext=(5, -3), textcoords="offset points")
    for i, prec in enumerate(precisions):
        ax.scatter([], [], marker=markers[i % len(markers)], color="grey", label=f"precision {prec}")
    for i, name in enumerate(names):
        ax.scatter([], [], marker="s", color=colors[i % len(colors)], label=f"profile {name}")
    ax.axhline(1.0, color="grey", linewidth=1)
    ax.set_xscale("symlog", linthresh=1e-4)
    ax.set_xlim(left=-1e-5)
    ax.set_xlabel("accuracy drift vs fp32 (drop metric, symlog; 0 = no drift measured)")
    ax.set_ylabel("speed-up vs fp32 (throughput ratio)")
    ax.set_title("Measured speed-up vs accuracy drift per precision (labels: batch size)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def pareto(plan: Mapping[str, Any]) -> Figure | None:
    models = [m for m in plan.get("models", []) if m.get("pareto_front") or m.get("chosen")]
    if not models:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    for m in models:
        front = m.get("pareto_front", [])
        x = [p["p99_ms_at_target"] for p in front]
        y = [p["cost_usd_per_hour"] for p in front]
        (line,) = ax.plot(x, y, linestyle="-", linewidth=1, alpha=0.6, label=f"{m['model']}: Pareto front")
        color = line.get_color()
        for p in front:
            hollow = LatencySource.transferred(p.get("latency"))
            ax.scatter(
                p["p99_ms_at_target"],
                p["cost_usd_per_hour"],
                facecolors="none" if hollow else color,
                edgecolors=color,
                s=40,
            )
            ax.annotate(p["instance_type"], (p["p99_ms_at_target"], p["cost_usd_per_hour"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
        c = m.get("chosen")
        if c:
            ax.scatter(
                c["at_target"]["p99_ms"],
                c["cost_usd_per_hour"],
                marker="*",
                s=260,
                color=color,
                edgecolors="black",
                zorder=5,
                label=f"{m['model']}: chosen {c['instance_type']} ({c['provenance']['latency']})",
            )
        ax.axvline(
            m["sla"]["p99_ms"], color=color, linestyle=":", label=f"{m['model']}: SLA p99 {m['sla']['p99_ms']:g} ms"
        )
    ax.scatter([], [], facecolors="none", edgecolors="black", label="hollow = predicted latency")
    ax.scatter([], [], color="black", label="filled = measured latency")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("p99 at the target rate (ms, log)")
    ax.set_ylabel("cost (USD per hour, log)")
    ax.set_title("Cost vs p99: the plan's Pareto front (predicted by the queueing simulator)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def load_fidelity(loadtests: Sequence[Mapping[str, Any]]) -> Figure | None:
    runs = [r for r in loadtests if r.get("p99_ms") is not None]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    runs = sorted(runs, key=lambda r: float(r.get("target_rate", 0)))
    rates = [float(r.get("target_rate", 0)) for r in runs]
    for stat, color in (("p50_ms", "tab:blue"), ("p99_ms", "tab:red")):
        ax.plot(rates, [r[stat] for r in runs], marker="o", color=color, label=f"measured {stat[:-3]}")
        pred = [(rate, r["predicted"][stat]) for rate, r in zip(rates, runs, strict=True) if r.get("predicted")]
        if pred:
            ax.plot(*zip(*pred, strict=True), marker="o", markerfacecolor="none", linestyle="--", color=color,
                    label=f"predicted {stat[:-3]}")  # fmt: skip
    for rate, r in zip(rates, runs, strict=True):
        if r.get("predicted") and r["p99_ms"]:
            e = (r["predicted"]["p99_ms"] - r["p99_ms"]) / r["p99_ms"]
            ax.annotate(f"p99 err {e:+.0%}" + ("" if r.get("valid", True) else " INVALID"), (rate, r["p99_ms"]),
                        fontsize=7, xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("latency from scheduled send (ms)")
    ax.set_title("Latency under load: measured (Locust, open loop) vs predicted (simulator)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def stage_breakdown(profiles: Mapping[str, Profile]) -> Figure | None:
    rows = []
    for name, prof in profiles.items():
        for m in prof.ok:
            stages = {k: v for k, v in (m.stages or {}).items() if v}
            if stages:
                rows.append((f"{_label(name, m)} b{m.config.batch_size}", stages))
    if not rows:
        return None
    staged = [r for r in rows if len(r[1]) > 1]
    rows = (staged or rows)[:24]  # where some configs have stages, those are the ones worth a bar
    fig, ax = plt.subplots(figsize=(SIZE[0], max(2.5, 0.32 * len(rows) + 1.2)))
    left = [0.0] * len(rows)
    for stage in STAGE_ORDER:
        widths = [float(s.get(stage, {}).get("p50_ms", 0.0)) if s.get(stage) else 0.0 for _, s in rows]
        if not any(widths):
            continue
        ax.barh([r[0] for r in rows], widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("p50 time per call (ms), stacked by stage")
    ax.set_title("Measured per-stage breakdown")
    ax.tick_params(axis="y", labelsize=6)
    ax.legend(fontsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
