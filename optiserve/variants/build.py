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

Those builders live in ``ort_recipes.py``; NNCF's (the ``nncf`` toolkit, for OpenVINO)
in ``nncf_build.py``. This module runs them.

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
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from optiserve._reasons import one_line
from optiserve.errors import OptiserveError, VariantError
from optiserve.variants.cache import VariantCache
from optiserve.variants.ort_recipes import (
    BUILDERS,
    NEEDS_CALIBRATION,
    CalibrationSource,
    Feeds,
    check_loads,
)
from optiserve.variants.recipe import VariantRecipe

DEFAULT_TIME_LIMIT_S = 600.0
# Bumped when a builder makes different bytes from the same libraries: old entries
# (fp16 with clamped constants, opset-11 QDQ that does not load) must not be reused.
BUILDER_REVISION = "2"


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
        check_loads(path)


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
