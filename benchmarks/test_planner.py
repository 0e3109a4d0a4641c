"""The optimizer against exhaustive search and random search, on one space small enough to enumerate.

Space: the committed int8 CNN profile (fp32 and int8-static, batch 1/4/16,
1 and 2 threads) over every usable catalog entry, 7 queue delays and 4
instance counts: > 10,000 placements. Exhaustive evaluation finds the true
optimum under the same evaluator (same simulated stream); TPE and random
search each get 5% of the space in trials, over 5 seeds. Printed: the median
cost ratio to the optimum (target <= 1.01), distinct placements evaluated,
and TPE vs random at the same budget. Then `optiserve plan` end to end on the
whole catalog (target < 30 s). Asserts the 5% targets and the 30 s; the 1% budget
only reports (it shows where the search stops finding the optimum).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from optiserve.models.zoo import build_zoo
from optiserve.plan.planner import PlanOptions, build_evaluator
from optiserve.plan.search import run_search

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "reference" / "cnn-int8"
SLA = """
defaults: {headroom: 0.2}
models:
  cnn: {profile: PROFILE, model: MODEL, rate: 1200, peak_factor: 1.5, p99_ms: 40, max_accuracy_drop: 0.01}
search: {max_delay_ms: [0, 0.5, 1, 2, 5, 10, 20], instances: [1, 2, 3, 4]}
"""
SEEDS = (0, 1, 2, 3, 4)


def _sla(tmp_path: Path) -> Path:
    (model,) = build_zoo(tmp_path, ["cnn"])
    p = tmp_path / "sla.yaml"
    p.write_text(SLA.replace("PROFILE", str(PROFILE)).replace("MODEL", str(model)))
    return p


def test_optimizer_vs_exhaustive_and_random(tmp_path: Path, record_ratio) -> None:  # type: ignore[no-untyped-def]
    sla = _sla(tmp_path)
    opts = PlanOptions(sla, requests=5000)
    ev = build_evaluator("cnn", opts)
    space = list(ev.candidates())
    assert len(space) >= 10_000, len(space)
    t0 = time.perf_counter()
    judged = [ev.evaluate(c) for c in space]
    exhaustive_s = time.perf_counter() - t0
    feasible = [e.cost_usd_per_hour for e in judged if e.feasible]
    best = min(feasible)
    at_best = sum(1 for c in feasible if c <= best * 1.01)
    detail = (
        f"space {len(space)}, {len(feasible)} feasible, {at_best} within 1% of the optimum ${best:.3f}/h; "
        f"exhaustive took {exhaustive_s:.0f} s"
    )
    for share, label in ((20, "5%"), (100, "1%")):
        budget = len(space) // share
        found: dict[str, list[float]] = {"tpe": [], "random": []}
        distinct: dict[str, list[int]] = {"tpe": [], "random": []}
        for sampler in found:
            for seed in SEEDS:
                fresh = build_evaluator("cnn", opts)  # an empty cache: the search pays for each evaluation
                res = run_search(fresh, budget, seed, sampler, None, f"bench-{sampler}-{seed}-{share}")
                costs = [e.cost_usd_per_hour for e in res.evaluations if e.feasible]
                found[sampler].append(min(costs) / best if costs else float("inf"))
                distinct[sampler].append(len(res.evaluations))
        tpe = statistics.median(found["tpe"])
        record_ratio(
            f"plan {label} budget: tpe median cost / optimum",
            tpe,
            "<= 1.01" if share == 20 else "report",  # the target is at 5%; 1% shows where it stops
            tpe <= 1.01 or share != 20,
            f"{budget} trials, {statistics.median(distinct['tpe']):.0f} distinct; " + (detail if share == 20 else ""),
        )
        record_ratio(
            f"plan {label} budget: tpe / random mean cost",
            statistics.mean(found["tpe"]) / statistics.mean(found["random"]),
            "<= 1" if share == 20 else "report",
            statistics.mean(found["tpe"]) <= statistics.mean(found["random"]) or share != 20,
            f"per seed tpe {[round(x, 3) for x in found['tpe']]} random {[round(x, 3) for x in found['random']]}",
        )
        assert max(distinct["tpe"]) <= budget


def test_plan_whole_catalog_under_30s(tmp_path: Path, record_ratio) -> None:  # type: ignore[no-untyped-def]
    sla = _sla(tmp_path)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "optiserve", "plan", "--sla", str(sla), "-o", str(tmp_path / "plan.json")],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - t0
    record_ratio("plan: one model, whole catalog, wall s / 30 s", wall / 30, "< 1", wall < 30, f"{wall:.1f} s")
