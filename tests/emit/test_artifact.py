"""One artifact: the variant the profile measured is what the plan names, emit ships and serve loads."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from starlette.testclient import TestClient

from optiserve.emit import EmitOptions, render
from optiserve.errors import UsageError
from optiserve.models.graph import model_sha256
from optiserve.profile.store import load_profile
from optiserve.serve.app import ServeConfig, app_for_model
from optiserve.types import LatencySource
from optiserve.variants.cache import VariantCache
from tests.conftest import profile_cli, run_cli


@pytest.fixture(scope="module")
def planned(mlp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(work folder, plan file, the profiled int8-static variant's digest) for the MLP calibrated on user data."""
    work = tmp_path_factory.mktemp("artifact")
    calib = work / "calib.npz"
    np.savez(calib, features=np.random.default_rng(5).standard_normal((24, 64)).astype(np.float32))
    prof = work / "prof"
    proc = profile_cli(
        mlp_path, prof, "--precision", "int8-static", "--batch", "1", "--calibration", str(calib), cwd=work
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = load_profile(prof).measurements
    hit = VariantCache(None).get(str(row.variant["key"]))
    assert hit is not None
    sha = model_sha256(hit[0])
    sla = work / "sla.yaml"
    sla.write_text(
        "defaults:\n  regions: [EU]\nmodels:\n  mlp:\n    rate: 50\n    peak_factor: 1.5\n    p99_ms: 500\n"
        "    max_accuracy_drop: 0.5\n"
    )
    plan = work / "plan.json"
    args = ["plan", "--sla", str(sla), "--profile", f"mlp={prof}", "-o", str(plan), "--trials", "30"]
    proc = run_cli(*args, "--requests", "3000", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work, plan, sha


def test_plan_names_the_profiled_file(planned: tuple[Path, Path, str]) -> None:
    _, plan, sha = planned
    art = json.loads(plan.read_text())["models"][0]["chosen"]["artifact"]
    assert art["kind"] == "variant" and art["precision"] == "int8-static" and art["sha256"] == sha
    assert art["recipe"]["calibration"] != "synthetic"  # the user's calibration file, by digest
    # every latency is simulated; none says measured, wherever its service times came from
    doc = json.loads(plan.read_text())["models"][0]
    labels = {doc["chosen"]["provenance"]["latency"], *(p["latency"] for p in doc["pareto_front"])}
    assert labels <= {s.value for s in LatencySource}, labels


def test_emit_ships_those_bytes_and_the_pod_serves_them(planned: tuple[Path, Path, str], mlp_path: Path) -> None:
    work, plan, sha = planned
    out = work / "deploy"
    proc = run_cli("emit", str(plan), "--target", "all", "-o", str(out), "--model", f"mlp={mlp_path}", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "predates artifacts" not in proc.stderr
    assert model_sha256(out / "triton" / "mlp" / "1" / "model.onnx") == sha
    bundled = out / "models" / "mlp" / "mlp.int8-static.onnx"
    assert model_sha256(bundled) == sha
    docs = [d for d in yaml.safe_load_all((out / "k8s" / "mlp.yaml").read_text()) if d]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    args = next(c["args"] for c in dep["spec"]["template"]["spec"]["containers"] if "serve" in c.get("args", []))
    assert "--prebuilt" in args and args[args.index("--expect-sha256") + 1] == sha
    assert dep["metadata"]["annotations"]["optiserve.io/served-sha256"] == sha
    # the pod's server: the bundled file as is, answering as ONNX Runtime does on the profiled variant
    app = app_for_model(bundled, "int8-static", 1, ServeConfig("mlp", max_batch=4), prebuilt=True)
    x = np.random.default_rng(9).standard_normal((2, 64)).astype(np.float32)
    with TestClient(app) as c:
        r = c.post(
            "/v2/models/mlp/infer",
            json={"inputs": [{"name": "features", "shape": [2, 64], "datatype": "FP32", "data": x.ravel().tolist()}]},
        )
    assert r.status_code == 200, r.text
    want = ort.InferenceSession(str(bundled), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]
    np.testing.assert_allclose(np.asarray(r.json()["outputs"][0]["data"]).reshape(want.shape), want, rtol=1e-6)
    # a file that is not the planned one is refused before serving
    bad = run_cli("serve", str(mlp_path), "--precision", "int8-static", "--prebuilt", "--expect-sha256", sha, cwd=work)
    assert bad.returncode == 2 and "refusing to serve" in bad.stderr and "Traceback" not in bad.stderr


def test_a_variant_gone_from_the_cache_is_refused(planned: tuple[Path, Path, str], mlp_path: Path) -> None:
    _, plan, _ = planned
    doc = copy.deepcopy(json.loads(plan.read_text()))
    doc["models"][0]["chosen"]["artifact"].update(sha256=None, path=None)
    with pytest.raises(UsageError, match="no longer in the variant cache"):
        render(doc, ["triton"], EmitOptions(), {"mlp": mlp_path})
