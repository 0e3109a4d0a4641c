"""Failed requests count: a run whose requests fail does not pass; small integer inputs go binary as themselves."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from optiserve.models.zoo import save_atomic
from optiserve.serve.loadtest import payload_for, wait_until_ready
from tests.conftest import run_cli
from tests.serve.test_loadtest import _free_port


@contextmanager
def _serving(model: Path, *extra: str) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "optiserve", "serve", str(model), "--port", str(port), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until_ready(url, 60), proc.stderr.read() if proc.stderr else ""
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_run_where_every_request_fails_exits_1(mlp_path: Path, tmp_path: Path) -> None:
    """A server that refuses every body (413): no latency to judge, yet never a pass."""
    with _serving(mlp_path, "--max-body-mb", "0.0001") as url:
        out = tmp_path / "r.json"
        proc = run_cli(
            "loadtest", url, "--model", "mlp", "--rate", "20", "--duration", "1", "--p99-target-ms", "1000",
            "--json", str(out), cwd=tmp_path, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["completed"] == 0 and r["failed"] == 20 and r["error_rate"] == 1.0 and r["errors"] == {"413": 20}
    assert r["verdict"] == "fail" and "20 of 20 requests failed" in proc.stdout


def test_small_integer_and_bool_inputs_in_binary(tmp_path: Path) -> None:
    """UINT8 pixels and a BOOL flag: the binary extension carries them at their own width."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["pixels"], ["p32"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["flag"], ["f32"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["p32", "f32"], ["y"]),
        ],
        "u8",
        [
            helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 4]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, ["batch", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "u8.onnx"
    save_atomic(model, path)
    with _serving(path) as url:
        body, headers = payload_for(url, "u8", binary=True)
        header = json.loads(body[: int(headers["Inference-Header-Content-Length"])])
        sizes = {i["name"]: i["parameters"]["binary_data_size"] for i in header["inputs"]}
        assert sizes == {"pixels": 4, "flag": 4}  # one byte per element, not int64's eight
        pixels = np.array([[0, 7, 200, 255]], np.uint8)
        flag = np.array([[True, False, True, True]])
        inputs = [
            {"name": "pixels", "shape": [1, 4], "datatype": "UINT8", "parameters": {"binary_data_size": 4}},
            {"name": "flag", "shape": [1, 4], "datatype": "BOOL", "parameters": {"binary_data_size": 4}},
        ]
        head = json.dumps({"inputs": inputs}).encode()
        req = urllib.request.Request(
            f"{url}/v2/models/u8/infer",
            head + pixels.tobytes() + flag.tobytes(),
            {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            out = json.loads(r.read())["outputs"][0]["data"]
    assert out == [0.0, 0.0, 200.0, 255.0]


def test_serve_on_the_plans_runtime_or_say_why_not(mlp_path: Path, tmp_path: Path) -> None:
    """A GPU placement's Deployment asks for its GPU runtime; where there is none, one line, not a CPU fallback."""
    from optiserve.runtimes.registry import get_runtime

    reason = get_runtime("onnxruntime-cuda").available()
    if reason is None:
        return  # a GPU here: the runtime is available and the server would start (the GPU suite covers it)
    proc = run_cli("serve", str(mlp_path), "--runtime", "onnxruntime-cuda", "--port", "1", cwd=tmp_path, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: cannot serve on onnxruntime-cuda: {reason}"]
    bad = run_cli("serve", str(mlp_path), "--runtime", "nope", "--port", "1", cwd=tmp_path, timeout=60)
    assert bad.returncode == 2 and "valid runtimes: onnxruntime-cpu" in bad.stderr


def test_an_unknown_encoding_is_one_line_before_any_request(tmp_path: Path) -> None:
    res = run_cli("loadtest", "http://127.0.0.1:9", "--model", "m", "--encoding", "xml", cwd=tmp_path)
    assert res.returncode == 2 and "unknown --encoding 'xml'; valid: auto, json, binary" in res.stderr
    assert "Traceback" not in res.stderr
