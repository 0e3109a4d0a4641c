"""GPU back ends: everything that can be checked without a GPU is checked here;
the conformance suite runs where a GPU and the libraries exist (marked gpu)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from optiserve.errors import ModelError, UsageError
from optiserve.models.builders import build_encoder
from optiserve.models.graph import inspect_model
from optiserve.models.layout import infer_layout
from optiserve.models.zoo import save_atomic
from optiserve.runtimes.base import Runtime
from optiserve.runtimes.gpu import engine_key, profile_shapes
from optiserve.runtimes.onnxruntime_gpu import OnnxRuntimeCUDA, OnnxRuntimeTensorRT
from optiserve.runtimes.registry import RUNTIMES, get_runtime
from optiserve.runtimes.tensorrt_native import TensorRTRuntime, builder_settings
from optiserve.types import InputLayout, Precision, TensorLayout
from tests.conftest import _gpu_reason, build_stateful

GPU_RUNTIMES: list[Runtime] = [OnnxRuntimeCUDA(), OnnxRuntimeTensorRT(), TensorRTRuntime()]


def test_registered_and_marked_gpu() -> None:
    for rt in GPU_RUNTIMES:
        assert get_runtime(rt.name).device == "gpu"
    assert {r.name for r in RUNTIMES if r.device == "cpu"} == {"onnxruntime-cpu", "openvino"}


@pytest.mark.skipif(_gpu_reason() is None, reason="a GPU is present: the no-GPU messages do not apply")
def test_unavailable_here_with_a_reason() -> None:
    for rt in GPU_RUNTIMES:
        reason = rt.available()
        assert reason, rt.name
        assert any(k in reason for k in ("onnxruntime-gpu", "no NVIDIA GPU", "not installed")), reason


def test_precisions_per_runtime() -> None:
    cuda, ort_trt, trt = GPU_RUNTIMES
    assert cuda.supports(Precision.FP16) and Precision.FP16 in cuda.variant_precisions  # fp16 as a converted graph
    assert ort_trt.supports(Precision.FP16) and Precision.FP16 not in ort_trt.variant_precisions  # TensorRT's flag
    assert Precision.INT8_STATIC in trt.variant_precisions  # QDQ graph, explicit quantisation
    assert not cuda.supports(Precision.INT4) and not trt.supports(Precision.INT8_DYNAMIC)


def test_builder_settings_per_precision() -> None:
    shapes = {"pixels": ((1, 3, 224, 224), (8, 3, 224, 224), (16, 3, 224, 224))}
    assert builder_settings(Precision.FP32, shapes, 1024)["flags"] == []
    assert builder_settings(Precision.FP16, shapes, 1024)["flags"] == ["FP16"]
    int8 = builder_settings(Precision.INT8_STATIC, shapes, 512)
    assert int8["flags"] == ["INT8", "FP16"] and int8["workspace_bytes"] == 512 * 2**20 and int8["profile"] == shapes
    with pytest.raises(UsageError, match="int8-dynamic"):
        builder_settings(Precision.INT8_DYNAMIC, shapes, 1024)


def test_profile_shapes_cover_the_batches() -> None:
    layout = InputLayout((TensorLayout("x", "float32", (1, 3, 8, 8), 0),))
    s = profile_shapes(layout, [1, 2, 4, 16])
    assert s == {"x": ((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))}


def test_profile_shapes_vary_only_each_inputs_batch_axis() -> None:
    """silero VAD's shape: audio batched on axis 0, state on axis 1, a 0-d sample rate."""
    layout = InputLayout(
        (
            TensorLayout("input", "float32", (1, 512), 0),
            TensorLayout("state", "float32", (2, 1, 128), 1),
            TensorLayout("sr", "int64", (), None),
        )
    )
    s = profile_shapes(layout, [8, 1, 4])
    assert s["input"] == ((1, 512), (4, 512), (8, 512))
    assert s["state"] == ((2, 1, 128), (2, 4, 128), (2, 8, 128))
    assert s["sr"] == ((), (), ())  # unbatched: fixed at every end
    assert set(profile_shapes(layout, [1, 8], static={"sr"})) == {"input", "state"}
    fixed = InputLayout((TensorLayout("images", "float32", (1, 3, 416, 416), 0),), fixed_batch=1)
    assert profile_shapes(fixed, [1, 16]) == {"images": ((1, 3, 416, 416),) * 3}  # the model's batch only


@pytest.fixture
def vad_like(tmp_path: Path) -> Path:
    """x[batch, 16], state[2, batch, 4], sr 0-d: every dim but the batch fixed in the graph."""
    path = tmp_path / "vad-like.onnx"
    save_atomic(build_stateful(16), path)
    return path


def test_tensorrt_profile_follows_the_layout(tmp_path: Path, vad_like: Path) -> None:
    rt = OnnxRuntimeTensorRT(cache_root=tmp_path)
    opts = rt.provider_options(vad_like, Precision.FP32, {**rt.defaults, "max_batch": "8"})
    # the layout inferred from the model: state's batch is axis 1; sr (0-d, fixed) takes no profile
    assert opts["trt_profile_min_shapes"] == "x:1x16,state:2x1x4"
    assert opts["trt_profile_max_shapes"] == "x:8x16,state:2x8x4"


def test_tensorrt_profile_from_the_profilers_layout(tmp_path: Path, seq_model: Path) -> None:
    rt = OnnxRuntimeTensorRT(cache_root=tmp_path)
    o = {**rt.defaults, "max_batch": "8"}
    with pytest.raises(ModelError, match="--shape seq=N"):  # nothing says how long seq is
        rt.provider_options(seq_model, Precision.FP32, o)
    info = inspect_model(seq_model)
    short = rt.provider_options(seq_model, Precision.FP32, o, infer_layout(info, {"seq": (8,)}))
    assert short["trt_profile_min_shapes"] == "ids:1x8" and short["trt_profile_max_shapes"] == "ids:8x8"
    long = rt.provider_options(seq_model, Precision.FP32, o, infer_layout(info, {"seq": (32,)}))
    assert long["trt_profile_opt_shapes"] == "ids:8x32"
    assert long["trt_engine_cache_path"] != short["trt_engine_cache_path"]  # an engine per profile


def test_a_fully_fixed_model_gets_no_profile(tmp_path: Path) -> None:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "fixed.onnx"
    save_atomic(m, path)
    rt = OnnxRuntimeTensorRT(cache_root=tmp_path)
    opts = rt.provider_options(path, Precision.FP32, {**rt.defaults, "max_batch": "8"})
    assert not any(k.startswith("trt_profile_") for k in opts)


def test_every_runtime_loads_with_a_layout(vad_like: Path) -> None:
    """The profiler passes ``layout=``; each back end takes it (the CPU one runs without it)."""
    for rt in RUNTIMES:
        p = inspect.signature(rt.load).parameters["layout"]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is None, rt.name
    layout = infer_layout(inspect_model(vad_like))
    session = get_runtime("onnxruntime-cpu").load(vad_like, Precision.FP32, 1, {}, layout=layout)
    feeds = {t.name: np.full(t.at(3), 16000 if t.name == "sr" else 1, t.dtype) for t in layout.inputs}
    y, state = session.run(feeds)
    assert y.shape == (3, 1) and state.shape == (2, 3, 4)
    session.close()


def test_engine_keys() -> None:
    base = {"model": "a", "precision": "fp16", "gpu": ["H200"], "trt": "10.1"}
    assert engine_key(**base) == engine_key(**base)
    for k, v in (("model", "b"), ("precision", "fp32"), ("gpu", ["L4"]), ("trt", "10.2")):
        assert engine_key(**{**base, k: v}) != engine_key(**base)


def test_tensorrt_provider_options(tmp_path: Path, mlp_path: Path) -> None:
    rt = OnnxRuntimeTensorRT(cache_root=tmp_path)
    opts = rt.provider_options(mlp_path, Precision.FP16, {**rt.defaults, "max_batch": "8"})
    assert opts["trt_fp16_enable"] is True and opts["trt_int8_enable"] is False
    assert opts["trt_profile_min_shapes"] == "features:1x64" and opts["trt_profile_max_shapes"] == "features:8x64"
    assert Path(opts["trt_engine_cache_path"]).is_dir() and opts["trt_timing_cache_enable"] is True
    other = rt.provider_options(mlp_path, Precision.FP32, {**rt.defaults, "max_batch": "8"})
    assert other["trt_engine_cache_path"] != opts["trt_engine_cache_path"]  # keyed by precision
    cuda = OnnxRuntimeCUDA().provider_options(mlp_path, Precision.FP32, {"device_id": "1", "cuda_graph": "on"})
    assert cuda == {"device_id": 1, "enable_cuda_graph": "1"}


def test_tensorrt_profile_for_several_inputs(tmp_path: Path) -> None:
    enc = tmp_path / "enc.onnx"
    save_atomic(build_encoder(layers=1, hidden=32, heads=2, ffn=64, vocab=64, seq=8), enc)
    rt = OnnxRuntimeTensorRT(cache_root=tmp_path)
    opts = rt.provider_options(enc, Precision.FP32, {**rt.defaults, "max_batch": "4"})
    assert opts["trt_profile_max_shapes"] == "input_ids:4x8,attention_mask:4x8"
