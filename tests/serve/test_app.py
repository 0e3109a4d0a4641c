"""The server in-process (Starlette's TestClient runs the lifespan: warm-up included)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from starlette.testclient import TestClient

from optiserve.models.graph import InputSpec
from optiserve.serve.app import ServeConfig, app_for_model, create_app


@pytest.fixture
def client(mlp_path: Path):  # type: ignore[no-untyped-def]
    app = app_for_model(mlp_path, "fp32", 1, ServeConfig("mlp", max_batch=4, max_delay_ms=1.0, max_body_bytes=100_000))
    with TestClient(app) as c:
        yield c


def _req(rows: int = 1, **over: object) -> dict[str, object]:
    x = np.random.default_rng(0).standard_normal((rows, 64)).astype(np.float32)
    t = {"name": "features", "shape": [rows, 64], "datatype": "FP32", "data": x.reshape(-1).tolist(), **over}
    return {"id": "r1", "inputs": [t]}


def test_health_metadata_and_infer(client: TestClient, mlp_path: Path) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/mlp/ready").json()["ready"] is True
    meta = client.get("/v2/models/mlp").json()
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"][0]["name"] == "logits" and meta["parameters"]["max_batch"] == 4
    body = _req(rows=3)
    r = client.post("/v2/models/mlp/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "r1" and out["model_name"] == "mlp"
    (o,) = out["outputs"]
    assert o["shape"] == [3, 10] and o["datatype"] == "FP32"
    x = np.asarray(body["inputs"][0]["data"], np.float32).reshape(3, 64)  # type: ignore[index]
    want = ort.InferenceSession(str(mlp_path)).run(None, {"features": x})[0]
    np.testing.assert_allclose(np.asarray(o["data"]).reshape(3, 10), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "content,status,message",
    [
        (b"{not json", 400, "malformed JSON"),
        (json.dumps({"inputs": []}).encode(), 400, "missing ['features']"),
        (json.dumps(_req(datatype="INT64")).encode(), 400, "the model takes FP32"),
        (json.dumps(_req(shape=[1, 63])).encode(), 400, "the model takes ['batch', 64]"),
        (json.dumps(_req(data=[1.0, 2.0])).encode(), 400, "2 values for shape [1, 64]"),
        (json.dumps(_req(data=["a"] * 64)).encode(), 400, "not FP32"),
        (json.dumps(_req(rows=5)).encode(), 400, "exceeds the server's max batch of 4"),
        (b"x" * 200_000, 413, "exceeds the limit"),
    ],
)
def test_bad_requests_are_4xx_and_the_server_goes_on(
    client: TestClient, content: bytes, status: int, message: str
) -> None:
    r = client.post("/v2/models/mlp/infer", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == status and message in r.json()["error"], r.text
    assert client.post("/v2/models/mlp/infer", json=_req()).status_code == 200


def test_unknown_model_is_404(client: TestClient) -> None:
    assert client.post("/v2/models/gpt/infer", json=_req()).status_code == 404
    assert client.get("/v2/models/gpt").status_code == 404


def test_metrics(client: TestClient) -> None:
    for _ in range(3):
        client.post("/v2/models/mlp/infer", json=_req())
    client.post("/v2/models/mlp/infer", content=b"{")
    text = client.get("/metrics").text
    assert 'optiserve_requests_total{status="200"} 3.0' in text
    assert 'optiserve_requests_total{status="400"} 1.0' in text
    for name in ("optiserve_request_latency_seconds_bucket", "optiserve_batch_size_bucket", "optiserve_queue_depth"):
        assert name in text


def test_overload_is_503_not_a_crash() -> None:
    def slow(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        time.sleep(0.05)
        return [feeds["x"] * 2]

    spec = [InputSpec("x", "float32", ("batch", 2))]
    app = create_app(
        slow,
        spec,
        ["y"],
        ServeConfig("toy", max_batch=1, max_delay_ms=0, max_queue=2),
        lambda b: {"x": np.zeros((b, 2), np.float32)},
    )
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    codes: list[int] = []
    with TestClient(app) as c:
        threads = [
            threading.Thread(target=lambda: codes.append(c.post("/v2/models/toy/infer", json=body).status_code))
            for _ in range(12)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes.count(503) >= 1 and codes.count(200) >= 2 and set(codes) <= {200, 503}
        r = c.post("/v2/models/toy/infer", json=body)  # still serving afterwards
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2.0, 4.0]
        assert "overloaded" in c.get("/metrics").text or codes.count(503) >= 1
