"""KServe for a plan on ``openvino``: the OpenVINO Model Server runtime, sized as ``serve`` compiles it, validated.

Regenerate the golden file after an intended change with OPTISERVE_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from optiserve.emit import EmitOptions, emit, render
from optiserve.emit.validate import ManifestError, validate_object
from optiserve.models.zoo import build_zoo

HERE = Path(__file__).parent
GOLDEN = HERE / "golden" / "kserve-openvino" / "cnn.yaml"


def _plan(**chosen: Any) -> dict[str, Any]:
    """The example plan's CPU model placed on openvino (two instances of one thread, batching to 8)."""
    doc: dict[str, Any] = copy.deepcopy(json.loads((HERE / "data" / "plan.json").read_text()))
    doc["models"] = doc["models"][:1]
    doc["inputs"]["profiles"] = doc["inputs"]["profiles"][:1]
    placed = {"runtime": "openvino", "precision": "fp32", "max_batch": 8, "instances_per_pod": 2}
    doc["models"][0]["chosen"].update({**placed, "threads_per_instance": 1, **chosen})
    return doc


def _opts() -> EmitOptions:
    return EmitOptions(model_uris={"cnn": "s3://models/triton/cnn"})


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zoo(tmp_path_factory.mktemp("cnn"), ["cnn"])[0]


def test_golden_inference_service_on_ovms(tmp_path: Path, cnn: Path) -> None:
    written = emit(_plan(), ["kserve"], tmp_path, _opts(), {"cnn": cnn})  # emit validates before writing
    text = (tmp_path / "kserve" / "cnn.yaml").read_text()
    assert tmp_path / "kserve" / "cnn.yaml" in written
    if os.environ.get("OPTISERVE_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert GOLDEN.is_file(), f"no golden file {GOLDEN}: run with OPTISERVE_UPDATE_GOLDEN=1"
    assert text == GOLDEN.read_text()


def test_ovms_gets_the_planned_streams_requests_and_precision() -> None:
    _, objs = render(_plan(precision="bf16", instances_per_pod=3, threads_per_instance=2), ["kserve"], _opts())
    isvc = objs[0]
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == "kserve-ovms" and model["modelFormat"] == {"name": "openvino", "version": "1"}
    assert model["protocolVersion"] == "v2" and model["storageUri"] == "s3://models/triton/cnn"
    flags = dict(a.removeprefix("--").split("=", 1) for a in model["args"])
    plugin = json.loads(flags["plugin_config"])
    assert plugin["NUM_STREAMS"] == "3" and flags["nireq"] == "3"  # one stream and one request per instance
    assert plugin["INFERENCE_NUM_THREADS"] == "6" and plugin["INFERENCE_PRECISION_HINT"] == "bf16"
    assert model["securityContext"]["readOnlyRootFilesystem"] is True  # OVMS writes nothing under its root
    assert "OVMS runs each request alone" in isvc["metadata"]["annotations"]["optiserve.io/batching"]


def test_ort_plans_keep_triton() -> None:
    _, objs = render(_plan(runtime="onnxruntime-cpu"), ["kserve"], _opts())
    model = objs[0]["spec"]["predictor"]["model"]
    assert model["runtime"] == "kserve-tritonserver" and "args" not in model
    assert "optiserve.io/batching" not in objs[0]["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.__setitem__("args", "--nireq=3"), "args"),
        (lambda m: m["modelFormat"].__setitem__("versions", "1"), "unknown field 'versions'"),
    ],
)
def test_kserve_sdk_validation_bites_on_the_ovms_predictor(mutate: Any, message: str) -> None:
    _, objs = render(_plan(), ["kserve"], _opts())
    isvc = copy.deepcopy(objs[0])
    validate_object(isvc, "1.35")
    mutate(isvc["spec"]["predictor"]["model"])
    with pytest.raises(ManifestError, match=message):
        validate_object(isvc, "1.35")


def test_the_golden_file_is_one_inference_service_and_its_network_policy() -> None:
    docs = list(yaml.safe_load_all(GOLDEN.read_text()))
    assert [d["kind"] for d in docs] == ["InferenceService", "NetworkPolicy"]
