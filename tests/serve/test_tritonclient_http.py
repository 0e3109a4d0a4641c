"""The REST surface as Triton's own HTTP client sees it (``tritonclient.http``, a peer nobody here wrote)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from optiserve.serve.app import ServeConfig, app_for_model
from tests.serve.live_server import live_server


@pytest.fixture(scope="module")
def client(mlp_path: Path) -> Iterator[httpclient.InferenceServerClient]:
    app = app_for_model(mlp_path, "fp32", 1, ServeConfig("mlp", max_batch=4, max_delay_ms=1.0, instances=2))
    with live_server(app) as port:
        c = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        yield c
        c.close()


def _x(rows: int = 2) -> np.ndarray:
    return np.random.default_rng(rows).standard_normal((rows, 64)).astype(np.float32)


def _want(mlp_path: Path, x: np.ndarray) -> np.ndarray:
    return np.asarray(ort.InferenceSession(str(mlp_path)).run(None, {"features": x})[0])


def test_server_and_model_metadata_and_readiness(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "optiserve" and {"binary_tensor_data", "statistics"} <= set(meta["extensions"])
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", model_version="1")
    assert not client.is_model_ready("mlp", model_version="2") and not client.is_model_ready("gpt")
    m = client.get_model_metadata("mlp", model_version="1")
    assert m["inputs"][0] == {"name": "features", "datatype": "FP32", "shape": [-1, 64]}
    index = client.get_model_repository_index()
    assert index == [{"name": "mlp", "version": "1", "state": "READY", "reason": ""}]


def test_model_config_is_tritons_json_form(client: httpclient.InferenceServerClient) -> None:
    cfg = client.get_model_config("mlp")
    assert cfg["platform"] == "onnxruntime_onnx" and cfg["max_batch_size"] == 4
    assert cfg["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": [64]}]
    assert cfg["output"][0]["dims"] == [10] and cfg["instance_group"][0]["count"] == 2
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 1000
    # what protobuf's JSON parser makes of it is Triton's own ModelConfig message
    mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import json_format

    msg = json_format.ParseDict(cfg, mc.ModelConfig())
    assert msg.input[0].data_type == mc.TYPE_FP32 and msg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("version", ["", "1"])
def test_infer_json_and_binary(
    client: httpclient.InferenceServerClient, mlp_path: Path, binary: bool, version: str
) -> None:
    x = _x(3)
    inp = httpclient.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("logits", binary_data=binary)
    r = client.infer("mlp", [inp], model_version=version, outputs=[out], request_id="7")
    assert r.get_response()["id"] == "7"
    np.testing.assert_allclose(r.as_numpy("logits"), _want(mlp_path, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_and_responses(
    client: httpclient.InferenceServerClient, mlp_path: Path, algorithm: str
) -> None:
    x = _x(2)
    inp = httpclient.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    r = client.infer("mlp", [inp], request_compression_algorithm=algorithm, response_compression_algorithm=algorithm)
    np.testing.assert_allclose(r.as_numpy("logits"), _want(mlp_path, x), rtol=1e-5, atol=1e-5)


def test_statistics_count_what_ran(client: httpclient.InferenceServerClient) -> None:
    before = client.get_inference_statistics("mlp")["model_stats"][0]
    x = _x(2)
    inp = httpclient.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    for _ in range(3):
        client.infer("mlp", [inp])
    after = client.get_inference_statistics("mlp", model_version="1")["model_stats"][0]
    s0, s1 = before["inference_stats"], after["inference_stats"]
    assert s1["success"]["count"] - s0["success"]["count"] == 3
    assert after["inference_count"] - before["inference_count"] == 6  # rows
    assert s1["queue"]["count"] - s0["queue"]["count"] == 3 and s1["compute_infer"]["ns"] > s0["compute_infer"]["ns"]
    assert after["batch_stats"] and all(b["compute_infer"]["count"] >= 1 for b in after["batch_stats"])
    assert client.get_inference_statistics()["model_stats"][0]["name"] == "mlp"


def test_refusals_are_client_errors(client: httpclient.InferenceServerClient) -> None:
    x = _x(5)  # over the max batch of 4
    inp = httpclient.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="exceeds the server's max batch"):
        client.infer("mlp", [inp])
    with pytest.raises(InferenceServerException, match="unknown version"):
        client.infer("mlp", [inp], model_version="3")
