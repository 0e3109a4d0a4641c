from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optiserve.models.builders import build_mlp
from optiserve.models.zoo import build_zoo, save_atomic

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def variant_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Variants built by the tests (and their worker processes) stay out of ~/.cache."""
    root = tmp_path_factory.mktemp("cache")
    os.environ["OPTISERVE_CACHE"] = str(root)
    return root


@pytest.fixture(scope="session", autouse=True)
def audit_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The audit lines of plan/emit/verify run by the tests (and their subprocesses) stay out of ~/.local/state."""
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    os.environ["OPTISERVE_AUDIT_LOG"] = str(path)
    return path


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo")
    build_zoo(out, ["mlp"])
    return out


@pytest.fixture(scope="session")
def mlp_path(zoo_dir: Path) -> Path:
    return zoo_dir / "mlp.onnx"


@pytest.fixture(scope="session")
def regress_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLP with one output: not class scores, so drift is its relative L2 error."""
    path = tmp_path_factory.mktemp("regress") / "regress.onnx"
    save_atomic(build_mlp(seed=3, classes=1), path)
    return path


@pytest.fixture(scope="session")
def seq_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Token ids with a dynamic sequence dim besides the batch: needs --shape."""
    emb = numpy_helper.from_array(np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32), "emb")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], axis=0),
        helper.make_node("ReduceMean", ["e", "axes"], ["pooled"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "seq",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 8])],
        [emb, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("seq") / "seq.onnx"
    save_atomic(model, path)
    return path


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m optiserve`` as a user would; returns the finished process."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "optiserve", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


FAST = ("--budget", "0.3", "--warmup", "0.2", "--min-samples", "20")


def profile_cli(
    model: Path | str,
    out: Path,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``optiserve profile MODEL -o OUT`` on one thread with a short budget, plus ``args``."""
    return run_cli(
        "profile", str(model), "--threads", "1", *FAST, "-o", str(out), *args, cwd=cwd, env=env, timeout=timeout
    )


def _gpu_reason() -> str | None:
    import shutil

    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this machine (nvidia-smi not found)"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi failed: {exc}"
    return None if "GPU" in out.stdout else "nvidia-smi lists no GPU"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _gpu_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def build_stateful(seq: str | int = "seq") -> onnx.ModelProto:
    """A VAD-shaped graph: audio ``x[batch, seq]``, a state ``state[2, batch, 4]`` whose
    batch is axis 1, and a 0-d sample rate ``sr``; ``y = sum(x) * sr``, ``stateN = 2 * state``."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["s", "srf"], ["y"]),
        helper.make_node("Mul", ["state", "two"], ["stateN"]),
    ]
    graph = helper.make_graph(
        nodes,
        "stateful",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", seq]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 4]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", 4]),
        ],
        [axes, two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="session")
def stateful_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stateful") / "stateful.onnx"
    save_atomic(build_stateful(), path)
    return path
