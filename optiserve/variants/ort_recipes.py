"""The ONNX Runtime toolkit's variant builders, one function per precision (see
``variants/build.py`` for how each runs: in a child process, through the cache).

- fp16: ``onnxconverter_common.float16`` (fp32 inputs/outputs kept by default), with
  two of its faults worked around (a ``Cast(to=float)`` retargeted; constants beyond
  fp16's range kept in fp32 nodes).
- int8-dynamic: ``onnxruntime.quantization.quantize_dynamic``.
- int8-static: ``quant_pre_process`` then ``quantize_static`` in QDQ format,
  per-channel int8 weights, uint8 activations, MinMax/Entropy/Percentile; models
  below opset 13 upgraded first or quantised per tensor.
- int4: ``MatMulNBitsQuantizer``, weight-only, MatMul only.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from optiserve._reasons import one_line
from optiserve.errors import VariantError
from optiserve.models.graph import all_graphs, default_opset
from optiserve.types import Precision
from optiserve.variants.recipe import VariantRecipe

Feeds = dict[str, np.ndarray]
CalibrationSource = Callable[[], Iterable[Feeds]]
PER_CHANNEL_OPSET = 13
FP16_MAX = 65504.0


def has_external_data(path: Path) -> bool:
    from optiserve.models.graph import external_data_files

    return bool(external_data_files(onnx.load(str(path), load_external_data=False), path.parent))


def save_model(model: onnx.ModelProto, dst: Path, external: bool) -> None:
    """Save inline, or with every large tensor in ``<name>.data`` beside it (past protobuf's 2 GB)."""
    if external:
        onnx.save(
            model,
            str(dst),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{dst.name}.data",
            size_threshold=1024,
            convert_attribute=False,
        )
    else:
        onnx.save(model, str(dst))


def check_loads(path: Path, what: str = "the built graph") -> None:
    """The variant must be a graph ONNX Runtime accepts; a kernel this CPU build lacks is no fault of it."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        if "NOT_IMPLEMENTED" in str(exc):
            return
        why = re.sub(r"Load model from \S+ failed:\s*", "", one_line(exc))
        raise VariantError(f"{what} does not load in ONNX Runtime: {why}") from None


# --- builders (run in the child process, cwd and $TMPDIR in the scratch folder) ----------------


def _pre_process(src: Path, dst: Path, external: bool) -> str:
    """ORT's recommended pre-quantisation pass (shape inference + graph optimisation)."""
    from onnxruntime.quantization import quant_pre_process

    kw: dict[str, Any] = {}
    if external:
        kw = {
            "save_as_external_data": True,
            "all_tensors_to_one_file": True,
            "external_data_location": f"{dst.name}.data",
        }
    try:
        quant_pre_process(str(src), str(dst), **kw)
        return "pre-processed"
    except Exception:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True, **kw)
        return "pre-processed without symbolic shape inference"


def _upgrade_opset(src: Path, dst: Path, target: int, external: bool) -> None:
    """``onnx.version_converter`` to ``target``; the result must load in ONNX Runtime."""
    model = onnx.load(str(src), load_external_data=False)  # the converter rewrites nodes, not weights
    up = onnx.version_converter.convert_version(model, target)
    if external:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(up, str(src.parent))
    save_model(up, dst, external)
    check_loads(dst, "the upgraded graph")


def _fp16_prepare(model: onnx.ModelProto) -> tuple[set[str], list[str]]:
    """Name every node (the converter names its casts after them, so unnamed ones would
    collide), find the model's own ``Cast(to=float)`` nodes, and keep fp32 the nodes that
    read a constant beyond fp16's range (such Constant nodes become initializers, which
    the converter leaves alone when their reader is kept fp32)."""
    used = {n.name for g in all_graphs(model.graph) for n in g.node if n.name}
    casts: set[str] = set()
    blocked: set[str] = set()
    count = 0

    def too_big(t: TensorProto) -> bool:
        if t.data_type != TensorProto.FLOAT:
            return False
        a = numpy_helper.to_array(t)
        a = a[np.isfinite(a)]
        return bool(a.size) and float(np.abs(a).max()) > FP16_MAX

    for g in list(all_graphs(model.graph)):
        big = {t.name for t in g.initializer if too_big(t)}
        keep = []
        for n in g.node:
            if not n.name:
                while f"{n.op_type}_{count}" in used:
                    count += 1
                n.name = f"{n.op_type}_{count}"
                used.add(n.name)
            if n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT for a in n.attribute):
                casts.add(n.name)
            if n.op_type == "Constant" and [a.name for a in n.attribute] == ["value"] and too_big(n.attribute[0].t):
                t = TensorProto()
                t.CopyFrom(n.attribute[0].t)
                t.name = n.output[0]
                g.initializer.append(t)
                big.add(t.name)
                continue
            keep.append(n)
        if len(keep) != len(g.node):
            del g.node[:]
            g.node.extend(keep)
            # typed fp16 by the converter, an inferred value_info of such a constant
            # would make it cast the constant fp16 after all
            vis = [vi for vi in g.value_info if vi.name not in big]
            del g.value_info[:]
            g.value_info.extend(vis)
        blocked |= {n.name for n in g.node if any(i in big for i in n.input)}
    return casts, sorted(blocked)


def _fp16(src: Path, dst: Path, recipe: VariantRecipe, calibration: CalibrationSource) -> str:
    from onnx.external_data_helper import load_external_data_for_model
    from onnxconverter_common import float16

    external = has_external_data(src)
    with tempfile.TemporaryDirectory() as tmp:
        inferred = Path(tmp) / "inferred.onnx"
        try:  # by path: works past 2 GB, where the converter's in-memory inference cannot
            onnx.shape_inference.infer_shapes_path(str(src), str(inferred))
            model = onnx.load(str(inferred), load_external_data=False)
        except Exception:
            model = onnx.load(str(src), load_external_data=False)
    load_external_data_for_model(model, str(src.parent))
    casts, blocked = _fp16_prepare(model)
    converted = float16.convert_float_to_float16(
        model,
        keep_io_types=recipe.fp16_keep_io,
        disable_shape_infer=True,
        max_finite_val=FP16_MAX,
        op_block_list=float16.DEFAULT_OP_BLOCK_LIST,
        node_block_list=blocked,
    )
    fixed = 0
    for g in all_graphs(converted.graph):
        for n in g.node:
            if n.name in casts and n.name not in blocked:
                for a in n.attribute:
                    if a.name == "to" and a.i == TensorProto.FLOAT:
                        a.i = TensorProto.FLOAT16
                        fixed += 1
    save_model(converted, dst, external)
    io = "fp32 inputs/outputs kept" if recipe.fp16_keep_io else "fp16 inputs/outputs"
    notes = [io]
    if fixed:
        notes.append(f"{fixed} Cast(to=float) retargeted to fp16")
    if blocked:
        notes.append(f"{len(blocked)} node(s) kept fp32 for constants beyond fp16 range")
    return f"onnxconverter-common float16, {', '.join(notes)}"


def _int8_dynamic(src: Path, dst: Path, recipe: VariantRecipe, calibration: CalibrationSource) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = has_external_data(src)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        how = _pre_process(src, pre, external)
        quantize_dynamic(
            str(pre),
            str(dst),
            weight_type=QuantType.QInt8,
            reduce_range=recipe.reduce_range,
            use_external_data_format=external,
        )
    return f"onnxruntime quantize_dynamic, int8 weights{_narrowed(recipe)} ({how})"


def _narrowed(recipe: VariantRecipe) -> str:
    return " in 7 bits (reduce_range: this CPU has no VNNI)" if recipe.reduce_range else ""


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

    external = has_external_data(src)
    opset = default_opset(onnx.load(str(src), load_external_data=False))
    notes, per_channel, base = [], True, src
    with tempfile.TemporaryDirectory() as tmp:
        if opset < PER_CHANNEL_OPSET:
            upgraded = Path(tmp) / "upgraded.onnx"
            try:
                _upgrade_opset(src, upgraded, PER_CHANNEL_OPSET, external)
                base = upgraded
                notes.append(f"opset {opset} upgraded to {PER_CHANNEL_OPSET}")
            except Exception as exc:
                per_channel = False
                notes.append(f"opset {opset}, upgrade failed: {one_line(exc, 160)}")
        pre = Path(tmp) / "pre.onnx"
        notes.append(_pre_process(base, pre, external))
        quantize_static(
            str(pre),
            str(dst),
            Reader(calibration()),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            reduce_range=recipe.reduce_range,
            use_external_data_format=external,
        )
    weights = ("per-channel s8 weights" if per_channel else "per-tensor s8 weights") + _narrowed(recipe)
    return (
        f"onnxruntime quantize_static QDQ, {weights}, u8 activations, "
        f"{recipe.calibrator} calibration on {recipe.calibration} data ({', '.join(notes)})"
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
    save_model(model, dst, has_external_data(src))
    return f"onnxruntime MatMulNBits int4, symmetric blocks of {recipe.int4_block_size}, weight-only"


BUILDERS: dict[Precision, Callable[[Path, Path, VariantRecipe, CalibrationSource], str]] = {
    Precision.FP16: _fp16,
    Precision.INT8_DYNAMIC: _int8_dynamic,
    Precision.INT8_STATIC: _int8_static,
    Precision.INT4: _int4,
}
NEEDS_CALIBRATION = frozenset({Precision.INT8_STATIC})
