"""Golden files per target, validation that bites, digest refusal, and the CLI.

Regenerate the golden files after an intended change with OPTISERVE_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from optiserve.cli import app
from optiserve.emit import EmitOptions, emit, k8s, render
from optiserve.emit.validate import ManifestError, validate_object, validate_triton_config
from optiserve.errors import UsageError
from optiserve.models.zoo import build_zoo

HERE = Path(__file__).parent
PLAN = json.loads((HERE / "data" / "plan.json").read_text())
GOLDEN = HERE / "golden"
URIS = {"cnn": "https://models.example.com/cnn.onnx", "cnn-gpu": "oci://registry.example.com/models/cnn@sha256:0123"}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zoo(tmp_path_factory.mktemp("cnn"), ["cnn"])[0]


def _opts(**kw: Any) -> EmitOptions:
    return EmitOptions(model_uris=URIS, **kw)


@pytest.mark.parametrize("target", ["k8s", "kserve", "triton"])
def test_golden_files(tmp_path: Path, cnn: Path, target: str) -> None:
    written = emit(PLAN, [target], tmp_path, _opts(), {"cnn": cnn, "cnn-gpu": cnn})
    texts = {p.relative_to(tmp_path).as_posix(): p for p in written if p.suffix in (".yaml", ".pbtxt")}
    assert texts, written
    for rel, path in texts.items():
        golden = GOLDEN / rel
        if os.environ.get("OPTISERVE_UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(path.read_text())
        assert golden.is_file(), f"no golden file {golden}: run with OPTISERVE_UPDATE_GOLDEN=1"
        assert path.read_text() == golden.read_text(), rel
    if target == "triton":
        # fp16 on a GPU ships the fp32 graph (TensorRT builds fp16); int8 on a CPU ships the quantised graph
        assert (tmp_path / "triton/cnn-gpu/1/model.onnx").read_bytes() == cnn.read_bytes()
        int8 = (tmp_path / "triton/cnn/1/model.onnx").read_bytes()
        assert int8 != cnn.read_bytes() and b"QuantizeLinear" in int8


def test_deployment_is_hardened_and_sized_by_the_plan(tmp_path: Path) -> None:
    _, objs = render(PLAN, ["k8s"], _opts())
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    dep = by[("Deployment", "cnn")]
    chosen = PLAN["models"][0]["chosen"]
    assert dep["spec"]["replicas"] == chosen["replicas"]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert c["resources"]["requests"] == c["resources"]["limits"]  # Guaranteed QoS
    assert c["resources"]["limits"]["cpu"] == f"{round(chosen['pod_vcpus'] * 1000)}m"
    assert {c["startupProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"]} == {
        "/v2/health/ready",
        "/v2/health/live",
    }
    assert pod["nodeSelector"]["node.kubernetes.io/instance-type"] == chosen["instance_type"]
    assert "--expect-sha256" in c["args"] and PLAN["inputs"]["profiles"][0]["model_sha256"] in c["args"]
    fetch = pod["initContainers"][0]
    assert "sha256sum -c" in fetch["args"][0]
    ann = dep["metadata"]["annotations"]
    for key in ("model-sha256", "profile-id", "plan-id", "predicted-p99-ms", "cost-usd-per-hour", "version"):
        assert ann[f"optiserve.io/{key}"], key
    gpu = by[("Deployment", "cnn-gpu")]["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu" and gpu["volumes"][0]["image"]["reference"]
    hpa = by[("HorizontalPodAutoscaler", "cnn-gpu")]["spec"]
    sla = PLAN["models"][1]["sla"]
    per_pod = PLAN["models"][1]["chosen"]["pod_rate_at_p99"] * (1 - sla["headroom"])
    assert hpa["minReplicas"] == min(math.ceil(sla["rate"] / per_pod), 3) and hpa["maxReplicas"] >= 3
    canary = by[("Deployment", "cnn-canary")]
    assert canary["spec"]["template"]["metadata"]["labels"]["optiserve.io/track"] == "canary"
    assert by[("Service", "cnn")]["spec"]["selector"] == {"app.kubernetes.io/name": "cnn"}


def test_argo_rollout_replaces_the_deployment_and_validates(tmp_path: Path) -> None:
    written = emit(PLAN, ["k8s"], tmp_path, _opts(canary="argo", canary_weight=20))
    objs = list(yaml.safe_load_all(written[0].read_text()))
    kinds = [o["kind"] for o in objs]
    assert "Rollout" in kinds and "Deployment" not in kinds
    rollout = objs[kinds.index("Rollout")]
    assert rollout["spec"]["strategy"]["canary"]["steps"][0] == {"setWeight": 20}
    hpa = objs[kinds.index("HorizontalPodAutoscaler")]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Rollout"
    broken = copy.deepcopy(rollout)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(ManifestError, match=r"Rollout/cnn\.spec\.template"):
        validate_object(broken, "1.35")


def test_a_broken_object_is_an_error_and_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = k8s.objects

    def broken(d: Any, opts: EmitOptions) -> list[dict[str, Any]]:
        objs = real(d, opts)
        objs[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"cores": 2}
        return objs

    monkeypatch.setattr(k8s, "objects", broken)
    out = tmp_path / "deploy"
    with pytest.raises(ManifestError, match=r"Deployment/cnn fails the Kubernetes 1.35 schema at spec.template"):
        emit(PLAN, ["k8s", "kserve"], out, _opts())
    assert not out.exists()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o["spec"]["predictor"].__setitem__("minReplicas", "two"), "minReplicas: expected an integer"),
        (lambda o: o["spec"]["predictor"]["model"].__setitem__("storageURI", "x"), "unknown field 'storageURI'"),
        (
            lambda o: o["spec"]["predictor"]["model"]["securityContext"].__setitem__("privileged", "no"),
            "securityContext",
        ),
    ],
)
def test_kserve_validation_catches(mutate: Any, message: str) -> None:
    _, objs = render(PLAN, ["kserve"], _opts())
    isvc = copy.deepcopy(objs[0])
    validate_object(isvc, "1.35")
    mutate(isvc)
    with pytest.raises(ManifestError, match=message):
        validate_object(isvc, "1.35")


# What Triton calls each ONNX element type (its model_config.proto DataType names), stated here, not imported.
_TRITON_TYPE = {np.dtype(np.float32): "TYPE_FP32", np.dtype(np.float16): "TYPE_FP16", np.dtype(np.int64): "TYPE_INT64"}


def _triton_plan() -> dict[str, Any]:
    """The example plan with knobs no default could produce: a config that drops or mis-scales one shows it."""
    doc: dict[str, Any] = copy.deepcopy(PLAN)
    cpu, gpu = doc["models"][0]["chosen"], doc["models"][1]["chosen"]
    cpu.update(max_batch=8, max_delay_ms=2.5, instances_per_pod=3, threads_per_instance=4)
    gpu.update(max_batch=16, max_delay_ms=0.75, instances_per_pod=2)
    return doc


@pytest.mark.parametrize(
    ("model", "kind", "accelerated"),
    [("cnn", "KIND_CPU", None), ("cnn-gpu", "KIND_GPU", "FP16")],  # the plan: CPU int8, GPU fp16 via TensorRT
)
def test_triton_config_file_matches_the_plan_and_the_model(
    tmp_path: Path, cnn: Path, model: str, kind: str, accelerated: str | None
) -> None:
    """The written config.pbtxt, parsed by protobuf into Triton's own ModelConfig, against expectations
    stated independently: the plan's knobs, and the names, dtypes and dims of the ONNX file shipped beside it."""
    import onnx
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    plan = _triton_plan()
    emit(plan, ["triton"], tmp_path, _opts(), {"cnn": cnn, "cnn-gpu": cnn})
    repo = tmp_path / "triton" / model
    cfg = text_format.Parse((repo / "config.pbtxt").read_text(), mc.ModelConfig())
    chosen = next(m["chosen"] for m in plan["models"] if m["model"] == model)

    assert cfg.name == model and cfg.platform == "onnxruntime_onnx"  # Triton wants the folder's name
    assert cfg.max_batch_size == chosen["max_batch"]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [chosen["max_batch"]]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == chosen["max_delay_ms"] * 1000
    (group,) = cfg.instance_group
    assert group.count == chosen["instances_per_pod"] and mc.ModelInstanceGroup.Kind.Name(group.kind) == kind
    accs = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    if accelerated:
        assert [(a.name, a.parameters["precision_mode"]) for a in accs] == [("tensorrt", accelerated)]
    else:
        assert not accs and cfg.parameters["intra_op_thread_count"].string_value == str(chosen["threads_per_instance"])

    graph = onnx.load(repo / "1" / "model.onnx", load_external_data=False).graph
    weights = {i.name for i in graph.initializer}

    def expected(values: Any) -> list[tuple[str, str, list[int]]]:
        out = []
        for vi in values:
            if vi.name in weights:
                continue
            t = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            np_type = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
            out.append((vi.name, _TRITON_TYPE[np_type], dims[1:]))  # Triton batches: the batch axis is its own
        return out

    def got(tensors: Any) -> list[tuple[str, str, list[int]]]:
        return [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in tensors]

    assert got(cfg.input) == expected(graph.input) and got(cfg.output) == expected(graph.output)
    assert all(len(dims) > 0 and -1 not in dims for _, _, dims in got(cfg.input))  # the example CNN is fully static


def test_a_malformed_triton_config_is_refused() -> None:
    with pytest.raises(ManifestError, match="not a valid Triton model config"):
        validate_triton_config("max_batch_size: eight\n", "bad")


def test_digest_mismatch_is_refused(tmp_path: Path, mlp_path: Path) -> None:
    with pytest.raises(UsageError, match="not the model the plan was made for"):
        emit(PLAN, ["k8s"], tmp_path / "d", _opts(), {"cnn": mlp_path})
    assert not (tmp_path / "d").exists()


def test_infeasible_plan_and_bad_uris() -> None:
    with pytest.raises(UsageError, match="infeasible"):
        render({**PLAN, "feasible": False}, ["k8s"], _opts())
    with pytest.raises(UsageError, match="s3:// and gs:// need KServe"):
        render(PLAN, ["k8s"], EmitOptions(model_uris={"cnn": "s3://bucket/cnn.onnx"}))
    files, _ = render(PLAN, ["kserve"], EmitOptions(model_uris={"cnn": "s3://bucket/cnn.onnx"}))
    assert b"s3://bucket/cnn.onnx" in files["kserve/cnn.yaml"]
    with pytest.raises(UsageError, match="triton puts the model file"):
        render(PLAN, ["triton"], _opts())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "helm"], "valid targets"),
        (["--model-uri", "cnn"], "expected NAME=VALUE"),
        (["--model-uri", "zzz=oci://x"], "not in the plan"),
        (["--canary", "flagger"], "unknown canary mode"),
        (["--canary-weight", "100"], "between 1 and 99"),
        (["--k8s-version", "1.12"], "no bundled Kubernetes schemas"),
    ],
)
def test_emit_cli_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    plan = str(HERE / "data" / "plan.json")
    res = CliRunner().invoke(app, ["emit", plan, "--target", "k8s", "-o", str(tmp_path), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_emit_cli_writes_validated_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = CliRunner().invoke(app, ["emit", str(bad)])
    assert res.exit_code == 2 and "not JSON" in res.output
    res = CliRunner().invoke(
        app, ["emit", str(HERE / "data" / "plan.json"), "--target", "k8s,kserve", "-o", str(tmp_path / "d")]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "d" / "k8s" / "cnn.yaml").is_file() and (tmp_path / "d" / "kserve" / "cnn-gpu.yaml").is_file()


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("replicas", -1, "models[0].chosen.replicas: Input should be greater than or equal to 1 (got -1)"),
        ("pod_vcpus", 0, "models[0].chosen.pod_vcpus: Input should be greater than 0"),
        ("precision", "int3", "unknown precision 'int3'"),
        ("runtime", "vllm", "unknown runtime 'vllm'"),
    ],
)
def test_a_hand_edited_plan_is_refused(tmp_path: Path, field: str, value: object, message: str) -> None:
    doc = copy.deepcopy(PLAN)
    doc["models"][0]["chosen"][field] = value
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    res = CliRunner().invoke(app, ["emit", str(path), "--target", "k8s", "-o", str(tmp_path / "d")])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output and not (tmp_path / "d").exists()
