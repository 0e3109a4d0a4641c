import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import psutil
import pytest
from onnx import TensorProto, helper, numpy_helper

from optiserve.errors import UnknownNameError, VariantError
from optiserve.models.builders import build_encoder
from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.models.zoo import save_atomic
from optiserve.types import Precision
from optiserve.variants import build as build_mod
from optiserve.variants.accuracy import compare_outputs
from optiserve.variants.build import build_variant
from optiserve.variants.cache import VariantCache
from optiserve.variants.recipe import VariantRecipe
from tests.variants.helpers import slow_to_calibrate


def _calibration(path: Path) -> build_mod.CalibrationSource:
    info = inspect_model(path)

    def source() -> Iterable[dict[str, np.ndarray]]:
        return (make_inputs(info, 8, seed=i) for i in range(4))

    return source


def _drift(src: Path, variant: Path) -> float:
    info = inspect_model(src)
    feeds = make_inputs(info, 32, seed=99)
    ref = ort.InferenceSession(str(src)).run(None, feeds)
    out = ort.InferenceSession(str(variant)).run(None, feeds)
    return compare_outputs(ref, out).rel_l2_error


@pytest.mark.parametrize(
    "precision,op",
    [
        (Precision.FP16, None),
        (Precision.INT8_DYNAMIC, "MatMulInteger"),
        (Precision.INT8_STATIC, "QuantizeLinear"),
    ],
)
def test_each_precision_builds_runs_and_stays_close(
    mlp_path: Path, tmp_path: Path, precision: Precision, op: str | None
) -> None:
    info = inspect_model(mlp_path)
    v = build_variant(mlp_path, info.sha256, VariantRecipe(precision), VariantCache(tmp_path), _calibration(mlp_path))
    assert not v.cache_hit and v.path.exists() and v.method and v.build_s > 0
    ops = {n.op_type for n in onnx.load(str(v.path)).graph.node}
    if op:
        assert op in ops, ops
    else:
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in onnx.load(str(v.path)).graph.initializer)
    assert _drift(mlp_path, v.path) < 0.1


@pytest.mark.parametrize("calibrator", ["minmax", "entropy", "percentile"])
def test_every_calibrator(mlp_path: Path, tmp_path: Path, calibrator: str) -> None:
    info = inspect_model(mlp_path)
    recipe = VariantRecipe(Precision.INT8_STATIC, calibrator=calibrator)
    v = build_variant(mlp_path, info.sha256, recipe, VariantCache(tmp_path), _calibration(mlp_path))
    assert calibrator in v.method and _drift(mlp_path, v.path) < 0.2


def test_second_build_is_a_cache_hit_that_builds_nothing(
    mlp_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = inspect_model(mlp_path)
    recipe = VariantRecipe(Precision.INT8_DYNAMIC)
    first = build_variant(mlp_path, info.sha256, recipe, VariantCache(tmp_path), _calibration(mlp_path))

    def must_not_build(*args: object) -> str:
        raise AssertionError("rebuilt a cached variant")

    monkeypatch.setitem(build_mod.BUILDERS, Precision.INT8_DYNAMIC, must_not_build)
    again = build_variant(mlp_path, info.sha256, recipe, VariantCache(tmp_path), _calibration(mlp_path))
    assert again.cache_hit and again.path == first.path and again.key == first.key


def test_int4_on_a_transformer(tmp_path: Path) -> None:
    src = tmp_path / "enc.onnx"
    save_atomic(build_encoder(layers=1, hidden=64, heads=2, ffn=128, vocab=512, seq=16), src)
    info = inspect_model(src)
    v = build_variant(src, info.sha256, VariantRecipe(Precision.INT4), VariantCache(tmp_path), _calibration(src))
    assert "MatMulNBits" in {n.op_type for n in onnx.load(str(v.path)).graph.node}
    assert _drift(src, v.path) < 0.3


def test_failures_are_variant_errors(mlp_path: Path, tmp_path: Path) -> None:
    info = inspect_model(mlp_path)
    with pytest.raises(VariantError, match="this graph has none"):  # Gemm-only MLP: no MatMul
        build_variant(
            mlp_path, info.sha256, VariantRecipe(Precision.INT4), VariantCache(tmp_path), _calibration(mlp_path)
        )
    with pytest.raises(VariantError, match="no variant builder"):
        build_variant(
            mlp_path, info.sha256, VariantRecipe(Precision.BF16), VariantCache(tmp_path), _calibration(mlp_path)
        )
    assert VariantCache(tmp_path).entries() == []
    with pytest.raises(UnknownNameError, match="entropy"):
        VariantRecipe(Precision.INT8_STATIC, calibrator="kl")


def _builder_processes() -> list[psutil.Process]:
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "optiserve.variants.build" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_a_build_past_its_time_limit_is_stopped_and_leaves_nothing(mlp_path: Path, tmp_path: Path) -> None:
    info = inspect_model(mlp_path)
    cache = VariantCache(tmp_path)
    recipe = VariantRecipe(Precision.FP16)
    # a child interpreter cannot even start in 50 ms: this build is always stopped
    with pytest.raises(VariantError, match=r"^building fp16 stopped after 0\.05 s \(time limit\)$"):
        build_variant(mlp_path, info.sha256, recipe, cache, _calibration(mlp_path), time_limit_s=0.05)
    assert list(cache.dir.iterdir()) == [] and cache.entries() == []  # no scratch, no half entry
    assert _builder_processes() == []  # killed, not left running
    v = build_variant(mlp_path, info.sha256, recipe, cache, _calibration(mlp_path), time_limit_s=300)
    assert (
        not v.cache_hit
        and v.files == (v.path,)
        and [p.name for p in cache.dir.iterdir()] == sorted([v.path.name, f"{v.key}.json"])
    )
    slow = slow_to_calibrate(tmp_path / "chain.onnx")  # many seconds to calibrate: stopped mid-build
    slow_sha = inspect_model(slow).sha256
    with pytest.raises(VariantError, match=r"^building int8-static stopped after 2 s \(time limit\)$"):
        build_variant(slow, slow_sha, VariantRecipe(Precision.INT8_STATIC), cache, _calibration(slow), time_limit_s=2)
    assert _builder_processes() == [] and not [p for p in cache.dir.iterdir() if p.name.startswith(".")]
    with pytest.raises(VariantError, match="must be positive"):
        build_variant(mlp_path, info.sha256, VariantRecipe(Precision.INT8_DYNAMIC), cache, _calibration(mlp_path), 0)


def test_builds_write_nothing_outside_the_cache(
    mlp_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORT's quantisation tools write augmented models, pre-processed copies and their data
    files into the working directory or the system temp folder unless told otherwise."""
    model_dir, cwd, tmp = tmp_path / "model", tmp_path / "cwd", tmp_path / "tmp"
    for d in (model_dir, cwd, tmp):
        d.mkdir()
    src = model_dir / "m.onnx"
    shutil.copyfile(mlp_path, src)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    cache = VariantCache(tmp_path / "cache")
    info = inspect_model(src)
    for precision in (Precision.FP16, Precision.INT8_DYNAMIC, Precision.INT8_STATIC):
        build_variant(src, info.sha256, VariantRecipe(precision), cache, _calibration(src))
    assert sorted(os.listdir(cwd)) == [] and sorted(os.listdir(tmp)) == []
    assert sorted(os.listdir(model_dir)) == ["m.onnx"]
    assert [p.name for p in cache.dir.iterdir() if p.name.startswith(".")] == []  # scratch gone
    assert len(cache.entries()) == 3


def _model_with_local_function(path: Path) -> None:
    """An opset-11 Conv model calling a model-local function: onnx's version converter
    drops model-local functions, so its opset-13 upgrade does not load."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    fn = helper.make_function(
        "local", "MyRelu", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], [helper.make_opsetid("", 11)]
    )
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("MyRelu", ["c"], ["y"], domain="local"),
        ],
        "fn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [w],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 11), helper.make_opsetid("local", 1)], functions=[fn]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _upgrade_loads(src: Path, dst: Path) -> bool:
    try:
        onnx.save(onnx.version_converter.convert_version(onnx.load(str(src)), 13), str(dst))
        ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


def test_int8_static_below_opset_13_is_upgraded_or_falls_back_to_per_tensor(tmp_path: Path) -> None:
    src = tmp_path / "fn.onnx"
    _model_with_local_function(src)
    info = inspect_model(src)
    v = build_variant(src, info.sha256, VariantRecipe(Precision.INT8_STATIC), VariantCache(tmp_path), _calibration(src))
    if _upgrade_loads(src, tmp_path / "up.onnx"):  # a later onnx may keep the functions
        assert "opset 11 upgraded to 13" in v.method and "per-channel" in v.method
    else:
        assert "per-tensor s8 weights" in v.method and "opset 11, upgrade failed:" in v.method, v.method
        assert "MyRelu" in v.method and "\n" not in v.method and "/tmp" not in v.method
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(v.path)).graph.node}
    assert _drift(src, v.path) < 0.1


def test_fp16_keeps_constants_beyond_its_range_in_fp32(tmp_path: Path) -> None:
    """A BatchNormalization variance of 1e8 (real: PP-OCRv4 det) cannot be fp16; its node stays fp32."""
    rng = np.random.default_rng(0)
    c = 8
    inits = [
        numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.ones(c, np.float32) * 1e4, "scale"),
        numpy_helper.from_array(np.zeros(c, np.float32), "bias"),
        numpy_helper.from_array(np.zeros(c, np.float32), "mean"),
    ]
    var = helper.make_node("Constant", [], ["var"], value=numpy_helper.from_array(np.full(c, 1e8, np.float32), "v"))
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
            var,
            helper.make_node("BatchNormalization", ["h", "scale", "bias", "mean", "var"], ["y"]),
        ],
        "bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", c, 8, 8])],
        inits,
    )
    src = tmp_path / "bn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(src))
    info = inspect_model(src)
    v = build_variant(src, info.sha256, VariantRecipe(Precision.FP16), VariantCache(tmp_path), _calibration(src))
    assert "kept fp32" in v.method
    assert _drift(src, v.path) < 0.01


def test_fp16_retypes_the_models_own_cast_to_float(tmp_path: Path) -> None:
    """``Cast(to=float)`` of an int input feeding fp16 math: the converter types its output
    fp16 but leaves ``to=float``; the variant must still load and agree."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["f", "w"], ["y"]),
        ],
        "cast",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [w],
    )
    src = tmp_path / "cast.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(src))
    info = inspect_model(src)
    v = build_variant(src, info.sha256, VariantRecipe(Precision.FP16), VariantCache(tmp_path), _calibration(src))
    cast = next(n for n in onnx.load(str(v.path)).graph.node if n.input[:1] == ["ids"])
    assert cast.attribute[0].i == TensorProto.FLOAT16
    feeds = {"ids": np.arange(8, dtype=np.int64).reshape(2, 4) % 5}
    ref = ort.InferenceSession(str(src)).run(None, feeds)[0]
    out = ort.InferenceSession(str(v.path)).run(None, feeds)[0]
    assert np.allclose(ref, out, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(
    ("fixture", "saturates"),
    [("amd-milan-kvm", True), ("amd-genoa-kvm", False), ("kvm-sapphire-rapids-masked", False), ("graviton3", False)],
)
def test_int8_weights_are_narrowed_only_where_the_kernels_saturate(fixture: str, saturates: bool) -> None:
    """AVX2 without VNNI sums u8 x s8 pairs in 16 bits (ORT's and NNCF's docs): recorded cpuinfo decides."""
    from optiserve._cpuinfo import flags, parse_cpuinfo
    from optiserve.variants.recipe import int8_saturates

    text = (Path(__file__).parents[1] / "estimate" / "data" / "cpuinfo" / f"{fixture}.txt").read_text()
    arch = "aarch64" if fixture.startswith("graviton") else "x86_64"
    assert int8_saturates(flags(parse_cpuinfo(text)), arch) is saturates


def test_reduce_range_is_in_the_key_and_the_method_only_when_set(mlp_path: Path, tmp_path: Path) -> None:
    wide, narrow = (VariantRecipe(Precision.INT8_STATIC, reduce_range=r) for r in (False, True))
    assert "reduce_range" not in wide.identity() and narrow.identity()["reduce_range"] == "true"
    assert VariantRecipe.from_identity(Precision.INT8_STATIC, narrow.identity()) == narrow
    assert "reduce_range" not in VariantRecipe(Precision.FP32, reduce_range=True).identity()  # int8 only
    info = inspect_model(mlp_path)
    a = build_variant(mlp_path, info.sha256, wide, VariantCache(tmp_path), _calibration(mlp_path))
    b = build_variant(mlp_path, info.sha256, narrow, VariantCache(tmp_path), _calibration(mlp_path))
    assert a.key != b.key and "7 bits" in b.method and "7 bits" not in a.method
