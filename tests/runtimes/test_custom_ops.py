"""Custom-op libraries reach every session: profile and serve a model with an onnxruntime-extensions op."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from optiserve.models.zoo import save_atomic
from optiserve.profile.store import load_profile
from optiserve.types import Status
from tests.conftest import profile_cli


def _extensions_library() -> str:
    """onnxruntime-extensions' custom-op library, found without importing the package: its import
    sets PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python in os.environ, which every later subprocess
    of the test session would inherit (Locust's gevent then fails on pure-Python protobuf objects)."""
    spec = importlib.util.find_spec("onnxruntime_extensions")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("onnxruntime-extensions (dev extra) is not installed")
    libs = sorted(Path(next(iter(spec.submodule_search_locations))).glob("_extensions_pydll*.so"))
    if not libs:
        pytest.skip("onnxruntime-extensions has no custom-op library for this platform")
    return str(libs[0])


@pytest.fixture(scope="module")
def inverse_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ai.onnx.contrib::Inverse`` of a batch of 3x3 matrices: an op only the extensions library has."""
    graph = helper.make_graph(
        [helper.make_node("Inverse", ["x"], ["y"], domain="ai.onnx.contrib")],
        "inv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)]
    )
    model.ir_version = 8
    path = tmp_path_factory.mktemp("custom") / "inverse.onnx"
    save_atomic(model, path)
    return path


def test_profile_with_and_without_the_library(inverse_model: Path, tmp_path: Path) -> None:
    lib = _extensions_library()
    proc = profile_cli(inverse_model, tmp_path / "with", "--batch", "1", "--custom-ops", lib, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (m,) = load_profile(tmp_path / "with").measurements
    assert m.status is Status.OK and m.accuracy is not None and m.accuracy.max_abs_error == 0
    proc = profile_cli(inverse_model, tmp_path / "without", "--batch", "1", cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    (m,) = load_profile(tmp_path / "without").measurements
    assert m.status is Status.FAILED and "Inverse" in m.error and "\n" not in m.error
    bad = profile_cli(inverse_model, tmp_path / "bad", "--custom-ops", str(tmp_path / "nope.so"), cwd=tmp_path)
    assert bad.returncode == 2 and "custom-op library not found" in bad.stderr and "Traceback" not in bad.stderr


def test_server_registers_the_library(inverse_model: Path) -> None:
    from starlette.testclient import TestClient

    from optiserve.runtimes import custom_ops
    from optiserve.serve.app import ServeConfig, app_for_model

    custom_ops.use([_extensions_library()])
    try:
        app = app_for_model(inverse_model, "fp32", 1, ServeConfig("inv", max_batch=1))
        with TestClient(app) as c:
            x = (np.eye(3) * 4).astype(np.float32)
            r = c.post(
                "/v2/models/inv/infer",
                json={"inputs": [{"name": "x", "shape": [3, 3], "datatype": "FP32", "data": x.reshape(-1).tolist()}]},
            )
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(np.asarray(r.json()["outputs"][0]["data"]), (np.eye(3) / 4).reshape(-1))
    finally:
        custom_ops.use([])
