"""A Triton model repository for one planned model: ``NAME/config.pbtxt`` and ``NAME/1/model.onnx``.

The config is built as Triton's own ``ModelConfig`` protobuf message and
written with protobuf's text format, so it parses by construction; the knobs
come from the plan (max batch, the preferred size, the queue delay in
microseconds, instance count and kind, intra-op threads on CPUs, TensorRT and
its precision mode on GPUs). The model file placed is the precision variant
the plan chose, built by optiserve's variant builder (cached by content): a
CPU int8 plan ships the quantised graph, a GPU fp16 plan ships fp32 and lets
TensorRT build fp16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from optiserve._imports import optional_import
from optiserve.emit.common import Deployable
from optiserve.models.graph import load_onnx

_ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.STRING: "TYPE_STRING",
}
TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "bf16": "FP16", "int8-static": "INT8", "int8-dynamic": "INT8"}


def _tensors(
    model: onnx.ModelProto, which: str, axes: dict[str, int | None] | None
) -> list[tuple[str, str, list[int]]]:
    """(name, Triton type, dims): without the batch axis when Triton batches (``axes``
    given), else every dim (-1 where the graph leaves it open)."""
    inits = {i.name for i in model.graph.initializer}
    out = []
    for vi in getattr(model.graph, which):
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if axes is not None:
            axis = axes.get(vi.name, 0)
            dims = [d for i, d in enumerate(dims) if i != axis]
        out.append((vi.name, _ONNX_TO_TRITON.get(tt.elem_type, "TYPE_FP32"), dims))
    return out


def triton_batches(d: Deployable) -> bool:
    """Triton's batching puts the batch first in every input and output: only a model
    whose layout is like that (no state batched on axis 1, no scalars, no fixed batch)
    gets ``max_batch_size`` > 0; any other is served with full shapes and no batching."""
    lay = d.layout
    if lay is None:
        return True
    return (
        lay.fixed_batch is None
        and all(t.batch_axis == 0 for t in lay.inputs)
        and all(a == 0 for _, a in lay.output_axes)
    )


def served_file(d: Deployable, model: Path) -> Path:
    """The file Triton loads: the variant the profile measured (from the variant cache, its
    digest checked against the plan), or the model itself for fp32 and for GPU fp16/bf16,
    which TensorRT builds from the fp32 graph. Nothing is rebuilt here."""
    p = d.placement["precision"]
    if p == "fp32" or (d.gpu and p in ("fp16", "bf16")):
        return model
    if d.artifact is None:
        return _legacy_variant(d, model)
    if not d.prebuilt:
        return model
    from optiserve.errors import UsageError
    from optiserve.models.graph import require_sha256

    want = d.served_sha256  # refuses a plan whose variant left the cache
    path = Path(str(d.artifact.get("path") if d.artifact else ""))
    if not path.is_file():
        raise UsageError(
            f"the plan's {d.placement['precision']} variant of {d.model!r} is not at {path}: re-profile that "
            "precision here (or pass the profile's --cache-dir), then re-plan"
        )
    require_sha256(path, want, "the plan's artifact", " to ship it")
    return path


def _legacy_variant(d: Deployable, model: Path) -> Path:
    """A plan written before plans named their artifact: the variant is built here with
    synthetic calibration, as optiserve then did (``emit`` warns; re-plan to ship the measured one)."""
    from optiserve.models.graph import inspect_model
    from optiserve.models.layout import infer_layout
    from optiserve.types import Precision
    from optiserve.variants.calibration import build_from_recipe, recipe_for

    info = inspect_model(model)
    layout = d.layout or infer_layout(info)
    return build_from_recipe(model, info, layout, recipe_for(Precision.parse(d.placement["precision"]))).path


def model_files(served: Path) -> dict[str, Path]:
    """What goes in ``NAME/1/``: the graph as ``model.onnx`` and every external-data file
    it names, under the name it names it by (ONNX Runtime looks for them beside the graph,
    so a model past 2 GB, or its variant's ``KEY.onnx.data``, ships whole)."""
    from optiserve.errors import ModelError
    from optiserve.models.graph import external_data_files

    served = Path(served)
    out = {"model.onnx": served}
    for f in external_data_files(load_onnx(served), served.parent):
        rel = f.relative_to(served.parent) if f.is_relative_to(served.parent) else f
        if rel.is_absolute() or ".." in rel.parts or rel.as_posix() == "model.onnx":
            raise ModelError(f"{served.name} names external data {rel.as_posix()!r}, which cannot ship beside it")
        if not f.is_file():
            raise ModelError(f"{served.name} keeps weights in {rel.as_posix()}, which is missing beside it")
        out[rel.as_posix()] = f
    return out


def model_config(d: Deployable, served: Path) -> Any:
    mc = optional_import("tritonclient.grpc.model_config_pb2", "emit")
    p = d.placement
    graph = load_onnx(served)
    batching = triton_batches(d)
    max_batch = int(p["max_batch"]) if batching else 0
    openvino = p.get("runtime") == "openvino"  # Triton's OpenVINO backend reads the same ONNX file
    cfg = (
        mc.ModelConfig(name=d.name, backend="openvino", default_model_filename="model.onnx", max_batch_size=max_batch)
        if openvino
        else mc.ModelConfig(name=d.name, platform="onnxruntime_onnx", max_batch_size=max_batch)
    )
    axes = None
    if batching:
        axes = {t.name: t.batch_axis for t in d.layout.inputs} if d.layout else {}
        axes.update(dict(d.layout.output_axes) if d.layout else {})
    for name, dtype, dims in _tensors(graph, "input", axes):
        t = cfg.input.add()
        t.name, t.data_type = name, getattr(mc, dtype)
        if dims:
            t.dims.extend(dims)
        else:  # a scalar: Triton wants one dim, reshaped away
            t.dims.extend([1])
            t.reshape.SetInParent()
    for name, dtype, dims in _tensors(graph, "output", axes):
        t = cfg.output.add()
        t.name, t.data_type = name, getattr(mc, dtype)
        if dims:
            t.dims.extend(dims)
        else:
            t.dims.extend([1])
            t.reshape.SetInParent()
    if batching:
        cfg.dynamic_batching.preferred_batch_size.extend([int(p["max_batch"])])
        cfg.dynamic_batching.max_queue_delay_microseconds = round(float(p["max_delay_ms"]) * 1000)
    group = cfg.instance_group.add()
    group.count = int(p["instances_per_pod"])
    if d.gpu:
        group.kind = mc.ModelInstanceGroup.KIND_GPU
        acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add()
        acc.name = "tensorrt"
        acc.parameters["precision_mode"] = TRT_PRECISION.get(p["precision"], "FP32")
        acc.parameters["max_workspace_size_bytes"] = str(1 << 30)
    elif openvino:  # the CPU plugin's properties, as the profile compiled it (runtimes/openvino.py)
        group.kind = mc.ModelInstanceGroup.KIND_CPU
        cfg.parameters["PERFORMANCE_HINT"].string_value = "LATENCY"
        cfg.parameters["NUM_STREAMS"].string_value = "1"
        cfg.parameters["INFERENCE_NUM_THREADS"].string_value = str(p["threads_per_instance"] or 1)
        from optiserve.runtimes.openvino import inference_precision

        cfg.parameters["INFERENCE_PRECISION_HINT"].string_value = inference_precision(str(p["precision"]))
    else:
        group.kind = mc.ModelInstanceGroup.KIND_CPU
        cfg.parameters["intra_op_thread_count"].string_value = str(p["threads_per_instance"] or 1)
        cfg.parameters["inter_op_thread_count"].string_value = "1"
    return cfg


def config_text(d: Deployable, served: Path) -> str:
    """The config in protobuf text format, provenance in comment lines at the top (the parser skips them)."""
    text_format = optional_import("google.protobuf.text_format", "emit")
    header = "".join(f"# {k}: {v}\n" for k, v in d.annotations().items())
    return header + str(text_format.MessageToString(model_config(d, served)))
