"""The plan as printed: table, totals, the old-price warning and the closest-miss line."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

from rich.console import Console

from optiserve.plan.render import (
    PRICE_MAX_AGE_DAYS,
    closest_misses,
    plan_table,
    price_age_warning,
    render,
    search_lines,
    totals,
)

SEARCH = {
    "distinct_placements_evaluated": 12,
    "space_size": 40,
    "trials": 30,
    "sampler": "tpe",
    "seed": 0,
    "wall_s": 1.5,
}


def _chosen(as_of: str) -> dict[str, Any]:
    return {
        "provider": "aws",
        "instance_type": "c7i.xlarge",
        "region": "eu-west-1",
        "spot": False,
        "precision": "int8-dynamic",
        "max_batch": 8,
        "max_delay_ms": 2.0,
        "instances_per_pod": 1,
        "threads_per_instance": 2,
        "replicas": 3,
        "nodes": 3,
        "cost_usd_per_hour": 0.5,
        "cost_usd_per_million_requests": 0.02,
        "at_target": {"p99_ms": 12.0},
        "at_peak": {"p99_ms": 18.0, "p99_band_ms": [15.0, 22.0]},
        "provenance": {"latency": "simulated from measured service times", "price_as_of": as_of},
    }


def _result(as_of: str = "2026-01-01", feasible: bool = True) -> dict[str, Any]:
    miss = {"placement": _chosen(as_of), "misses": {"p99": "+20%"}}
    model = {
        "model": "cnn",
        "feasible": feasible,
        "chosen": _chosen(as_of) if feasible else None,
        "closest_miss": None if feasible else miss,
        "binding_constraint": "p99" if feasible else "infeasible",
        "sla": {"p99_ms": 15.0},
        "search": SEARCH,
        "pareto_front": [1, 2],
        "excluded_instance_types": ["g5.xlarge"],
    }
    return {"feasible": feasible, "models": [model], "total_cost_usd_per_hour": 0.5}


def _text(renderable: Any) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200).print(renderable)
    return buf.getvalue()


def test_the_table_shows_placement_knobs_cost_and_the_band() -> None:
    text = _text(plan_table(_result(), Path("plan.json")))
    assert "plan (plan.json)" in text and "aws:c7i.xlarge eu-west-1" in text
    assert "int8-dynamic, batch<=8, delay 2 ms, 1 inst x2 thr" in text and "18.0 [15-22]" in text
    assert "3 / 3" in text and "0.500" in text


def test_an_infeasible_model_is_a_red_row_and_no_total() -> None:
    result = _result(feasible=False)
    assert "infeasible" in _text(plan_table(result, Path("p.json")))
    assert totals(result) == []


def test_prices_older_than_the_limit_warn_with_their_age() -> None:
    as_of = dt.date(2026, 1, 1)
    old = as_of + dt.timedelta(days=PRICE_MAX_AGE_DAYS + 1)
    warning = price_age_warning(_result("2026-01-01"), today=old)
    assert warning is not None and f"{PRICE_MAX_AGE_DAYS + 1} days old (as of 2026-01-01)" in warning
    assert price_age_warning(_result("2026-01-01"), today=as_of + dt.timedelta(days=PRICE_MAX_AGE_DAYS)) is None
    assert price_age_warning(_result(feasible=False)) is None  # no chosen price: nothing to date


def test_the_closest_miss_names_the_placement_and_what_it_misses() -> None:
    line = closest_misses(_result(feasible=False), Path("p.json"))
    assert line.startswith("no placement meets the SLA (plan written to p.json): cnn: closest is c7i.xlarge")
    assert "misses p99 +20%; p99 at peak 18.0 ms vs 15 ms" in line
    result = _result(feasible=False)
    result["models"][0]["closest_miss"] = None
    assert closest_misses(result, Path("p.json")).endswith("cnn: nothing was evaluated")
    # the search's short simulation missed, the verification's long one met: say so, not "misses ;"
    met = _result(feasible=False)
    met["models"][0]["closest_miss"] |= {"misses": {}, "meets_when_verified": True, "verify_requests": 20000}
    line = closest_misses(met, Path("p.json"))
    assert "misses nothing when re-simulated with 20000 requests" in line and "more --requests" in line


def test_render_puts_the_warning_on_stderr_and_the_rest_on_stdout() -> None:
    out, err = io.StringIO(), io.StringIO()
    render(_result("2000-01-01"), Path("plan.json"), Console(file=out, width=200), Console(file=err, width=200))
    text, warned = out.getvalue(), err.getvalue()
    assert "days old" in warned and "days old" not in text
    assert "total: $0.500/h" in text and search_lines(_result())[0] in text
