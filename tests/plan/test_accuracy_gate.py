"""The planner keeps out a precision whose accuracy verdict fails, and says why."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from optiserve.estimate.catalog import load_catalog
from optiserve.estimate.source import source_entry
from optiserve.estimate.targets import CurveBuilder
from optiserve.models.zoo import build_zoo
from optiserve.plan.evaluate import Candidate, Evaluator
from optiserve.plan.planner import PlanOptions, make_plan
from optiserve.plan.search import seeds
from optiserve.plan.sla import load_sla
from optiserve.profile.store import ParquetStore, load_profile
from optiserve.types import AccuracyReport, Precision, Profile

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "reference" / "cnn-int8"  # fp32 + int8-static, both top-1 0 drop

SLA = """
defaults: {regions: [EU], headroom: 0.2}
models:
  cnn: {profile: PROFILE, model: MODEL, rate: 150, peak_factor: 1.5, p99_ms: 60, max_accuracy_drop: 0.06}
search: {max_delay_ms: [0, 2], instances: [1, 2]}
"""

# what the user saw: 5% relative L2 over the output, one group (the class scores) gone to 0
DESTROYED = AccuracyReport(
    samples=32,
    output=0,
    max_abs_error=0.9,
    rel_l2_error=0.051,
    cosine=0.998,
    top1_agreement=None,
    accuracy=None,
    reference_accuracy=None,
    drop=1.0,
    drop_metric="relative-l2",
    synthetic=True,
    worst_output="output",
    worst_group="[:, :, 5]",
    group_error=1.0,
    checks={"output:relative-l2": 1.0},
)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zoo(tmp_path_factory.mktemp("cnn"), ["cnn"])[0]


def _profile(int8: AccuracyReport | None) -> Profile:
    prof = load_profile(PROFILE)
    if int8 is None:
        return prof
    rows = tuple(
        replace(m, accuracy=int8) if m.config.precision is Precision.INT8_STATIC else m for m in prof.measurements
    )
    return Profile(prof.meta, rows)


def _sla(tmp_path: Path, cnn: Path, profile: Path = PROFILE) -> Path:
    p = tmp_path / "sla.yaml"
    p.write_text(SLA.replace("MODEL", str(cnn)).replace("PROFILE", str(profile)))
    return p


def _evaluator(tmp_path: Path, cnn: Path, profile: Profile) -> Evaluator:
    sla, _ = load_sla(_sla(tmp_path, cnn))
    cat = load_catalog()
    src, _ = source_entry(cat, profile.meta["hardware"], None)
    return Evaluator(sla.resolved("cnn"), CurveBuilder(profile, cnn, cat, src), cat, sla.search, requests=2000)


def test_a_destroyed_group_keeps_the_precision_out(tmp_path: Path, cnn: Path) -> None:
    good = _evaluator(tmp_path, cnn, _profile(None))
    assert all(g["accepted"] for g in good.accuracy_gate())  # the same profile as measured: int8 allowed
    ev = _evaluator(tmp_path, cnn, _profile(DESTROYED))
    gate = {g["precision"]: g for g in ev.accuracy_gate()}
    assert gate["fp32"]["accepted"] and not gate["int8-static"]["accepted"]
    why = gate["int8-static"]["reason"]
    assert why == "refused: relative-l2 1 at output[:, :, 5] > 0.06 (synthetic inputs)"
    assert {c.precision for c in seeds(ev)} == {"fp32"}
    cpu = next(e.key for e, _ in ev.entries if e.accelerator is None)
    judged = ev.evaluate(Candidate(cpu, "int8-static", 1, 1, 1, 0.0))
    assert not judged.feasible and judged.constraints["accuracy"] == pytest.approx(1.0 - 0.06)


def test_old_profiles_are_flagged_as_judged_on_one_output(tmp_path: Path, cnn: Path) -> None:
    ev = _evaluator(tmp_path, cnn, _profile(None))
    gate = {g["precision"]: g for g in ev.accuracy_gate()}
    assert "first output only" in gate["int8-static"]["reason"] and "first output" not in gate["fp32"]["reason"]


def test_the_plan_says_why_a_precision_was_refused(tmp_path: Path, cnn: Path) -> None:
    prof = _profile(DESTROYED)
    store = ParquetStore(tmp_path / "profile")
    store.create(dict(prof.meta))
    for m in prof.measurements:
        store.append(m)
    opts = PlanOptions(_sla(tmp_path, cnn, tmp_path / "profile"), trials=15, requests=2000, verify_requests=5000)
    plan = make_plan(opts)
    m = plan["models"][0]
    gate = {g["precision"]: g for g in m["accuracy_gate"]}
    assert not gate["int8-static"]["accepted"] and gate["int8-static"]["reason"].startswith("refused: relative-l2 1")
    assert m["chosen"]["precision"] == "fp32"
    assert all(p["precision"] == "fp32" for p in m["alternatives"])
