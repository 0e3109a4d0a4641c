"""Serving a model whose batch is not axis 0 everywhere: a state batched on axis 1 and a scalar."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from starlette.testclient import TestClient

from optiserve.models.graph import inspect_model
from optiserve.models.layout import infer_layout
from optiserve.serve.app import ServeConfig, app_for_model
from optiserve.serve.batcher import DynamicBatcher


def _reference(path: Path, x: np.ndarray, state: np.ndarray, sr: int) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(sess.run(None, {"x": x, "state": state, "sr": np.array(sr, np.int64)}))


def test_batcher_stacks_on_each_inputs_axis_and_groups_by_scalar(stateful_model: Path) -> None:
    sess = ort.InferenceSession(str(stateful_model), providers=["CPUExecutionProvider"])
    calls: list[tuple[int, ...]] = []

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        calls.append(feeds["state"].shape)
        return list(sess.run(None, feeds))

    rng = np.random.default_rng(0)
    reqs = [
        {
            "x": rng.standard_normal((1, 8)).astype(np.float32),
            "state": rng.standard_normal((2, 1, 4)).astype(np.float32),
            "sr": np.array(16000 if i < 3 else 8000, np.int64),
        }
        for i in range(4)
    ]

    async def main() -> list[list[np.ndarray]]:
        b = DynamicBatcher(
            run,
            ["x", "state", "sr"],
            8,
            0.05,
            1,
            64,
            input_axes={"x": 0, "state": 1, "sr": None},
            output_axes=[0, 1],
        )
        b.start()
        try:
            return list(await asyncio.gather(*(b.submit(r, 1) for r in reqs)))
        finally:
            await b.stop()

    outs = asyncio.run(main())
    for r, (y, state_n) in zip(reqs, outs, strict=True):
        want = _reference(stateful_model, r["x"], r["state"], int(r["sr"]))
        np.testing.assert_allclose(y, want[0], rtol=1e-6)
        np.testing.assert_allclose(state_n, want[1], rtol=1e-6)
    # three requests with sr=16000 shared one call (stacked on the state's axis 1); sr=8000 ran alone
    assert sorted(calls) == [(2, 1, 4), (2, 3, 4)]


@pytest.fixture
def vad_client(stateful_model: Path):  # type: ignore[no-untyped-def]
    layout = infer_layout(inspect_model(stateful_model), {"seq": (8,)})
    app = app_for_model(stateful_model, "fp32", 1, ServeConfig("vad", max_batch=4, max_delay_ms=1.0), layout=layout)
    with TestClient(app) as c:
        yield c


def test_server_takes_state_and_scalar_and_advertises_its_layout(vad_client: TestClient, stateful_model: Path) -> None:
    meta = vad_client.get("/v2/models/vad").json()
    lay = {t["name"]: t for t in meta["parameters"]["layout"]["inputs"]}
    assert lay["state"]["batch_axis"] == 1 and lay["sr"]["batch_axis"] is None and lay["x"]["shape"] == [1, 8]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"y": [-1, 1], "stateN": [2, -1, 4]}
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    state = np.ones((2, 2, 4), np.float32)
    body = {
        "inputs": [
            {"name": "x", "shape": [2, 8], "datatype": "FP32", "data": x.reshape(-1).tolist()},
            {"name": "state", "shape": [2, 2, 4], "datatype": "FP32", "data": state.reshape(-1).tolist()},
            {"name": "sr", "shape": [], "datatype": "INT64", "data": [16000]},
        ]
    }
    r = vad_client.post("/v2/models/vad/infer", json=body)
    assert r.status_code == 200, r.text
    outs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}
    want = _reference(stateful_model, x, state, 16000)
    np.testing.assert_allclose(outs["y"], want[0], rtol=1e-6)
    assert outs["stateN"].shape == (2, 2, 4)
    # the batch is counted on the state's axis 1: a state with another batch is refused
    bad = {
        "inputs": [body["inputs"][0], {**body["inputs"][1], "shape": [2, 1, 4], "data": [1.0] * 8}, body["inputs"][2]]
    }
    r = vad_client.post("/v2/models/vad/infer", json=bad)
    assert r.status_code == 400 and "same batch size" in r.json()["error"]
    # an open dim may take another size than the one the server was warmed with
    x12 = np.ones((1, 12), np.float32)
    body12 = {
        "inputs": [
            {"name": "x", "shape": [1, 12], "datatype": "FP32", "data": x12.reshape(-1).tolist()},
            {"name": "state", "shape": [2, 1, 4], "datatype": "FP32", "data": [0.0] * 8},
            {"name": "sr", "shape": [], "datatype": "INT64", "data": 8000},
        ]
    }
    r = vad_client.post("/v2/models/vad/infer", json=body12)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [pytest.approx(12 * 8000)]
