from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from optiserve.cli import app
from optiserve.errors import UsageError
from optiserve.estimate.arrivals import poisson_arrivals
from optiserve.estimate.catalog import load_catalog
from optiserve.estimate.simulator import BatchingPolicy, simulate
from optiserve.estimate.source import source_entry
from optiserve.estimate.targets import CurveBuilder
from optiserve.models.zoo import build_zoo
from optiserve.plan.planner import PlanOptions, make_plan
from optiserve.profile.store import load_profile

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "reference" / "cnn-default"


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zoo(tmp_path_factory.mktemp("cnn"), ["cnn"])[0]


def _sla(tmp_path: Path, cnn: Path, body: str) -> Path:
    p = tmp_path / "sla.yaml"
    p.write_text(body.replace("MODEL", str(cnn)).replace("PROFILE", str(PROFILE)))
    return p


ONE = """
defaults: {regions: [EU], headroom: 0.2}
models:
  cnn: {profile: PROFILE, model: MODEL, rate: 150, peak_factor: 1.5, p99_ms: 60, max_accuracy_drop: 0.01}
search: {max_delay_ms: [0, 2, 5], instances: [1, 2]}
"""


def _opts(sla: Path, **kw: object) -> PlanOptions:
    base: dict[str, object] = {"trials": 40, "requests": 5000, "verify_requests": 20000, "alternatives": 2}
    return PlanOptions(sla, **{**base, **kw})  # type: ignore[arg-type]


def test_every_returned_placement_meets_the_sla_when_resimulated(tmp_path: Path, cnn: Path) -> None:
    plan = make_plan(_opts(_sla(tmp_path, cnn, ONE)))
    assert plan["schema_version"] == 1 and plan["feasible"]
    m = plan["models"][0]
    assert m["chosen"] and m["binding_constraint"] and m["pareto_front"]
    assert plan["inputs"]["profiles"][0]["parquet_sha256"] and plan["inputs"]["sla"]["sha256"]
    cat = load_catalog()
    prof = load_profile(PROFILE)
    src, _ = source_entry(cat, prof.meta["hardware"], None)
    builder = CurveBuilder(prof, cnn, cat, src)
    for p in [m["chosen"], *m["alternatives"]]:
        entry = cat.get(f"{p['provider']}:{p['instance_type']}")
        assert cat.region_allowed(p["region"], ["EU"])
        price = next(x for x in entry.instance.prices if x.region == p["region"]).on_demand_usd_per_hour
        assert p["cost_usd_per_hour"] == pytest.approx(p["nodes"] * price, rel=1e-6)
        assert p["nodes"] * p["pods_per_node"] >= p["replicas"]
        assert (
            p["provenance"]["latency"] == "simulated from transferred service times" and p["provenance"]["price_as_of"]
        )
        share = p["instances_per_pod"] if entry.accelerator else 1
        curve = builder.curve(entry, p["precision"], p["threads_per_instance"] or 1, share)
        policy = BatchingPolicy(p["max_batch"], p["max_delay_ms"] / 1e3, (), p["instances_per_pod"], p["replicas"])
        arr = poisson_arrivals(225.0, 60_000, seed=12345)  # another stream than the planner's
        p99 = simulate(arr, curve.service, policy, seed=99).percentile_ms(0.99)
        assert p99 <= 60 * 1.05, (p["instance_type"], p99)
    costs = [pt["cost_usd_per_hour"] for pt in m["pareto_front"]]
    p99s = [pt["p99_ms_at_target"] for pt in m["pareto_front"]]
    assert costs == sorted(costs) and p99s == sorted(p99s, reverse=True)


def test_infeasible_sla_writes_the_closest_miss_and_exits_3(tmp_path: Path, cnn: Path) -> None:
    sla = _sla(tmp_path, cnn, ONE.replace("p99_ms: 60", "p99_ms: 0.05"))
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(app, ["plan", "--sla", str(sla), "--trials", "15", "--requests", "2000", "-o", str(out)])
    assert res.exit_code == 3, res.output
    assert "no placement meets the SLA" in res.output and "closest is" in res.output and "p99" in res.output
    assert "Traceback" not in res.output
    plan = json.loads(out.read_text())
    assert not plan["feasible"] and plan["models"][0]["closest_miss"]["misses"]["p99"].startswith("+")


def test_resume_from_sqlite_counts_past_trials(tmp_path: Path, cnn: Path) -> None:
    sla = _sla(tmp_path, cnn, ONE)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = make_plan(_opts(sla, trials=12, storage=url))
    second = make_plan(_opts(sla, trials=20, storage=url))
    name = second["models"][0]["search"]["study_name"]
    assert name == first["models"][0]["search"]["study_name"]
    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 20
    assert second["models"][0]["search"]["trials"] == 20


def test_two_worker_processes_share_one_study(tmp_path: Path, cnn: Path) -> None:
    sla = _sla(tmp_path, cnn, ONE)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    plan = make_plan(_opts(sla, trials=16, storage=url, workers=2))
    name = plan["models"][0]["search"]["study_name"]
    trials = optuna.load_study(study_name=name, storage=url).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) >= 16
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both workers did trials
    assert plan["feasible"]


def test_workers_need_a_storage(tmp_path: Path, cnn: Path) -> None:
    with pytest.raises(UsageError, match="--storage"):
        make_plan(_opts(_sla(tmp_path, cnn, ONE), workers=2))


def test_two_models_share_a_node_pool_when_that_is_cheaper(tmp_path: Path, cnn: Path) -> None:
    body = """
defaults: {regions: [EU], instance_types: [c6i.4xlarge]}
models:
  a: {profile: PROFILE, model: MODEL, rate: 20, p99_ms: 200}
  b: {profile: PROFILE, model: MODEL, rate: 20, p99_ms: 200}
search: {max_delay_ms: [0], instances: [1]}
"""
    plan = make_plan(_opts(_sla(tmp_path, cnn, body), trials=10))
    pool = plan["shared_pool"]
    assert pool is not None and pool["models"] == ["a", "b"]
    assert pool["nodes"] < sum(m["chosen"]["nodes"] for m in plan["models"])
    assert plan["total_cost_usd_per_hour"] < plan["separate_cost_usd_per_hour"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "zzz=/nowhere"], "not in the SLA"),
        (["--sampler", "grid"], "valid samplers"),
        (["--workers", "2"], "--storage"),
        (["--catalog", "/nowhere.yaml"], "cannot read"),
        (["--measured-on", "no-such-box"], "valid instance types"),
        (["--measured-on", "aws:g5.xlarge"], "the profile's machine had none"),
        (["--measured-on", "aws:c7g.xlarge"], "is an arm64 machine"),
    ],
)
def test_plan_cli_bad_input(tmp_path: Path, cnn: Path, args: list[str], message: str) -> None:
    sla = _sla(tmp_path, cnn, ONE)
    res = CliRunner().invoke(app, ["plan", "--sla", str(sla), "--trials", "3", "-o", str(tmp_path / "p.json"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_plan_cli_writes_the_plan_and_warns_about_old_prices(tmp_path: Path, cnn: Path) -> None:
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(
        app, ["plan", "--sla", str(_sla(tmp_path, cnn, ONE)), "--trials", "12", "--requests", "2000", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    plan = json.loads(out.read_text())
    assert plan["feasible"] and plan["plan_id"] and "days old" in res.output and "PREDICTED" in res.output


def test_a_fleet_beyond_the_replica_cap_is_infeasible_not_clipped(tmp_path: Path, cnn: Path) -> None:
    """rate 1e12 needs more pods than any fleet the planner sizes: no placement may
    claim it, and the closest miss names the replica cap."""
    sla = _sla(tmp_path, cnn, ONE.replace("rate: 150", "rate: 1.0e12"))
    plan = make_plan(_opts(sla, trials=8, requests=2000, verify_requests=2000))
    m = plan["models"][0]
    assert not plan["feasible"] and m["chosen"] is None
    assert "replicas" in m["closest_miss"]["misses"]
