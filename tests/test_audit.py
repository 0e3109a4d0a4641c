"""The audit trail: plan, emit and verify each append one line with the digests of what they read and wrote."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from optiserve._audit import read_log
from optiserve.cli import app
from optiserve.models.zoo import build_zoo

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "reference" / "cnn-default"
SLA = """
defaults: {regions: [EU], headroom: 0.2}
models:
  cnn: {profile: PROFILE, model: MODEL, rate: 150, peak_factor: 1.5, p99_ms: 60, max_accuracy_drop: 0.01}
search: {max_delay_ms: [0, 2], instances: [1]}
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "audit.jsonl"
    monkeypatch.setenv("OPTISERVE_AUDIT_LOG", str(path))
    return path


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, list[dict[str, Any]]]:
    """A real plan from the reference profile, made by the CLI with its own audit log."""
    work = tmp_path_factory.mktemp("audit-plan")
    cnn = build_zoo(work, ["cnn"])[0]
    sla = work / "sla.yaml"
    sla.write_text(SLA.replace("MODEL", str(cnn)).replace("PROFILE", str(PROFILE)))
    plan = work / "plan.json"
    mp = pytest.MonkeyPatch()
    mp.setenv("OPTISERVE_AUDIT_LOG", str(work / "plan-audit.jsonl"))
    try:
        res = CliRunner().invoke(
            app, ["plan", "--sla", str(sla), "--trials", "4", "--requests", "2000", "-o", str(plan)]
        )
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    return cnn, sla, plan, read_log(work / "plan-audit.jsonl")


def test_plan_records_its_inputs_outputs_and_binding_constraint(
    planned: tuple[Path, Path, Path, list[dict[str, Any]]],
) -> None:
    cnn, sla, plan, lines = planned
    assert len(lines) == 1
    line, doc = lines[0], json.loads(plan.read_text())
    assert line["command"] == "plan" and line["plan_id"] == doc["plan_id"]
    assert line["inputs"]["sla"] == _sha(sla)
    assert line["inputs"]["model:cnn"] == _sha(cnn)
    assert line["inputs"]["profile:cnn"] == _sha(PROFILE / "profile.parquet")
    assert line["inputs"]["catalog"] == doc["inputs"]["catalog"]["sha256"]
    assert line["outputs"] == {str(plan): _sha(plan)}
    chosen = doc["models"][0]["chosen"]
    decision = line["decision"][0]
    assert decision["binding_constraint"] == chosen["binding_constraint"] and decision["binding_constraint"]
    assert decision["placement"] == f"{chosen['provider']}:{chosen['instance_type']}"
    assert dt.datetime.fromisoformat(line["time"]).utcoffset() == dt.timedelta(0)
    assert line["user"] and line["host"]


def test_emit_records_the_plan_digest_and_every_file_and_annotates_the_objects(
    planned: tuple[Path, Path, Path, list[dict[str, Any]]], tmp_path: Path, log: Path
) -> None:
    _, _, plan, _ = planned
    out = tmp_path / "deploy"
    res = CliRunner().invoke(app, ["emit", str(plan), "--target", "k8s", "-o", str(out)])
    assert res.exit_code == 0, res.output
    (line,) = read_log(log)
    assert line["command"] == "emit" and line["inputs"]["plan"] == _sha(plan)
    written = sorted(out.rglob("*.yaml"))
    assert written and line["outputs"] == {str(p): _sha(p) for p in written}
    for obj in yaml.safe_load_all(written[0].read_text()):
        notes = obj["metadata"]["annotations"]
        assert json.loads(notes["optiserve.io/audit-inputs"]) == line["inputs"]
        assert notes["optiserve.io/audit-time"] == line["time"]
        assert json.loads(notes["optiserve.io/audit-decision"]) == line["decision"]


def test_verify_records_its_verdict_and_report(
    planned: tuple[Path, Path, Path, list[dict[str, Any]]],
    tmp_path: Path,
    log: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wiring only (the real run is tests/serve/test_verify.py): a canned verify that writes its report."""
    _, _, plan, _ = planned

    def fake_verify(plan_doc: dict[str, Any], files: Any, duration: float, output: Path) -> dict[str, Any]:
        doc = {"verdict": "fail", "models": []}
        output.mkdir(parents=True, exist_ok=True)
        (output / "verify.json").write_text(json.dumps(doc))
        return doc

    monkeypatch.setattr("optiserve.serve.verify.verify_plan", fake_verify)
    res = CliRunner().invoke(app, ["verify", str(plan), "-o", str(tmp_path / "v")])
    assert res.exit_code == 1
    (line,) = read_log(log)
    assert line["command"] == "verify" and line["result"] == {"verdict": "fail"}
    assert line["inputs"]["plan"] == _sha(plan)
    assert line["outputs"] == {str(tmp_path / "v" / "verify.json"): _sha(tmp_path / "v" / "verify.json")}


def test_an_unwritable_log_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("OPTISERVE_AUDIT_LOG", str(tmp_path / "file" / "audit.jsonl"))
    plan = REPO / "tests" / "emit" / "data" / "plan.json"
    res = CliRunner().invoke(app, ["emit", str(plan), "--target", "k8s", "-o", str(tmp_path / "d")])
    assert res.exit_code != 0 and "cannot append to the audit log" in res.output and "Traceback" not in res.output
