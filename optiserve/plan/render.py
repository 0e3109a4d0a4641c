"""A plan as people read it: the placement table, the search summary, a warning
when the chosen prices are old, and the one line saying why an SLA is not met.

The functions read the plan JSON (``plan.result``), so a plan written yesterday
renders the same as one made now; ``render`` prints them where the CLI points.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

PRICE_MAX_AGE_DAYS = 90  # cloud list prices move; a plan on older ones says so where it is read
_COLUMNS = ("model", "placement", "replicas/nodes", "$/h", "$/M req", "p99 target", "p99 peak", "binding", "latency")


def plan_table(result: Mapping[str, Any], output: Path) -> Table:
    """One row per model: where it runs, with which knobs, at what cost and predicted p99."""
    table = Table(title=f"plan ({output})", show_lines=False)
    for col in _COLUMNS:
        table.add_column(col)
    for m in result["models"]:
        p = m["chosen"]
        if p is None:
            table.add_row(
                escape(m["model"]), "[red]infeasible[/red]", "", "", "", "", "", str(m["binding_constraint"]), ""
            )
            continue
        knobs = (
            f"{p['precision']}, batch<={p['max_batch']}, delay {p['max_delay_ms']:g} ms, {p['instances_per_pod']} inst"
        )
        if p["threads_per_instance"]:
            knobs += f" x{p['threads_per_instance']} thr"
        band = p["at_peak"].get("p99_band_ms")
        peak = f"{p['at_peak']['p99_ms']:.1f}" + (f" [{band[0]:.0f}-{band[1]:.0f}]" if band else "")
        table.add_row(
            escape(m["model"]),
            escape(f"{p['provider']}:{p['instance_type']} {p['region']}{' spot' if p['spot'] else ''}\n{knobs}"),
            f"{p['replicas']} / {p['nodes']}",
            f"{p['cost_usd_per_hour']:.3f}",
            f"{p['cost_usd_per_million_requests']:.3f}",
            f"{p['at_target']['p99_ms']:.1f}",
            peak,
            escape(str(m["binding_constraint"])),
            p["provenance"]["latency"],
        )
    return table


def totals(result: Mapping[str, Any]) -> list[str]:
    """The shared-pool saving and the total cost, where there are any."""
    lines = []
    if result.get("shared_pool"):
        sp = result["shared_pool"]
        lines.append(
            f"shared pool: {', '.join(sp['models'])} on {sp['nodes']} x {sp['instance_type']} ({sp['region']}) "
            f"saves ${sp['saving_usd_per_hour']:.3f}/h"
        )
    if result["feasible"]:
        lines.append(
            f"total: ${result['total_cost_usd_per_hour']:.3f}/h (latency PREDICTED; see provenance in the plan)"
        )
    return lines


def price_age_warning(result: Mapping[str, Any], today: dt.date | None = None) -> str | None:
    """A warning when the oldest chosen price is more than ``PRICE_MAX_AGE_DAYS`` old, else None."""
    dates = [
        dt.date.fromisoformat(m["chosen"]["provenance"]["price_as_of"])
        for m in result["models"]
        if m.get("chosen") and m["chosen"]["provenance"].get("price_as_of")
    ]
    if not dates:
        return None
    age = ((today or dt.date.today()) - min(dates)).days
    if age <= PRICE_MAX_AGE_DAYS:
        return None
    return (
        f"the chosen prices are {age} days old (as of {min(dates).isoformat()}): "
        "check them, or pass current ones with --catalog"
    )


def search_lines(result: Mapping[str, Any]) -> list[str]:
    """Per model, how much of the space the search saw and how long it took (rich markup escaped)."""
    lines = []
    for m in result["models"]:
        s = m["search"]
        lines.append(
            f"{escape(m['model'])}: {s['distinct_placements_evaluated']} of {s['space_size']} placements evaluated "
            f"in {s['trials']} trials ({s['sampler']}, seed {s['seed']}), {s['wall_s']:.1f} s; "
            f"pareto front {len(m['pareto_front'])} points; {len(m['excluded_instance_types'])} instance types excluded"
        )
    return lines


def closest_misses(result: Mapping[str, Any], output: Path) -> str:
    """Why no placement meets the SLA: per infeasible model, the closest one and what it misses."""
    misses = []
    for m in result["models"]:
        if m["feasible"]:
            continue
        cm = m.get("closest_miss")
        if not cm:
            misses.append(f"{m['model']}: nothing was evaluated")
            continue
        p = cm["placement"]
        what = ", ".join(f"{k} {v}" for k, v in cm["misses"].items())
        if not what and cm.get("meets_when_verified"):  # the search's short simulation missed, the long one met
            what = (
                f"nothing when re-simulated with {cm.get('verify_requests')} requests, though the search's "
                "shorter simulation missed: re-plan with more --requests"
            )
        misses.append(
            f"{m['model']}: closest is {p['instance_type']} {p['precision']} x{p['replicas']} "
            f"(misses {what}; p99 at peak {p['at_peak']['p99_ms']:.1f} ms vs {m['sla']['p99_ms']:g} ms)"
        )
    return f"no placement meets the SLA (plan written to {output}): " + "; ".join(misses)


def render(result: Mapping[str, Any], output: Path, out: Console, err: Console) -> None:
    """The table, totals and search summary on ``out``; the price-age warning on ``err``."""
    out.print(plan_table(result, output))
    for line in totals(result):
        out.print(line)
    warning = price_age_warning(result)
    if warning is not None:
        err.print(f"[yellow]![/yellow] {warning}")
    for line in search_lines(result):
        out.print(line)
