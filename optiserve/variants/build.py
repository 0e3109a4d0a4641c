"""Build one precision variant with the library made for it, through the cache.

- fp16: ``onnxconverter_common.float16`` (fp32 inputs/outputs kept by default).
  Two of its faults are worked around: a ``Cast(to=float)`` of the model keeps
  ``to=float`` while the converter types its output fp16, so it is retargeted to
  fp16 afterwards; and constants beyond fp16's range (a BatchNormalization
  variance of 1e8) would be clamped, so the nodes that read them stay fp32.
- int8-dynamic: ``onnxruntime.quantization.quantize_dynamic`` (weights int8,
  activations quantised at run time).
- int8-static: ``quant_pre_process`` then ``quantize_static`` in QDQ format,
  per-channel int8 weights, uint8 activations (the U8S8 layout ONNX Runtime
  recommends on x86), calibrated with MinMax, Entropy or Percentile. Per-channel
  QDQ needs opset 13 (``DequantizeLinear``'s ``axis``): older models are upgraded
  first, or quantised per tensor when the upgrade fails; the method says which.
- int4: ``MatMulNBitsQuantizer``, weight-only, symmetric blocks, MatMul only.

Each build runs in a spawned child process under a time limit (a converter that
loops is killed, not waited for), with its working directory and temporary
folder inside the cache's scratch folder, so no tool can leave files in the
user's directory. A model with external data gets a variant with external data
(``KEY.onnx.data``); ``Variant.files`` lists every file to ship. The variant
must load in ONNX Runtime before it is cached.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from optiserve._reasons import one_line
from optiserve.errors import OptiserveError, VariantError
from optiserve.models.graph import all_graphs, default_opset
from optiserve.types import Precision
from optiserve.variants.cache import VariantCache
from optiserve.variants.recipe import VariantRecipe

Feeds = dict[str, np.ndarray]
CalibrationSource = Callable[[], Iterable[Feeds]]

DEFAULT_TIME_LIMIT_S = 600.0
# Bumped when a builder makes different bytes from the same libraries: old entries
# (fp16 with clamped constants, opset-11 QDQ that does not load) must not be reused.
BUILDER_REVISION = "2"
PER_CHANNEL_OPSET = 13
FP16_MAX = 65504.0


@dataclass(frozen=True)
class Variant:
    path: Path
    key: str
    method: str
    build_s: float
    cache_hit: bool
    files: tuple[Path, ...]  # the .onnx first, then its external-data files: what a deployment ships

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "method": self.method, "build_s": self.build_s, "cache_hit": self.cache_hit}


def tool_versions(toolkit: str = "onnxruntime") -> dict[str, str]:
    """Library versions that change a variant's bytes: part of its cache key (NNCF's and
    OpenVINO's only for its variants, so installing them re-keys nothing else)."""
    out = {"optiserve-builders": BUILDER_REVISION}
    extra = ("nncf", "openvino") if toolkit == "nncf" else ()
    for dist in ("optiserve", "onnx", "onnxruntime", "onnxconverter-common", "onnx-ir", *extra):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


# --- model files -------------------------------------------------------------------------------


def _has_external_data(path: Path) -> bool:
    from optiserve.models.graph import external_data_files

    return bool(external_data_files(onnx.load(str(path), load_external_data=False), path.parent))


def _save(model: onnx.ModelProto, dst: Path, external: bool) -> None:
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


def _check_loads(path: Path, what: str = "the built graph") -> None:
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
    _save(up, dst, external)
    _check_loads(dst, "the upgraded graph")


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

    external = _has_external_data(src)
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
    _save(converted, dst, external)
    io = "fp32 inputs/outputs kept" if recipe.fp16_keep_io else "fp16 inputs/outputs"
    notes = [io]
    if fixed:
        notes.append(f"{fixed} Cast(to=float) retargeted to fp16")
    if blocked:
        notes.append(f"{len(blocked)} node(s) kept fp32 for constants beyond fp16 range")
    return f"onnxconverter-common float16, {', '.join(notes)}"


def _int8_dynamic(src: Path, dst: Path, recipe: VariantRecipe, calibration: CalibrationSource) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = _has_external_data(src)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        how = _pre_process(src, pre, external)
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, use_external_data_format=external)
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

    external = _has_external_data(src)
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
            use_external_data_format=external,
        )
    weights = "per-channel s8 weights" if per_channel else "per-tensor s8 weights"
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
    _save(model, dst, _has_external_data(src))
    return f"onnxruntime MatMulNBits int4, symmetric blocks of {recipe.int4_block_size}, weight-only"


BUILDERS: dict[Precision, Callable[[Path, Path, VariantRecipe, CalibrationSource], str]] = {
    Precision.FP16: _fp16,
    Precision.INT8_DYNAMIC: _int8_dynamic,
    Precision.INT8_STATIC: _int8_static,
    Precision.INT4: _int4,
}
NEEDS_CALIBRATION = frozenset({Precision.INT8_STATIC})


def builder_for(recipe: VariantRecipe) -> Callable[[Path, Path, VariantRecipe, CalibrationSource], str]:
    """The builder of the recipe's toolkit for its precision; none is a ``VariantError``."""
    builders = BUILDERS
    if recipe.toolkit == "nncf":
        from optiserve.variants.nncf_build import NNCF_BUILDERS

        builders = NNCF_BUILDERS
    if recipe.precision not in builders:
        raise VariantError(f"no variant builder for {recipe.precision} in {recipe.toolkit}")
    return builders[recipe.precision]


def _check_built(path: Path, recipe: VariantRecipe) -> None:
    """An NNCF variant must compile in OpenVINO (what runs it); an ORT one must load in ORT."""
    if recipe.toolkit == "nncf":
        from optiserve.variants.nncf_build import check_compiles

        check_compiles(path)
    else:
        _check_loads(path)


# --- the child process -----------------------------------------------------------------------


def _save_calibration(calibration: CalibrationSource, path: Path) -> list[list[str]]:
    """Materialise the calibration batches (a closure cannot cross a spawn) as one .npz;
    the input names of each batch, in order, travel with the job."""
    names: list[list[str]] = []
    arrays: dict[str, np.ndarray] = {}
    for i, feeds in enumerate(calibration()):
        names.append(list(feeds))
        for j, value in enumerate(feeds.values()):
            arrays[f"s{i}_{j}"] = np.asarray(value)
    if not names:
        raise VariantError("int8-static needs calibration batches; the calibration source gave none")
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return names


def _load_calibration(path: Path | None, names: list[list[str]]) -> CalibrationSource:
    def source() -> Iterator[Feeds]:
        if path is None:
            return
        with np.load(path) as z:
            for i, batch in enumerate(names):
                yield {n: z[f"s{i}_{j}"] for j, n in enumerate(batch)}

    return source


def _exit_with(parent: int) -> None:
    """A build whose parent died is of use to no one: stop, so its scratch can be swept."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _child(job_path: str) -> None:
    """Entry of the build process: run the builder, check the result, write ``result.json``.

    Started as ``python -c`` in the scratch folder (not ``multiprocessing``, which would
    re-run a caller's unguarded script), with ``$TMPDIR`` there too."""
    job = json.loads(Path(job_path).read_text())
    work = Path(job["work"])
    tempfile.tempdir = os.environ.get("TMPDIR") or None
    warnings.simplefilter("ignore")
    _exit_with(int(job["parent"]))
    recipe = VariantRecipe.from_dict(job["recipe"])
    dst = Path(job["dst"])
    try:
        calib = _load_calibration(Path(job["calibration"]) if job["calibration"] else None, job["names"])
        method = builder_for(recipe)(Path(job["src"]), dst, recipe, calib)
        _check_built(dst, recipe)
        result: dict[str, Any] = {"method": method}
    except OptiserveError as exc:
        result = {"error": one_line(exc)}
    except BaseException as exc:  # the tools' own failure, one line of it
        result = {"error": f"building {recipe.precision} failed: {one_line(exc)}"}
    out = work / "result.json"
    out.with_suffix(".tmp").write_text(json.dumps(result))
    os.replace(out.with_suffix(".tmp"), out)


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        sig = -code
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        return f"killed by {name}" + (" (out of memory?)" if sig == signal.SIGKILL else "")
    return f"exit code {code}"


def _run_child(
    src: Path, dst: Path, work: Path, recipe: VariantRecipe, calibration: CalibrationSource, limit_s: float
) -> str:
    calib, names = None, []
    if recipe.precision in NEEDS_CALIBRATION:
        calib = work / "calibration.npz"
        try:
            names = _save_calibration(calibration, calib)
        except OptiserveError:
            raise
        except Exception as exc:
            raise VariantError(f"building {recipe.precision} failed: calibration data: {one_line(exc)}") from None
    job = {
        "src": str(src),
        "dst": str(dst),
        "work": str(work),
        "recipe": recipe.to_dict(),
        "calibration": str(calib) if calib else None,
        "names": names,
        "parent": os.getpid(),
    }
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job))
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp)}
    # appended, not prepended: an installed optiserve wins, a bare checkout still imports
    root = str(Path(__file__).resolve().parents[2])
    code = f"import sys; sys.path.append({root!r}); from optiserve.variants.build import _child; _child(sys.argv[1])"
    with (work / "build.log").open("wb") as log:  # the tools' warnings stay out of the user's terminal
        proc = subprocess.Popen(
            [sys.executable, "-P", "-c", code, str(job_path)],  # -P: the scratch folder is not on sys.path
            cwd=work,  # tools that write into the working directory write here
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            proc.wait(limit_s)
        except subprocess.TimeoutExpired:
            raise VariantError(f"building {recipe.precision} stopped after {limit_s:g} s (time limit)") from None
        finally:
            if proc.poll() is None:  # the time limit, or a Ctrl-C in the parent
                proc.kill()
                proc.wait()
    try:
        result = json.loads((work / "result.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise VariantError(
            f"building {recipe.precision} failed: the build process died ({_death(proc.returncode)})"
        ) from None
    if "error" in result:
        raise VariantError(str(result["error"]))
    return str(result["method"])


def build_variant(
    model: Path,
    model_sha256: str,
    recipe: VariantRecipe,
    cache: VariantCache,
    calibration: CalibrationSource,
    time_limit_s: float | None = None,
) -> Variant:
    """The variant for ``recipe``: from the cache if built before, else built now in a child
    process stopped after ``time_limit_s`` (default ``DEFAULT_TIME_LIMIT_S``)."""
    builder_for(recipe)  # an unknown precision fails here, before any file is written
    limit = DEFAULT_TIME_LIMIT_S if time_limit_s is None else float(time_limit_s)
    if not limit > 0:
        raise VariantError(f"a variant build's time limit must be positive, not {limit:g} s")
    key = recipe.cache_key(model_sha256, tool_versions(recipe.toolkit))
    hit = cache.get(key)
    if hit is not None:
        path, meta = hit
        return Variant(path, key, meta["method"], float(meta["build_s"]), True, cache.files(key, meta))
    src = Path(model).resolve()

    def build(dst: Path, work: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        method = _run_child(src, dst, work, recipe, calibration, limit)
        return {
            "method": method,
            "build_s": time.perf_counter() - t0,
            "model_sha256": model_sha256,
            "recipe": recipe.to_dict(),
            "versions": tool_versions(recipe.toolkit),
        }

    path, meta = cache.put(key, build)
    return Variant(path, key, meta["method"], float(meta["build_s"]), False, cache.files(key, meta))
