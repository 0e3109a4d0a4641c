"""fanout -> (local executor) -> gather -> plan: transferred placements become measured ones.

The Jobs are validated against the real Kubernetes schemas; the local executor
runs each Job's own profile script, so what is tested here is what a pod runs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from optiserve.emit.fanout import FanoutOptions, Recipe, fanout, picks
from optiserve.emit.local_jobs import run_local
from optiserve.emit.validate import ManifestError, validate_k8s
from optiserve.errors import UsageError
from optiserve.estimate.catalog import load_catalog
from optiserve.models.zoo import build_zoo
from optiserve.plan.gathered import REQUEST, gather
from optiserve.plan.planner import PlanOptions, make_plan

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "reference" / "cnn-default"
# Entries of this machine's CPU generation only (Sapphire Rapids: c7i/m7i; Zen 3: D4as_v5, n2d; Emerald
# Rapids: D4s_v6, c4), so the profiles the local Jobs measure here pass gather's machine check whichever
# machine runs the tests
SLA = """
defaults: {headroom: 0.2, instance_types: TYPES}
models:
  cnn: {profile: PROFILE, model: MODEL, rate: 150, peak_factor: 1.5, p99_ms: 60, max_accuracy_drop: 0.01}
search: {max_delay_ms: [0, 2, 5], instances: [1, 2]}
"""
FAST = Recipe(budget_s=0.3, warmup_s=0.2, min_samples=20)


def _this_generation() -> list[str]:
    """CPU-only catalog instance types of the generation this machine matches."""
    from optiserve.estimate.cpu_id import match
    from optiserve.profile.hardware import fingerprint

    catalog = load_catalog()
    here = match(fingerprint(), catalog).entry.instance.cpu
    return sorted(
        {
            e.instance.name
            for e in catalog.entries
            if e.instance.accelerator is None
            and e.instance.cpu.generation == here.generation
            and e.instance.cpu.arch == here.arch
        }
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("fanout")
    cnn = build_zoo(root, ["cnn"])[0]
    sla = root / "sla.yaml"
    types = _this_generation()
    assert len(types) >= 2, types  # two entries to fan out to
    sla.write_text(SLA.replace("MODEL", str(cnn)).replace("PROFILE", str(PROFILE)).replace("TYPES", json.dumps(types)))
    plan = make_plan(PlanOptions(sla, trials=30, requests=5000, verify_requests=20000, alternatives=3))
    assert plan["feasible"]
    return sla, cnn, plan


def _placements(plan: dict[str, Any]) -> list[dict[str, Any]]:
    m = plan["models"][0]
    return [m["chosen"], *m["alternatives"]]


def test_the_local_loop_turns_transferred_placements_into_measured_ones(
    setup: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    sla, cnn, plan = setup
    assert all("transferred" in p["provenance"]["latency"] for p in _placements(plan))
    jobs = fanout(plan, FanoutOptions("pvc://results/fanout", top=2, recipe=FAST), tmp_path / "jobs")
    assert len(jobs) == 2 and len({j.entry for j in jobs}) == 2
    store = tmp_path / "store"  # what the claim holds under fanout/ after the Jobs ran
    runs = run_local(tmp_path / "jobs", store, {"cnn": cnn}, timeout_s=600)
    assert [r.returncode for r in runs] == [0, 0], [r.log for r in runs]
    got = gather(store, tmp_path / "profiles", load_catalog())
    assert {g.entry for g in got.gathered} == {j.entry for j in jobs} and not got.refused
    assert all(any("vCPUs" in w for w in g.warnings) for g in got.gathered)  # this VM is not the entry's size: said so
    again = make_plan(
        PlanOptions(
            sla, trials=30, requests=5000, verify_requests=20000, alternatives=3, gathered=(tmp_path / "profiles",)
        )
    )
    assert {g["entry"] for g in again["inputs"]["gathered"]} == {j.entry for j in jobs}
    measured = [
        p
        for p in _placements(again)
        if p["provenance"]["latency"] == "simulated from measured service times"
        and p["provenance"]["latency_basis"].startswith(f"measured on {p['provider']}:{p['instance_type']}")
    ]
    assert measured, [p["provenance"]["latency_basis"] for p in _placements(again)]
    # every placement on a gathered entry is measured there; the rest stay transferred, never relabelled
    for p in _placements(again):
        gathered = f"{p['provider']}:{p['instance_type']}" in {j.entry for j in jobs}
        assert (p in measured) == gathered and ("transferred" in p["provenance"]["latency"]) != gathered


def test_gather_refuses_another_model_and_another_kind_of_machine(
    setup: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, cnn, plan = setup
    fanout(plan, FanoutOptions("pvc://results/x", top=1, recipe=FAST), tmp_path / "jobs")
    store = tmp_path / "store"
    assert run_local(tmp_path / "jobs", store, {"cnn": cnn}, timeout_s=600)[0].returncode == 0
    (good,) = list(store.rglob(REQUEST))
    for name, change in (("digest", {"model_sha256": "0" * 64}), ("arm", {"entry": "aws:c7g.xlarge"})):
        bad = store / "other" / name
        bad.mkdir(parents=True)
        (bad / "profile").symlink_to(good.parent / "profile")
        (bad / REQUEST).write_text(json.dumps({**json.loads(good.read_text()), **change}))
    got = gather(store, tmp_path / "profiles", load_catalog())
    reasons = dict(got.refused)
    assert len(got.gathered) == 1 and set(reasons) == {"other/digest", "other/arm"}
    assert "measured model" in reasons["other/digest"] and "arm64" in reasons["other/arm"]


def test_a_gpu_job_asks_for_the_gpu_and_an_object_store_gets_an_uploader(
    setup: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, _, plan = setup
    gpu_plan = copy.deepcopy(plan)
    chosen = gpu_plan["models"][0]["chosen"]
    chosen.update(
        provider="aws",  # a GPU entry of one provider, whichever CPU entries the plan chose
        region="us-east-1",
        instance_type="g5.xlarge",
        runtime="onnxruntime-tensorrt",
        threads_per_instance=None,
    )
    gpu_plan["models"][0]["alternatives"] = []
    (j,) = fanout(gpu_plan, FanoutOptions("s3://bucket/runs", top=1, service_account="profiler"), tmp_path)
    spec = j.job["spec"]["template"]["spec"]
    profile = next(c for c in spec["initContainers"] if c["name"] == "profile")
    assert profile["resources"]["limits"]["nvidia.com/gpu"] == 1 and "--threads" not in profile["command"][2]
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu" and spec["serviceAccountName"] == "profiler"
    assert spec["nodeSelector"]["node.kubernetes.io/instance-type"] == "g5.xlarge"
    upload = spec["containers"][0]
    dest = next(e["value"] for e in upload["env"] if e["name"] == "OPTISERVE_DEST")
    assert dest == f"s3://bucket/runs/{plan['plan_id']}/cnn/aws-g5.xlarge"
    assert j.job["spec"]["activeDeadlineSeconds"] == 3600
    written = yaml.safe_load((tmp_path / f"{j.name}.yaml").read_text())
    validate_k8s(written, "1.35")  # the file on disk, not just the object
    written["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"bad": 1}
    with pytest.raises(ManifestError, match="fails the Kubernetes"):
        validate_k8s(written, "1.35")


@pytest.mark.parametrize("store", ["results/x", "ftp://host/x", "s3://"])
def test_a_bad_store_is_one_line(store: str) -> None:
    with pytest.raises(UsageError, match="--store"):
        FanoutOptions(store)


def test_nothing_transferred_means_nothing_to_fan_out(setup: tuple[Path, Path, dict[str, Any]]) -> None:
    _, _, plan = setup
    measured = copy.deepcopy(plan)
    for p in _placements(measured):
        p["provenance"]["latency"] = "simulated from measured service times"
    assert picks(measured, 3) == []
    with pytest.raises(UsageError, match="nothing to measure"):
        fanout(measured, FanoutOptions("pvc://r/x"), Path("/nonexistent-not-written"))


def test_cli_writes_jobs_and_bad_input_is_one_line(
    setup: tuple[Path, Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)  # the default -o of gather is ./gathered: a refusal must not make it

    from optiserve.cli import app
    from optiserve.plan.result import write_plan

    _, _, plan = setup
    write_plan(plan, tmp_path / "plan.json")
    runner = CliRunner()
    ok = runner.invoke(app, ["fanout", str(tmp_path / "plan.json"), "--store", "pvc://r/x", "-o", str(tmp_path / "j")])
    assert ok.exit_code == 0, ok.output
    # one Job per instance type, top 3 by default: Emerald Rapids has only two catalog entries
    want = len(picks(plan, FanoutOptions("pvc://r/x").top))
    assert want >= 2 and len(list((tmp_path / "j").glob("*.yaml"))) == want and "kubectl apply" in ok.output
    for args in (
        ["fanout", str(tmp_path / "plan.json"), "--store", "ftp://r/x"],
        ["fanout", str(tmp_path / "nope.json"), "--store", "pvc://r/x"],
        ["gather", str(tmp_path / "nowhere")],
        ["gather", str(tmp_path / "j")],  # Job files, but no results in it
    ):
        bad = runner.invoke(app, args)
        assert bad.exit_code == 2 and "Traceback" not in bad.output and bad.output.count("error:") == 1, bad.output
    assert not (tmp_path / "gathered").exists()  # a refused gather writes nothing (here: the default -o)
