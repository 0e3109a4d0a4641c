"""Inputs that are not the server's fault are 4xx JSON; NaN is data, not a 500; slow or idle
connections time out; a connection flood is refused without a traceback storm."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from starlette.testclient import TestClient

from optiserve.models.graph import InputSpec
from optiserve.models.zoo import save_atomic
from optiserve.serve.app import ServeConfig, app_for_model, create_app
from optiserve.serve.server import ServerOptions
from tests.serve.live_server import live_server


@pytest.fixture(scope="module")
def log_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``y = log(x)``: NaN for a negative x, -Infinity for 0."""
    graph = helper.make_graph(
        [helper.make_node("Log", ["x"], ["y"])],
        "log",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("log") / "log.onnx"
    save_atomic(model, path)
    return path


@pytest.fixture(scope="module")
def mlp(mlp_path: Path) -> Iterator[TestClient]:
    with TestClient(app_for_model(mlp_path, "fp32", 1, ServeConfig("mlp", max_batch=4))) as c:
        yield c


X = [-1.0, 0.0, 1.0, 2.0]


def test_nan_and_infinity_are_written_as_triton_writes_them(log_model: Path) -> None:
    with TestClient(app_for_model(log_model, "fp32", 1, ServeConfig("log", max_batch=2))) as c:
        r = c.post(
            "/v2/models/log/infer", json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X}]}
        )
        assert r.status_code == 200, r.text
        assert b"NaN" in r.content and b"-Infinity" in r.content  # RapidJSON's kWriteNanAndInfFlag tokens
        y = json.loads(r.content)["outputs"][0]["data"]
        assert np.isnan(y[0]) and y[1] == -np.inf and y[2] == 0.0
        # NaN in a request is taken too (Triton parses with kParseNanAndInfFlag)
        body = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[NaN,Infinity,1.0,2.0]}]}'
        r = c.post("/v2/models/log/infer", content=body)
        assert r.status_code == 200 and np.isnan(json.loads(r.content)["outputs"][0]["data"][0])


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_reads_nan_outputs(log_model: Path, binary: bool) -> None:
    with live_server(app_for_model(log_model, "fp32", 1, ServeConfig("log", max_batch=2))) as port:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        inp = httpclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(np.array([X], np.float32), binary_data=binary)
        y = client.infer("log", [inp], outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)])
        got = y.as_numpy("y")
        assert np.isnan(got[0, 0]) and got[0, 1] == -np.inf and got[0, 3] == pytest.approx(np.log(2))


def _features(**over: object) -> dict[str, object]:
    return {"inputs": [{"name": "features", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64, **over}]}


@pytest.mark.parametrize(
    "content,message",
    [
        (json.dumps(_features(shape=[True, 64])).encode(), "needs a shape"),
        (json.dumps(_features(shape=[1.0, 64])).encode(), "needs a shape"),
        (b"[" * 100_000, "malformed JSON"),
        (
            b'{"inputs":[{"name":"features","shape":[1,64],"datatype":"FP32","data":' + b"[" * 100_000 + b"}]}",
            "malformed",
        ),
        (json.dumps(_features(parameters={"binary_data_size": True})).encode(), "binary_data_size"),
        (json.dumps({**_features(), "outputs": [{"name": "nope"}]}).encode(), "unknown output"),
        (json.dumps({**_features(), "parameters": {"binary_data_output": "yes"}}).encode(), "true or false"),
    ],
)
def test_malformed_requests_are_400(mlp: TestClient, content: bytes, message: str) -> None:
    r = mlp.post("/v2/models/mlp/infer", content=content)
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_bad_encodings_and_lengths_are_4xx(mlp: TestClient) -> None:
    r = mlp.post("/v2/models/mlp/infer", content=b"xx", headers={"Content-Encoding": "br"})
    assert r.status_code == 415 and "br" in r.json()["error"]
    r = mlp.post("/v2/models/mlp/infer", content=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "gzip" in r.json()["error"]
    r = mlp.post("/v2/models/mlp/infer", content=b"{}", headers={"Inference-Header-Content-Length": "x"})
    assert r.status_code == 400


def test_unknown_routes_and_methods_are_json(mlp: TestClient) -> None:
    for path, status in [
        ("/nope", 404),
        ("/v2/models/gpt/ready", 404),
        ("/v2/models/gpt/config", 404),
        ("/v2/models/mlp/versions/2", 404),
        ("/v2/models/mlp/infer", 405),
    ]:
        r = mlp.get(path)
        assert r.status_code == status and "error" in r.json(), (path, r.text)
    assert mlp.post("/v2/models/gpt/infer", json=_features()).status_code == 404
    text = mlp.get("/metrics").text
    assert 'optiserve_http_responses_total{status="404"}' in text and 'status="405"' in text


def test_a_runtime_failure_is_a_counted_500() -> None:
    state = {"warm": True}

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if not state["warm"]:
            raise RuntimeError("kernel exploded")
        return [feeds["x"] * 2]

    app = create_app(
        run,
        [InputSpec("x", "float32", ("batch", 2))],
        ["y"],
        ServeConfig("toy", max_batch=2),
        lambda b: {"x": np.zeros((b, 2), np.float32)},
    )
    with TestClient(app) as c:
        state["warm"] = False
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
        r = c.post("/v2/models/toy/infer", json=body)
        assert r.status_code == 500 and "kernel exploded" in r.json()["error"]
        assert 'optiserve_requests_total{status="500"} 1.0' in c.get("/metrics").text
        assert c.get("/v2/models/toy/stats").json()["model_stats"][0]["inference_stats"]["fail"]["count"] == 1


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing, or None if still open after ``seconds``."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return got


@pytest.fixture(scope="module")
def short_timeouts(mlp_path: Path) -> Iterator[int]:
    app = app_for_model(mlp_path, "fp32", 1, ServeConfig("mlp", max_batch=4, body_timeout_s=0.5))
    with live_server(app, ServerOptions(keep_alive_s=0.5, header_timeout_s=0.5, max_connections=8)) as port:
        yield port


def test_idle_and_slow_connections_are_closed(short_timeouts: int) -> None:
    port = short_timeouts
    idle = socket.create_connection(("127.0.0.1", port))  # sends nothing at all
    slow_headers = socket.create_connection(("127.0.0.1", port))
    slow_headers.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\n")  # never finishes them
    slow_body = socket.create_connection(("127.0.0.1", port))
    slow_body.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    t0 = time.monotonic()
    assert _closed_within(idle, 10) == b""
    assert _closed_within(slow_headers, 10) == b""
    answer = _closed_within(slow_body, 10)
    assert answer is not None and b" 408 " in answer.split(b"\r\n")[0] and b'"error"' in answer
    assert time.monotonic() - t0 < 8  # 0.5 s timeouts, generous bound
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:  # kept alive, then idle: closed too
        assert c.get("/v2/health/ready").status_code == 200
    kept = socket.create_connection(("127.0.0.1", port))
    kept.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = _closed_within(kept, 10)
    assert answer is not None and b"200 OK" in answer


def test_connections_past_the_limit_are_refused_and_serving_goes_on(short_timeouts: int) -> None:
    port = short_timeouts
    flood, refused = [], 0
    for _ in range(20):
        try:
            flood.append(socket.create_connection(("127.0.0.1", port)))
        except ConnectionRefusedError:  # at the limit the listener is closed: the kernel refuses
            refused += 1
    refused += sum(_closed_within(s, 0.3) is not None for s in flood)  # or accepted and closed at once
    assert refused >= 12  # limit 8
    for s in flood:
        s.close()
    time.sleep(0.2)
    r = httpx.post(f"http://127.0.0.1:{port}/v2/models/mlp/infer", json=_features(), timeout=10)
    assert r.status_code == 200


def test_descriptor_exhaustion_is_one_line_not_a_storm(mlp_path: Path, tmp_path: Path) -> None:
    """With a 128-descriptor limit and 300 connections, the server keeps serving and logs no tracebacks."""
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
        from optiserve.serve.app import ServeConfig, app_for_model
        from optiserve.serve.server import ServerOptions, serve_forever
        app = app_for_model({str(mlp_path)!r}, "fp32", 1, ServeConfig("mlp", max_batch=2))
        serve_forever(app, ServerOptions(port=int(sys.argv[1]), max_connections=1000, header_timeout_s=30))
    """)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", script, str(port)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.2)
        flood = []
        for _ in range(300):
            try:
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(1.5)
        for s in flood:
            s.close()
        time.sleep(0.5)
        r = httpx.post(f"http://127.0.0.1:{port}/v2/models/mlp/infer", json=_features(), timeout=10)
        assert r.status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert err.count("Traceback") == 0 and len(err.splitlines()) < 20, err[-3000:]
