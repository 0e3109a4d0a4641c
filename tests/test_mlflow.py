"""MLflow against a real local tracking store (SQLite): runs with metrics, artifacts and digest tags,
a registered model version, and ``models:/`` resolved with its digest checked."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from optiserve._mlflow import log_run, plan_metrics, register_chosen, resolve_models_uri
from optiserve.errors import UsageError
from optiserve.models.zoo import build_zoo

mlflow = pytest.importorskip("mlflow", reason="pip install 'optiserve[mlflow]'")
PLAN = json.loads((Path(__file__).parent / "emit" / "data" / "plan.json").read_text())


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # a SQLite store's default artifact root is ./mlruns: not the checkout's
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def plan_with_file(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    cnn = build_zoo(tmp_path, ["cnn"])[0]
    sha = hashlib.sha256(cnn.read_bytes()).hexdigest()
    plan = copy.deepcopy(PLAN)
    plan["models"] = plan["models"][:1]
    plan["models"][0]["chosen"]["artifact"] = {"kind": "model", "precision": "fp32", "path": str(cnn), "sha256": sha}
    return plan, cnn


def test_a_plan_run_has_its_metrics_artifacts_and_digests(
    store: str, tmp_path: Path, plan_with_file: tuple[dict[str, Any], Path]
) -> None:
    plan, _ = plan_with_file
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    params, metrics, tags = plan_metrics(plan)
    rid = log_run(store, "plan", params, metrics, [plan_file], tags)
    run = mlflow.MlflowClient(store).get_run(rid)
    chosen = plan["models"][0]["chosen"]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["cnn.p99_ms"] == pytest.approx(chosen["at_target"]["p99_ms"])
    assert run.data.metrics["cnn.cost_usd_per_hour"] == pytest.approx(chosen["cost_usd_per_hour"])
    assert run.data.params["cnn.instance_type"] == f"{chosen['provider']}:{chosen['instance_type']}"
    assert run.data.tags["optiserve.variant_sha256.cnn"] == chosen["artifact"]["sha256"]
    assert run.data.tags["optiserve.plan_id"] == plan["plan_id"]
    assert [a.path for a in mlflow.MlflowClient(store).list_artifacts(rid)] == ["plan.json"]


def test_the_chosen_variant_registers_and_resolves_by_digest(
    store: str, tmp_path: Path, plan_with_file: tuple[dict[str, Any], Path]
) -> None:
    plan, cnn = plan_with_file
    params, metrics, tags = plan_metrics(plan)
    rid = log_run(store, "plan", params, metrics, [], tags)
    version = register_chosen(store, plan, rid, "cnn-prod")
    mv = mlflow.MlflowClient(store).get_model_version("cnn-prod", str(version))
    assert mv.tags["optiserve.sha256"] == plan["models"][0]["chosen"]["artifact"]["sha256"]
    assert mv.tags["optiserve.plan_id"] == plan["plan_id"]
    got = resolve_models_uri(f"models:/cnn-prod/{version}", store, tmp_path / "dl")
    assert got.read_bytes() == cnn.read_bytes()
    # a version whose tag names other bytes is refused after download
    mlflow.MlflowClient(store).set_model_version_tag("cnn-prod", str(version), "optiserve.sha256", "0" * 64)
    with pytest.raises(UsageError, match="refusing"):
        resolve_models_uri(f"models:/cnn-prod/{version}", store, tmp_path / "dl2")
    with pytest.raises(UsageError, match="no such model version"):
        resolve_models_uri("models:/cnn-prod/99", store)
    with pytest.raises(UsageError, match="expected models:/NAME/VERSION"):
        resolve_models_uri("models:/cnn-prod/latest", store)


def test_a_models_uri_is_a_model_argument(
    store: str, plan_with_file: tuple[dict[str, Any], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from optiserve.models.zoo import resolve_model

    plan, cnn = plan_with_file
    params, metrics, tags = plan_metrics(plan)
    version = register_chosen(store, plan, log_run(store, "plan", params, metrics, [], tags), "cnn")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(UsageError, match="give --mlflow"):
        resolve_model(f"models:/cnn/{version}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert resolve_model(f"models:/cnn/{version}").read_bytes() == cnn.read_bytes()
