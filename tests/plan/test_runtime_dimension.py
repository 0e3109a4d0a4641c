"""The CPU runtime is a dimension of the search: the plan picks the cheaper one and emits its backend."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from optiserve.models.zoo import build_zoo
from optiserve.plan.planner import PlanOptions, build_evaluator, make_plan
from optiserve.profile.store import ParquetStore, load_profile
from optiserve.types import Profile

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "reference" / "cnn-default"  # fp32, onnxruntime-cpu

SLA = """
defaults: {regions: [EU], headroom: 0.2}
models:
  cnn: {profile: PROFILE, model: MODEL, rate: 150, peak_factor: 1.5, p99_ms: 60, max_accuracy_drop: 0.01}
search: {max_delay_ms: [0, 2], instances: [1, 2]}
"""


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zoo(tmp_path_factory.mktemp("cnn"), ["cnn"])[0]


def _two_runtimes(out: Path, openvino_speed: float) -> Path:
    """The measured rows again as ``openvino`` rows, every sample divided by ``openvino_speed``."""
    prof = load_profile(PROFILE)
    ov = [
        replace(
            m,
            config=replace(m.config, runtime="openvino", options=()),
            samples_ns=tuple(int(s / openvino_speed) for s in m.samples_ns),
        )
        for m in prof.measurements
        if m.config.runtime == "onnxruntime-cpu"
    ]
    both = Profile(prof.meta, (*prof.measurements, *ov))
    store = ParquetStore(out)
    store.create(dict(both.meta))
    for m in both.measurements:
        store.append(m)
    return out


def _plan(tmp_path: Path, cnn: Path, speed: float) -> dict[str, object]:
    profile = _two_runtimes(tmp_path / f"profile-{speed}", speed)
    sla = tmp_path / "sla.yaml"
    sla.write_text(SLA.replace("MODEL", str(cnn)).replace("PROFILE", str(profile)))
    return make_plan(PlanOptions(sla, trials=40, requests=3000, verify_requests=5000))


@pytest.mark.parametrize(("speed", "winner"), [(2.5, "openvino"), (0.4, "onnxruntime-cpu")])
def test_the_cheaper_cpu_runtime_wins(tmp_path: Path, cnn: Path, speed: float, winner: str) -> None:
    plan = _plan(tmp_path, cnn, speed)
    chosen = plan["models"][0]["chosen"]  # type: ignore[index]
    assert chosen["runtime"] == winner


def test_each_runtime_has_its_own_curves(tmp_path: Path, cnn: Path) -> None:
    profile = _two_runtimes(tmp_path / "p", 2.0)
    sla = tmp_path / "sla.yaml"
    sla.write_text(SLA.replace("MODEL", str(cnn)).replace("PROFILE", str(profile)))
    ev = build_evaluator("cnn", PlanOptions(sla, trials=5, requests=2000))
    assert ev.cpu_runtimes == ("onnxruntime-cpu", "openvino")
    cpu = next(e for e, _ in ev.entries if e.accelerator is None)
    ort = ev.builders["onnxruntime-cpu"].curve(cpu, "fp32", 1)
    ov = ev.builders["openvino"].curve(cpu, "fp32", 1)
    b = max(ev.batches)
    assert np.isclose(ort.service.mean(b) / ov.service.mean(b), 2.0, rtol=0.05)
    runtimes = {c.runtime for c in ev.candidates() if c.instance == cpu.key}
    assert runtimes == {"", "openvino"}  # "": the main runtime


def test_the_plan_emits_the_chosen_runtimes_triton_backend(tmp_path: Path, cnn: Path) -> None:
    """Parsed by protobuf into Triton's own ModelConfig: OpenVINO's backend, reading the shipped ONNX file."""
    pytest.importorskip("tritonclient.grpc", reason="the emit extra is not installed")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from optiserve.emit import emit
    from optiserve.emit.common import EmitOptions

    configs = {}
    for speed in (2.5, 0.4):
        (tmp_path / str(speed)).mkdir()
        plan = _plan(tmp_path / str(speed), cnn, speed)
        out = tmp_path / f"out-{speed}"
        emit(plan, ["triton"], out, EmitOptions(model_uris={"cnn": "s3://models/cnn"}), {"cnn": cnn})
        configs[speed] = text_format.Parse((out / "triton/cnn/config.pbtxt").read_text(), mc.ModelConfig())
        assert (out / "triton/cnn/1/model.onnx").read_bytes() == cnn.read_bytes()  # fp32: the model itself
    ov, ort = configs[2.5], configs[0.4]
    assert ov.backend == "openvino" and not ov.platform and ov.default_model_filename == "model.onnx"
    assert ov.parameters["INFERENCE_PRECISION_HINT"].string_value == "f32"
    assert ov.parameters["INFERENCE_NUM_THREADS"].string_value.isdigit()
    assert ort.platform == "onnxruntime_onnx" and not ort.backend
