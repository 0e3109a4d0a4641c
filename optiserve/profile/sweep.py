"""The sweep spec, declared once: the YAML file and the CLI flags both come from
``SweepSpec``'s fields (Model Analyzer's single declaration of options).

A list field takes a comma-separated value on the command line (``--batch 1,2,4``)
and a YAML list in the file; the command line wins over the file.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from optiserve.errors import UsageError
from optiserve.runtimes.registry import check_options, get_runtime
from optiserve.types import BenchConfig, InputLayout, Precision
from optiserve.variants.recipe import CALIBRATORS, SYNTHETIC, VariantRecipe, default_reduce_range, file_digest

AUTO = "auto"
# What ``--precision auto`` adds to fp32, per model family, and why (measured: see README).
AUTO_CHOICE: dict[str, tuple[Precision, str]] = {
    "cnn": (
        Precision.INT8_STATIC,
        "static QDQ int8 is ONNX Runtime CPU's fast int8 path for convolutions; dynamic int8 turns "
        "Conv into ConvInteger, far slower than fp32 on the CNN (benchmarks/test_precision_speedup.py)",
    ),
    "transformer": (
        Precision.INT8_DYNAMIC,
        "dynamic int8 quantises the MatMul weights, needs no calibration data, and beat fp32 and "
        "static int8 on the encoder (benchmarks/test_precision_speedup.py)",
    ),
    "mlp": (
        Precision.INT8_STATIC,
        "on the MLP int8 pays only at large batches (benchmarks/test_precision_speedup.py, which asserts "
        "it at batch 64), so the sweep measures static int8 against fp32 at every batch",
    ),
    "other": (Precision.FP32, "no measured default for this family: fp32 only"),
}


# What auto sweeps instead when its choice cannot be built for a model (in order).
AUTO_FALLBACK: dict[str, tuple[Precision, ...]] = {
    "cnn": (Precision.INT8_DYNAMIC, Precision.FP16),
    "transformer": (Precision.INT8_STATIC, Precision.FP16),
    "mlp": (Precision.INT8_DYNAMIC, Precision.FP16),
    "other": (),
}


def _default_threads() -> list[int]:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return sorted({1, n})


class SweepSpec(BaseModel):
    """What to measure and how hard. Field names are the YAML keys; ``--field-name``
    (dashes for underscores) are the CLI flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime: list[str] = Field(["onnxruntime-cpu"], description="runtimes to sweep (comma list)")
    device: str | None = Field(None, description="auto, cpu or gpu: sweep every runtime of that kind instead")
    precision: list[str] = Field(["fp32"], description="precisions to sweep, or auto (comma list)")
    batch: list[int] = Field([1, 2, 4, 8, 16], description="batch sizes to sweep (comma list)")
    threads: list[int] = Field(default_factory=_default_threads, description="intra-op thread counts (comma list)")
    option: list[str] = Field([], description="runtime knobs to sweep, KEY=V1|V2 (comma list)")
    shape: list[str] = Field(
        [], description="dims the graph leaves open: NAME=N for a named dim, INPUT=D1,D2,.. for every dim but the batch"
    )
    batch_axis: list[str] = Field(
        [], description="which axis of an input is the batch, INPUT=AXIS or INPUT=none (default: inferred)"
    )
    inputs: Path | None = Field(None, description=".npz of real inputs keyed by input name")
    budget: float = Field(10.0, gt=0, description="seconds of measuring per config")
    warmup: float = Field(5.0, gt=0, description="most seconds of warm-up per config")
    target_ci: float = Field(0.05, gt=0, lt=1, description="stop when the p99's 95% CI is within this fraction")
    min_samples: int = Field(100, ge=2, description="fewest timed calls per config")
    timeout: float | None = Field(None, gt=0, description="kill a config after this many seconds (default: derived)")
    memory_limit_mb: int | None = Field(None, gt=0, description="address-space cap per config, in MiB")
    seed: int = Field(0, description="seed for synthetic inputs")
    calibration: Path | None = Field(None, description=".npz of real inputs to calibrate int8-static on")
    calibrator: list[str] = Field(["minmax"], description="int8-static calibrators: minmax, entropy, percentile")
    calibration_samples: int = Field(32, ge=1, description="synthetic calibration samples")
    labels: Path | None = Field(None, description=".npy of class labels for --inputs: real accuracy")
    eval_samples: int = Field(32, ge=1, description="samples compared against the fp32 reference")
    max_accuracy_drop: float | None = Field(None, ge=0, description="mark rows whose accuracy drop exceeds this")
    metric: str | None = Field(
        None, description="task metrics: auto, none, classes, sequence, detection or module:function (comma list)"
    )
    build_timeout: float = Field(600.0, gt=0, description="most seconds to build one precision variant")
    fp16_keep_io: bool = Field(True, description="fp16 variants keep fp32 inputs and outputs")
    int4_block_size: int = Field(32, ge=16, description="int4 quantisation block size")
    cache_dir: Path | None = Field(None, description="variant cache (default: ~/.cache/optiserve)")
    custom_ops: list[Path] = Field([], description="custom-op shared libraries registered in every session")
    serving: bool = Field(False, description="also measure the server's own cost per request (optiserve serve)")
    ceilings: bool = Field(
        True, description="measure ONNX Runtime's effective compute and memory ceilings here (a few seconds)"
    )
    preprocess: str | None = Field(
        None, description="time a pre-processing stage with each call: image:resize=224[,crop=..,src=640x480,impl=..]"
    )

    @field_validator("batch", "threads")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(x < 1 for x in v):
            raise ValueError("needs one or more whole numbers >= 1")
        return sorted(set(v))

    @field_validator("runtime", "precision", "calibrator")
    @classmethod
    def _nonempty(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("needs at least one value")
        return list(dict.fromkeys(v))

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        if v is not None and v not in ("auto", "cpu", "gpu"):
            raise ValueError("valid devices: auto, cpu, gpu")
        return v

    def runtimes(self) -> list[str]:
        """``--device`` picks runtimes by kind (auto: all, each unavailable one a failed row)."""
        if self.device is None:
            return list(self.runtime)
        from optiserve.runtimes.registry import RUNTIMES

        return [r.name for r in RUNTIMES if self.device == "auto" or r.device == self.device]

    @field_validator("precision")
    @classmethod
    def _precisions(cls, v: list[str]) -> list[str]:
        valid = [AUTO, *(p.value for p in Precision)]
        for item in v:
            if item.strip().lower() not in valid:
                raise ValueError(f"valid precisions: {', '.join(valid)}")
        return [item.strip().lower() for item in v]

    @field_validator("calibrator")
    @classmethod
    def _calibrators(cls, v: list[str]) -> list[str]:
        for item in v:
            if item not in CALIBRATORS:
                raise ValueError(f"valid calibrators: {', '.join(CALIBRATORS)}")
        return v

    def config_timeout(self) -> float:
        return self.timeout or (self.budget + self.warmup) * 2 + 120

    def option_grid(self) -> dict[str, list[str]]:
        grid: dict[str, list[str]] = {}
        for item in self.option:
            key, sep, values = item.partition("=")
            if not sep or not key or not values:
                raise UsageError(f"malformed --option {item!r}: expected KEY=V1|V2")
            grid[key.strip()] = [v.strip() for v in values.split("|") if v.strip()]
        return grid

    def precisions(self, family: str) -> list[Precision]:
        """The precisions to sweep, with ``auto`` expanded for the model's family."""
        out: list[Precision] = []
        for item in self.precision:
            chosen = [Precision.FP32, AUTO_CHOICE[family][0]] if item == AUTO else [Precision(item)]
            out.extend(p for p in chosen if p not in out)
        return out

    def recipes(self, precision: Precision, toolkit: str = "onnxruntime") -> list[VariantRecipe]:
        """One recipe per way of building ``precision`` with the runtime's ``toolkit``
        (ORT's calibrators are swept for int8-static; NNCF picks its own)."""
        if self.calibration is not None and not Path(self.calibration).exists():
            raise UsageError(f"calibration file not found: {self.calibration}")
        calib = file_digest(self.calibration) if self.calibration else SYNTHETIC
        sweep = precision is Precision.INT8_STATIC and toolkit == "onnxruntime"
        calibrators = self.calibrator if sweep else ["minmax"]
        return [
            VariantRecipe(
                precision=precision,
                calibrator=c,
                calibration=calib,
                calibration_samples=self.calibration_samples,
                fp16_keep_io=self.fp16_keep_io,
                int4_block_size=self.int4_block_size,
                seed=self.seed,
                toolkit=toolkit,
                reduce_range=default_reduce_range(precision),
            )
            for c in calibrators
        ]

    def batches(self, layout: InputLayout | None = None) -> tuple[list[int], str | None]:
        """The batch sizes the model can take, and why others were dropped (said once)."""
        if layout is None or layout.fixed_batch is None:
            return list(self.batch), None
        fixed = layout.fixed_batch
        kept = [b for b in self.batch if b == fixed] or [fixed]
        dropped = [b for b in self.batch if b != fixed]
        if not dropped:
            return kept, None
        return kept, (
            f"the model fixes its batch at {fixed}: batch {','.join(map(str, dropped))} skipped "
            f"(re-export it with a dynamic batch dim to sweep larger batches)"
        )

    def fed(self, layout: InputLayout | None) -> str:
        """What each config is fed, for its key: item shapes (batch axis left out) and the
        ``--inputs`` file's digest. Empty without a layout (keys as before)."""
        if layout is None:
            return ""
        parts = [
            f"{t.name}={','.join(str(d) for i, d in enumerate(t.shape) if i != t.batch_axis)}" for t in layout.inputs
        ]
        if self.inputs is not None and Path(self.inputs).is_file():
            from optiserve.models.graph import file_sha256

            parts.append(f"npz={file_sha256(Path(self.inputs))[:12]}")
        return ";".join(parts)

    def configs(self, family: str = "other", layout: InputLayout | None = None) -> list[BenchConfig]:
        """The cross product, ordered so cheap configs come first within a runtime."""
        grid = self.option_grid()
        batches, _ = self.batches(layout)
        fed = self.fed(layout)
        out = []
        names = self.runtimes()
        for key in grid:  # a knob swept side by side applies to the runtimes that have it, and to one at least
            if not any(key in get_runtime(n).options for n in names):
                check_options(get_runtime(names[0]), {key: grid[key][0]})
        for name in names:
            rt = get_runtime(name)
            keys = sorted(k for k in grid if k in rt.options)
            for combo in itertools.product(*(grid[k] for k in keys)):
                opts = check_options(rt, dict(zip(keys, combo, strict=True)))
                chosen = tuple(sorted((k, opts[k]) for k in keys))
                for prec in self.precisions(family):
                    for recipe in self.recipes(prec, rt.variant_toolkit):
                        variant = tuple(sorted(recipe.identity().items()))
                        for threads, batch in itertools.product(self.threads, batches):
                            out.append(
                                BenchConfig(name, prec, batch, threads, chosen, variant, self.preprocess or "", fed)
                            )
        return out


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list or any(get_origin(a) is list for a in get_args(annotation))


# Items that hold commas themselves (x=3,48,192): a comma starts a new item only before NAME=
_ITEM_LISTS = ("shape", "batch_axis")


def _split(value: Any, key: str = "") -> Any:
    if key in _ITEM_LISTS and isinstance(value, str | list):
        from optiserve.models.layout import split_items

        return split_items(value)
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_spec(file: Path | None = None, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """YAML file (if any) overlaid with CLI values; every error is one line naming the field."""
    data: dict[str, Any] = {}
    if file is not None:
        if not Path(file).exists():
            raise UsageError(f"sweep file not found: {file}")
        try:
            loaded = yaml.safe_load(Path(file).read_text())
        except yaml.YAMLError as exc:
            raise UsageError(f"sweep file {file} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UsageError(f"sweep file {file} must be a mapping of option: value")
        data.update({str(k).replace("-", "_"): v for k, v in (loaded or {}).items()})
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    for key, field in SweepSpec.model_fields.items():
        if key in data and _is_list(field.annotation):
            data[key] = _split(data[key], key)
    try:
        return SweepSpec(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = str(err["loc"][0]) if err["loc"] else "?"
        where = _flag(loc) if loc in SweepSpec.model_fields else repr(loc)
        given = data.get(loc, "")
        shown = ",".join(map(str, given)) if isinstance(given, list) else given
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise UsageError(f"malformed {where} {shown!r}: {msg}") from None
