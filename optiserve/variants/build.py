"""Build one precision variant with the library made for it, through the cache.

- fp16: ``onnxconverter_common.float16`` (fp32 inputs/outputs kept by default;
  ``Cast`` nodes stay fp32 because the converter mistypes ``Cast(to=float)``).
- int8-dynamic: ``onnxruntime.quantization.quantize_dynamic`` (weights int8,
  activations quantised at run time).
- int8-static: ``quant_pre_process`` then ``quantize_static`` in QDQ format,
  per-channel int8 weights, uint8 activations (the U8S8 layout ONNX Runtime
  recommends on x86), calibrated with MinMax, Entropy or Percentile.
- int4: ``MatMulNBitsQuantizer``, weight-only, symmetric blocks, MatMul only.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optiserve.errors import OptiserveError, VariantError
from optiserve.types import Precision
from optiserve.variants.cache import VariantCache
from optiserve.variants.recipe import VariantRecipe

Feeds = dict[str, np.ndarray]
CalibrationSource = Callable[[], Iterable[Feeds]]


@dataclass(frozen=True)
class Variant:
    path: Path
    key: str
    method: str
    build_s: float
    cache_hit: bool

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "method": self.method, "build_s": self.build_s, "cache_hit": self.cache_hit}


def tool_versions() -> dict[str, str]:
    """Library versions that change a variant's bytes: part of its cache key."""
    out = {}
    for dist in ("optiserve", "onnx", "onnxruntime", "onnxconverter-common", "onnx-ir"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _pre_process(src: Path, dst: Path) -> str:
    """ORT's recommended pre-quantisation pass (shape inference + graph optimisation)."""
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
        return "pre-processed"
    except Exception:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return "pre-processed without symbolic shape inference"


def _fp16(src: Path, dst: Path, recipe: VariantRecipe, calibration: CalibrationSource) -> str:
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    block = [*float16.DEFAULT_OP_BLOCK_LIST, "Cast"]
    converted = float16.convert_float_to_float16(model, keep_io_types=recipe.fp16_keep_io, op_block_list=block)
    onnx.save(converted, str(dst))
    io = "fp32 inputs/outputs kept" if recipe.fp16_keep_io else "fp16 inputs/outputs"
    return f"onnxconverter-common float16, {io}"


def _int8_dynamic(src: Path, dst: Path, recipe: VariantRecipe, calibration: CalibrationSource) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        how = _pre_process(src, pre)
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
    return f"onnxruntime quantize_dynamic, int8 weights ({how})"


def _int8_static(src: Path, dst: Path, recipe: VariantRecipe, calibration: CalibrationSource) -> str:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[recipe.calibrator]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, feeds: Iterable[Feeds]) -> None:
            self._it: Iterator[Feeds] = iter(feeds)

        def get_next(self) -> Feeds | None:
            return next(self._it, None)

    reader = Reader(calibration())
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        how = _pre_process(src, pre)
        quantize_static(
            str(pre),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
        )
    return (
        f"onnxruntime quantize_static QDQ, per-channel s8 weights, u8 activations, "
        f"{recipe.calibrator} calibration on {recipe.calibration} data ({how})"
    )


def _int4(src: Path, dst: Path, recipe: VariantRecipe, calibration: CalibrationSource) -> str:
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as exc:
        raise VariantError(f"int4 needs onnxruntime's MatMulNBitsQuantizer and its deps ({exc})") from None

    quant = MatMulNBitsQuantizer(
        onnx.load(str(src)), bits=4, block_size=recipe.int4_block_size, is_symmetric=True, accuracy_level=4
    )
    quant.process()
    model = quant.model.model
    if not any(n.op_type == "MatMulNBits" for n in model.graph.node):
        raise VariantError("int4 is weight-only for MatMul with constant weights; this graph has none")
    onnx.save(model, str(dst))
    return f"onnxruntime MatMulNBits int4, symmetric blocks of {recipe.int4_block_size}, weight-only"


BUILDERS: dict[Precision, Callable[[Path, Path, VariantRecipe, CalibrationSource], str]] = {
    Precision.FP16: _fp16,
    Precision.INT8_DYNAMIC: _int8_dynamic,
    Precision.INT8_STATIC: _int8_static,
    Precision.INT4: _int4,
}


def build_variant(
    model: Path,
    model_sha256: str,
    recipe: VariantRecipe,
    cache: VariantCache,
    calibration: CalibrationSource,
) -> Variant:
    """The variant for ``recipe``: from the cache if built before, else built now."""
    builder = BUILDERS.get(recipe.precision)
    if builder is None:
        raise VariantError(f"no variant builder for {recipe.precision}")
    key = recipe.cache_key(model_sha256, tool_versions())
    hit = cache.get(key)
    if hit is not None:
        path, meta = hit
        return Variant(path, key, meta["method"], float(meta["build_s"]), True)

    def build(tmp: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            method = builder(Path(model), tmp, recipe, calibration)
        except OptiserveError:
            raise
        except Exception as exc:
            text = str(exc).strip().splitlines()
            raise VariantError(
                f"building {recipe.precision} failed: {type(exc).__name__}: {text[0] if text else ''}"[:400]
            ) from None
        return {
            "method": method,
            "build_s": time.perf_counter() - t0,
            "model_sha256": model_sha256,
            "recipe": recipe.to_dict(),
            "versions": tool_versions(),
        }

    path, meta = cache.put(key, build)
    return Variant(path, key, meta["method"], float(meta["build_s"]), False)
