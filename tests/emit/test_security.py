"""Who can reach an emitted server: NetworkPolicies, TLS and token Secrets, the gRPC port."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from optiserve.emit import EmitOptions, render
from optiserve.emit.validate import ManifestError, validate_object
from optiserve.errors import UsageError

PLAN = json.loads((Path(__file__).parent / "data" / "plan.json").read_text())
URIS = {"cnn": "https://models.example.com/cnn.onnx", "cnn-gpu": "oci://registry.example.com/models/cnn@sha256:0123"}
SECURED = {"grpc_port": 8001, "tls_secret": "cnn-tls", "token_secret": "cnn-token", "allow_namespaces": ("ingress",)}


def _objects(targets: list[str], **kw: Any) -> dict[tuple[str, str], dict[str, Any]]:
    _, objs = render(PLAN, targets, EmitOptions(model_uris=URIS, **kw))
    for o in objs:
        validate_object(o, "1.35")  # what emit does before writing: every object passes the strict schemas
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def test_plain_manifests_bind_all_addresses_and_are_fenced_to_the_namespace() -> None:
    by = _objects(["k8s"])
    server = by[("Deployment", "cnn")]["spec"]["template"]["spec"]["containers"][0]
    assert server["args"][server["args"].index("--host") + 1] == "0.0.0.0"
    assert not {"--tls-cert", "--token-file", "--grpc-port"} & set(server["args"])
    policy = by[("NetworkPolicy", "cnn")]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "cnn"}  # stable and canary pods
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {}}]  # this namespace's pods only
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_secrets_are_mounted_read_only_and_passed_to_the_server() -> None:
    by = _objects(["k8s"], **SECURED)
    for name in ("cnn", "cnn-canary"):
        pod = by[("Deployment", name)]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        args = c["args"]
        flags = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
        assert flags["--grpc-port"] == "8001"
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for vol, secret, flag, key in (
            ("tls", "cnn-tls", "--tls-cert", "tls.crt"),
            ("tls", "cnn-tls", "--tls-key", "tls.key"),
            ("token", "cnn-token", "--token-file", "token"),
        ):
            assert volumes[vol]["secret"]["secretName"] == secret and volumes[vol]["secret"]["defaultMode"] == 0o440
            assert mounts[vol]["readOnly"] is True
            assert flags[flag] == f"{mounts[vol]['mountPath']}/{key}"  # the flag points into the mounted Secret
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 8001, "health": 8002}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["scheme"] == "HTTPS"  # the server speaks TLS only
    ports = {p["name"]: p for p in by[("Service", "cnn")]["spec"]["ports"]}
    assert ports["grpc"]["port"] == 8001 and ports["grpc"]["targetPort"] == "grpc" and ports["http"]["port"] == 80
    (rule,) = by[("NetworkPolicy", "cnn")]["spec"]["ingress"]
    assert {p["port"] for p in rule["ports"]} == {"http", "grpc"}
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}} in rule["from"]


def test_argo_rollout_carries_the_same_secrets() -> None:
    by = _objects(["k8s"], canary="argo", **SECURED)
    c = by[("Rollout", "cnn")]["spec"]["template"]["spec"]["containers"][0]
    assert "--token-file" in c["args"] and {m["name"] for m in c["volumeMounts"]} >= {"tls", "token"}


def test_kserve_predictor_is_fenced_but_lets_knative_in() -> None:
    by = _objects(["kserve"], allow_namespaces=("ingress",))
    policy = by[("NetworkPolicy", "cnn-kserve")]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": "cnn"}
    (rule,) = policy["ingress"]
    names = {s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in rule["from"][1:]}
    assert names == {"ingress", "knative-serving", "istio-system"} and rule["from"][0] == {"podSelector": {}}
    assert "ports" not in rule  # the queue-proxy's ports are Knative's to choose


def test_a_broken_network_policy_fails_validation() -> None:
    policy = _objects(["k8s"])[("NetworkPolicy", "cnn")]
    broken = copy.deepcopy(policy)
    broken["spec"]["ingress"][0]["ports"][0]["protocol"] = 6
    with pytest.raises(ManifestError, match=r"NetworkPolicy/cnn fails .* spec\.ingress\.0\.ports\.0\.protocol"):
        validate_object(broken, "1.35")


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"tls_secret": "Bad_Name"}, "--tls-secret 'Bad_Name' is not a Kubernetes Secret name"),
        ({"token_secret": "-x"}, "--token-secret '-x'"),
        ({"allow_namespaces": ("a.b",)}, "--allow-namespace 'a.b'"),
        ({"grpc_port": 8000}, "other than the HTTP port"),
        ({"grpc_port": 70000}, "--grpc-port 70000"),
    ],
)
def test_bad_security_options_are_one_line(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        EmitOptions(model_uris=URIS, **kw)


def test_emit_cli_passes_the_security_flags(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from optiserve.cli import app

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    uris = [a for m, u in URIS.items() for a in ("--model-uri", f"{m}={u}")]
    flags = ["--grpc-port", "8001", "--tls-secret", "cnn-tls", "--token-secret", "cnn-token"]
    flags += ["--allow-namespace", "ingress", "--allow-namespace", "monitoring"]
    r = CliRunner().invoke(app, ["emit", str(plan), "--target", "k8s", "-o", str(tmp_path / "out"), *uris, *flags])
    assert r.exit_code == 0, r.output
    objs = list(yaml.safe_load_all((tmp_path / "out" / "k8s" / "cnn.yaml").read_text()))
    (policy,) = [o for o in objs if o["kind"] == "NetworkPolicy"]
    allowed = [
        s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for s in policy["spec"]["ingress"][0]["from"][1:]
    ]
    assert allowed == ["ingress", "monitoring"]
    (dep,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "cnn"]
    assert "--token-file" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    bad = CliRunner().invoke(app, ["emit", str(plan), "-o", str(tmp_path / "x"), *uris, "--tls-secret", "No_Good"])
    assert bad.exit_code != 0 and "is not a Kubernetes Secret name" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "x").exists()


def test_a_plan_for_grpc_clients_is_emitted_serving_grpc(tmp_path: Path) -> None:
    """The plan charged gRPC's serving cost (SLA ``encoding: grpc``): the Deployment serves gRPC too."""
    import yaml
    from typer.testing import CliRunner

    from optiserve.cli import app

    doc = copy.deepcopy(PLAN)
    for m in doc["models"]:
        if m.get("chosen"):
            m["chosen"]["client_encoding"] = "grpc"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(doc))
    uris = [a for m, u in URIS.items() for a in ("--model-uri", f"{m}={u}")]
    r = CliRunner().invoke(app, ["emit", str(plan), "--target", "k8s", "-o", str(tmp_path / "out"), *uris])
    assert r.exit_code == 0, r.output
    assert "planned for gRPC clients: serving gRPC on port 8001" in r.output
    objs = list(yaml.safe_load_all((tmp_path / "out" / "k8s" / "cnn.yaml").read_text()))
    (dep,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "cnn"]
    server = dep["spec"]["template"]["spec"]["containers"][0]
    assert server["args"][server["args"].index("--grpc-port") + 1] == "8001"
    assert "grpc" in {p["name"] for p in server["ports"]}
