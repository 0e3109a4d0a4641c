"""SLO alerts and the canary gate: the plan's numbers in real PromQL, validated by the CRD schemas npm ships.

The schemas are the ``@kubernetes-models`` npm packages (``make crd-schemas``); the
PromQL is parsed by ``promql-parser`` (a port of Prometheus' own parser).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from optiserve.cli import app
from optiserve.emit import EmitOptions, emit
from optiserve.emit.crd_schemas import CRDError, unavailable_reason, validate_crds
from optiserve.emit.validate import validate_object

HERE = Path(__file__).parent
PLAN = json.loads((HERE / "data" / "plan.json").read_text())
URIS = {"cnn": "https://models.example.com/cnn.onnx", "cnn-gpu": "oci://registry.example.com/models/cnn@sha256:0123"}
pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


def _docs(path: Path) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def _parse(expr: str) -> Any:
    promql_parser = pytest.importorskip("promql_parser")
    return promql_parser.parse(expr.replace("{{args.canary-hash}}", "6d4f8b9c7"))


def test_alerts_carry_the_plans_targets_and_validate(tmp_path: Path) -> None:
    emit(PLAN, ["alerts"], tmp_path, EmitOptions(model_uris=URIS))
    docs = _docs(tmp_path / "alerts" / "cnn.yaml")
    assert set(docs) == {"PodMonitor", "PrometheusRule"}
    rules = {r["alert"]: r for r in docs["PrometheusRule"]["spec"]["groups"][0]["rules"]}
    target_s = PLAN["models"][0]["sla"]["p99_ms"] / 1e3
    p99 = rules["OptiserveP99AboveTarget"]["expr"]
    assert p99.endswith(f"> {target_s:g}") and "optiserve_request_latency_seconds_bucket" in p99
    assert rules["OptiserveErrorRatioAboveBudget"]["expr"].endswith("> 0.001")
    assert rules["OptiserveQueueNear503"]["expr"].endswith("> 204.8")  # 80% of serve's 256-request bound
    for r in rules.values():
        _parse(r["expr"])  # real PromQL, as Prometheus parses it
    labels = docs["PodMonitor"]["spec"]["podTargetLabels"]
    assert {"app.kubernetes.io/name", "optiserve.io/track", "rollouts-pod-template-hash"} <= set(labels)
    gpu_rule = _docs(tmp_path / "alerts" / "cnn-gpu.yaml")["PrometheusRule"]
    other = {r["alert"]: r for r in gpu_rule["spec"]["groups"][0]["rules"]}
    want = PLAN["models"][1]["sla"]["p99_ms"] / 1e3
    assert other["OptiserveP99AboveTarget"]["expr"].endswith(f"> {want:g}")


def test_argo_canary_is_gated_by_the_plans_p99_and_error_budget(tmp_path: Path) -> None:
    emit(PLAN, ["k8s"], tmp_path, EmitOptions(model_uris=URIS, canary="argo"))
    docs = _docs(tmp_path / "k8s" / "cnn.yaml")
    analysis = docs["Rollout"]["spec"]["strategy"]["canary"]["analysis"]
    assert analysis["templates"] == [{"templateName": "cnn-slo"}]
    assert analysis["args"][0]["valueFrom"] == {"podTemplateHashValue": "Latest"}
    template = docs["AnalysisTemplate"]
    assert template["metadata"]["name"] == "cnn-slo" and "PodMonitor" in docs
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    target_s = PLAN["models"][0]["sla"]["p99_ms"] / 1e3
    assert metrics["p99-latency"]["successCondition"].endswith(f"result[0] <= {target_s:g}")
    assert metrics["error-ratio"]["successCondition"].endswith("result[0] <= 0.001")
    for m in metrics.values():
        query = m["provider"]["prometheus"]["query"]
        assert 'rollouts_pod_template_hash="{{args.canary-hash}}"' in query  # the canary's pods only
        _parse(query)


@pytest.mark.parametrize(
    ("kind", "mutate", "where"),
    [
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update({"for": "ten minutes"}), "rules.0.for"),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][1].pop("expr"), "rules.1"),
        ("AnalysisTemplate", lambda o: o["spec"]["metrics"][0].update({"successCondition": 1}), "0.successCondition"),
        ("AnalysisTemplate", lambda o: o["spec"]["metrics"][1].pop("provider"), "metrics.1"),
        ("Rollout", lambda o: o["spec"]["strategy"]["canary"]["analysis"].update({"templates": "cnn"}), "analysis"),
        ("PodMonitor", lambda o: o["spec"].update({"podTargetLabels": "app"}), "podTargetLabels"),
    ],
)
def test_the_crd_schemas_refuse_a_broken_object(tmp_path: Path, kind: str, mutate: Any, where: str) -> None:
    emit(PLAN, ["k8s", "alerts"], tmp_path, EmitOptions(model_uris=URIS, canary="argo"))
    docs = {**_docs(tmp_path / "k8s" / "cnn.yaml"), **_docs(tmp_path / "alerts" / "cnn.yaml")}
    broken = copy.deepcopy(docs[kind])
    validate_crds([broken])  # valid as emitted
    mutate(broken)
    with pytest.raises(CRDError, match=rf"{kind}/.*@kubernetes-models/.* schema at .*{where}"):
        validate_object(broken, "1.35")


def test_emit_cli_names_the_schema_versions(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["emit", str(HERE / "data" / "plan.json"), "--target", "alerts", "-o", str(tmp_path / "d")]
    )
    assert res.exit_code == 0, res.output
    assert "@kubernetes-models/prometheus-operator@6.0.0" in res.output
    assert (tmp_path / "d" / "alerts" / "cnn.yaml").is_file()
