"""``serve --runtime openvino`` seen by Triton's HTTP client: ORT's answers, one compilation, overlapping instances."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

from optiserve.models.builders import build_mlp
from optiserve.models.graph import inspect_model
from optiserve.models.layout import infer_layout
from optiserve.models.zoo import save_atomic
from optiserve.runtimes.openvino import OpenVinoCPU
from optiserve.serve.app import ServeConfig, app_for_model
from optiserve.types import Precision
from optiserve.variants.calibration import build_from_recipe, recipe_for
from tests.serve.live_server import live_server

pytest.importorskip("openvino", reason="openvino is not installed: pip install 'optiserve[openvino]'")


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wide enough that a batch of 8 takes a while: two batches have time to overlap."""
    path = tmp_path_factory.mktemp("wide") / "wide.onnx"
    save_atomic(build_mlp(seed=5, hidden=1024), path)
    return path


@pytest.fixture(scope="module")
def served(wide: Path) -> Iterator[tuple[str, list[int]]]:
    """(the server's address, one entry per ``OpenVinoCPU.load`` call while the app was made)."""
    loads: list[int] = []
    real = OpenVinoCPU.load

    def counted(self: OpenVinoCPU, *args: Any, **kw: Any) -> Any:
        loads.append(1)
        return real(self, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(OpenVinoCPU, "load", counted)
        config = ServeConfig("wide", max_batch=8, max_delay_ms=0.5, instances=2)
        app = app_for_model(wide, "fp32", 1, config, runtime_name="openvino")
    with live_server(app) as port:
        yield f"127.0.0.1:{port}", loads


def _x(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)


def _infer(client: httpclient.InferenceServerClient, x: np.ndarray, name: str = "wide") -> np.ndarray:
    inp = httpclient.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return np.asarray(client.infer(name, [inp]).as_numpy("logits"))


def test_outputs_match_onnxruntime_fp32(served: tuple[str, list[int]], wide: Path) -> None:
    client = httpclient.InferenceServerClient(served[0])
    ref = ort.InferenceSession(str(wide), providers=["CPUExecutionProvider"])
    for rows in (1, 3, 8):
        x = _x(rows, rows)
        want = ref.run(None, {"features": x})[0]
        np.testing.assert_allclose(_infer(client, x), want, rtol=1e-4, atol=1e-4)


def test_two_instances_are_two_infer_requests_on_one_compilation_and_overlap(
    served: tuple[str, list[int]],
) -> None:
    url, loads = served

    def sender(seed: int) -> list[tuple[int, ...]]:  # eight clients of their own, six full batches each
        own = httpclient.InferenceServerClient(url)
        try:
            return [_infer(own, _x(8, seed * 10 + i)).shape for i in range(6)]
        finally:
            own.close()

    with ThreadPoolExecutor(8) as pool:
        shapes = [s for got in pool.map(sender, range(8)) for s in got]
    assert shapes == [(8, 10)] * 48
    client = httpclient.InferenceServerClient(url)
    params = client.get_model_metadata("wide")["parameters"]
    assert len(loads) == 1  # one compilation for both instances
    assert params["compiled_models"] == 1 and params["infer_requests"] == 2 and params["streams"] == 2
    assert params["instances"] == 2 and params["inference_threads"] == 2  # --threads 1 per instance
    assert params["peak_concurrent_infers"] == 2  # both requests ran at once, at least once
    cfg = client.get_model_config("wide")
    assert cfg["backend"] == "openvino" and "platform" not in cfg and cfg["instance_group"][0]["count"] == 2


def test_int8_is_served_from_the_nncf_variant_the_profile_builds(mlp_path: Path, tmp_path: Path) -> None:
    """Not ORT's quantiser: the served int8 model is the cache entry of the NNCF recipe."""
    pytest.importorskip("nncf", reason="nncf is not installed: pip install 'optiserve[openvino]'")
    app = app_for_model(mlp_path, "int8-static", 1, ServeConfig("mlp", max_batch=4), tmp_path, runtime_name="openvino")
    info = inspect_model(mlp_path)
    layout = infer_layout(info)
    nncf = build_from_recipe(mlp_path, info, layout, recipe_for(Precision.INT8_STATIC, toolkit="nncf"), None, tmp_path)
    assert nncf.cache_hit and nncf.method.startswith("nncf")
    x = _x(4, 9)
    want = ort.InferenceSession(str(mlp_path), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]
    with live_server(app) as port:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            got = _infer(client, x, "mlp")
        finally:
            client.close()
    assert float(np.abs(got - want).max()) < 5e-2 * float(np.abs(want).max())  # int8 close to fp32
