"""GPU back ends: everything that can be checked without a GPU is checked here;
the conformance suite runs where a GPU and the libraries exist (marked gpu)."""

from __future__ import annotations

from pathlib import Path

import pytest

from optiserve.errors import UsageError
from optiserve.models.builders import build_encoder
from optiserve.models.zoo import save_atomic
from optiserve.runtimes.gpu import engine_key, profile_shapes
from optiserve.runtimes.onnxruntime_gpu import OnnxRuntimeCUDA, OnnxRuntimeTensorRT
from optiserve.runtimes.registry import RUNTIMES, get_runtime
from optiserve.runtimes.tensorrt_native import TensorRTRuntime, builder_settings
from optiserve.testing.runtime_conformance import RuntimeConformance
from optiserve.types import Precision
from tests.conftest import _gpu_reason

GPU_RUNTIMES = [OnnxRuntimeCUDA(), OnnxRuntimeTensorRT(), TensorRTRuntime()]


def test_registered_and_marked_gpu() -> None:
    for rt in GPU_RUNTIMES:
        assert get_runtime(rt.name).device == "gpu"
    assert [r.device for r in RUNTIMES].count("cpu") == 1


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
    s = profile_shapes({"x": ("batch", 3, 8, 8)}, [1, 2, 4, 16])
    assert s == {"x": ((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))}
    with pytest.raises(ValueError, match="dynamic dims besides the batch"):
        profile_shapes({"ids": ("batch", "seq")}, [1, 8])


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


@pytest.mark.gpu
class TestOnnxRuntimeCUDA(RuntimeConformance):
    @pytest.fixture
    def runtime(self) -> OnnxRuntimeCUDA:
        return OnnxRuntimeCUDA()

    @pytest.fixture
    def model_path(self, mlp_path: Path) -> Path:
        return mlp_path


@pytest.mark.gpu
class TestOnnxRuntimeTensorRT(RuntimeConformance):
    @pytest.fixture
    def runtime(self, tmp_path: Path) -> OnnxRuntimeTensorRT:
        return OnnxRuntimeTensorRT(cache_root=tmp_path)

    @pytest.fixture
    def model_path(self, mlp_path: Path) -> Path:
        return mlp_path


@pytest.mark.gpu
class TestTensorRT(RuntimeConformance):
    @pytest.fixture
    def runtime(self, tmp_path: Path) -> TensorRTRuntime:
        return TensorRTRuntime(cache_root=tmp_path)

    @pytest.fixture
    def model_path(self, mlp_path: Path) -> Path:
        return mlp_path
