"""Variants for OpenVINO built with NNCF, the library made for it (recipe toolkit ``nncf``).

NNCF's ONNX backend writes an ONNX graph (QDQ or compressed weights) that
OpenVINO reads directly, so the cache, the digest and the artifact a deployment
ships stay one ``.onnx`` file, exactly as for ONNX Runtime's variants:

- int8-static: ``nncf.quantize`` on the same calibration batches as ONNX
  Runtime's int8-static (``calibration.calibration_source``), with the
  transformer preset on graphs with attention (NNCF keeps softmax and layer
  norms in float there, as it recommends).
- int8-dynamic: ``nncf.compress_weights`` INT8_ASYM, weight-only per channel
  (the CPU plugin quantises activations on the fly, as ORT's dynamic does).
- int4: ``nncf.compress_weights`` INT4_SYM in groups of ``int4_block_size``.

Weight compression is for MatMul weights (transformer graphs), as ORT's int4 is:
Conv is left alone (OpenVINO's ONNX reader does not convert a dequantised Conv
weight) and so is Gemm (NNCF 3.4's compressed Gemm is wrong in OpenVINO: 110x the
output's scale for INT4_ASYM, 17% for INT4_SYM on the test MLP). Every
variant must compile in OpenVINO before it is cached. Run in the build child.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optiserve._reasons import one_line
from optiserve.errors import VariantError
from optiserve.types import Precision
from optiserve.variants.recipe import VariantRecipe

Feeds = dict[str, np.ndarray]
CalibrationSource = Callable[[], Iterable[Feeds]]
INSTALL_HINT = "pip install 'optiserve[openvino]'"
_NO_COMPRESS = ["Conv", "ConvTranspose", "Gemm"]


def _nncf() -> Any:
    try:
        import nncf
    except ImportError as exc:
        raise VariantError(f"nncf variants need nncf ({exc}); {INSTALL_HINT}") from None
    return nncf


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def is_transformer(model: onnx.ModelProto) -> bool:
    """Attention in the graph: MatMul feeding a Softmax (or a fused Attention op)."""
    ops = _ops(model)
    return "Attention" in ops or "MultiHeadAttention" in ops or {"MatMul", "Softmax"} <= ops


def _save(model: onnx.ModelProto, src: Path, dst: Path) -> None:
    """Inline, or external data beside it when the source had external data (as ORT's builders do)."""
    from optiserve.variants.ort_recipes import has_external_data as _has_external_data
    from optiserve.variants.ort_recipes import save_model as save

    save(model, dst, _has_external_data(src))


def _int8_static(src: Path, dst: Path, recipe: VariantRecipe, calibration: CalibrationSource) -> str:
    nncf = _nncf()
    model = onnx.load(str(src))
    batches = list(calibration())
    if not batches:
        raise VariantError("int8-static needs calibration batches; the calibration source gave none")
    transformer = is_transformer(model)
    kw: dict[str, Any] = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    if recipe.reduce_range:  # NNCF's name for it: 7-bit weights in every layer, not only the first
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        kw["advanced_parameters"] = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
    quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches), **kw)
    _save(quantized, src, dst)
    preset = "transformer preset" if transformer else "performance preset"
    if recipe.reduce_range:
        preset += ", overflow fix in every layer (7-bit weights: no VNNI)"
    return (
        f"nncf quantize int8 QDQ ({preset}, NNCF's range estimators, fast bias correction) "
        f"on {recipe.calibration} data, {len(batches)} batches"
    )


def _compress(src: Path, dst: Path, mode: str, group: int | None) -> str:
    nncf = _nncf()
    model = onnx.load(str(src))
    if "MatMul" not in _ops(model):
        raise VariantError("nncf weight compression is for MatMul weights (transformers); this graph has none")
    kw: dict[str, object] = {"mode": getattr(nncf.CompressWeightsMode, mode)}
    if group is not None:
        kw.update(group_size=group, ratio=1.0)
    scope = nncf.IgnoredScope(types=_NO_COMPRESS, validate=False)
    compressed = nncf.compress_weights(model, ignored_scope=scope, **kw)
    if not {"DequantizeLinear", "MatMulNBits"} & (_ops(compressed) - _ops(model)):
        raise VariantError("nncf weight compression found no constant MatMul weights in this graph")
    _save(compressed, src, dst)
    return f"nncf compress_weights {mode}" + (f", groups of {group}" if group else ", per channel") + ", weight-only"


def _int8_weights(src: Path, dst: Path, recipe: VariantRecipe, calibration: CalibrationSource) -> str:
    return _compress(src, dst, "INT8_ASYM", None)


def _int4_weights(src: Path, dst: Path, recipe: VariantRecipe, calibration: CalibrationSource) -> str:
    return _compress(src, dst, "INT4_SYM", recipe.int4_block_size)


NNCF_BUILDERS: dict[Precision, Callable[[Path, Path, VariantRecipe, CalibrationSource], str]] = {
    Precision.INT8_STATIC: _int8_static,
    Precision.INT8_DYNAMIC: _int8_weights,
    Precision.INT4: _int4_weights,
}


def check_compiles(path: Path) -> None:
    """The variant must compile on OpenVINO's CPU plugin, the runtime it is for."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise VariantError(f"checking an nncf variant needs openvino ({exc}); {INSTALL_HINT}") from None
    core = ov.Core()
    try:
        core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # as it runs
    except Exception as exc:
        raise VariantError(f"the built graph does not compile in OpenVINO: {one_line(exc)}") from None
