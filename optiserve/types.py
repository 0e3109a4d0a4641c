"""Plain data shared by every layer: frozen dataclasses and enums, no GPU imports.

Everything here serialises to JSON-compatible dicts so a profile written today
can be read by a later version (``SCHEMA_VERSION`` says which layout it has).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from optiserve.errors import UnknownNameError

SCHEMA_VERSION = 2  # 2: precision variants and accuracy columns (1 still reads)


class Precision(StrEnum):
    """Numeric precision a model variant runs at."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8_DYNAMIC = "int8-dynamic"
    INT8_STATIC = "int8-static"
    INT4 = "int4"

    @classmethod
    def parse(cls, text: str) -> Precision:
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise UnknownNameError("precision", text, [p.value for p in cls]) from None


class LatencySource(StrEnum):
    """Where a plan's latency comes from. Every latency under load is simulated by the
    queueing model; what differs is the service times it was fed (never "measured")."""

    MEASURED_SERVICE = "simulated from measured service times"
    TRANSFERRED_SERVICE = "simulated from transferred service times"

    @classmethod
    def of(cls, transferred: bool) -> LatencySource:
        return cls.TRANSFERRED_SERVICE if transferred else cls.MEASURED_SERVICE

    @staticmethod
    def transferred(label: object) -> bool:
        """True for service times transferred to other hardware (plans before 0.1 said "predicted")."""
        return label in (LatencySource.TRANSFERRED_SERVICE.value, "predicted")


class Status(StrEnum):
    """Outcome of one measured config."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class BenchConfig:
    """One point of a sweep: everything that changes what gets measured.

    ``options`` holds runtime-specific knobs (e.g. graph optimisation level);
    they are part of the identity so two configs differing only there are distinct.
    """

    runtime: str
    precision: Precision
    batch_size: int
    threads: int
    options: tuple[tuple[str, str], ...] = ()
    variant: tuple[tuple[str, str], ...] = ()  # how the precision variant is built (calibrator, ...)
    preprocess: str = ""  # the pre-processing stage timed with each call ("" = inference only)
    inputs: str = ""  # what was fed: each input's item shape and the --inputs file's digest ("" = unrecorded)

    @property
    def key(self) -> str:
        """Stable identity across runs, used to resume a sweep: two sequence lengths are two keys."""
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def keys(self) -> tuple[str, ...]:
        """The key, and the key rows written before inputs were part of it (same shapes
        only: resuming with other shapes is refused by the layout check)."""
        if not self.inputs:
            return (self.key,)
        return (self.key, replace(self, inputs="").key)

    def done_in(self, done: set[str]) -> bool:
        return any(k in done for k in self.keys)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "runtime": self.runtime,
            "precision": self.precision.value,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "options": dict(self.options),
        }
        if self.variant:  # absent when empty, so fp32 keys stay as they were
            d["variant"] = dict(self.variant)
        if self.preprocess:
            d["preprocess"] = self.preprocess
        if self.inputs:
            d["inputs"] = self.inputs
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchConfig:
        return cls(
            runtime=d["runtime"],
            precision=Precision(d["precision"]),
            batch_size=int(d["batch_size"]),
            threads=int(d["threads"]),
            options=tuple(sorted((str(k), str(v)) for k, v in dict(d["options"]).items())),
            variant=tuple(sorted((str(k), str(v)) for k, v in dict(d.get("variant") or {}).items())),
            preprocess=str(d.get("preprocess") or ""),
            inputs=str(d.get("inputs") or ""),
        )

    def label(self) -> str:
        shown = [(k, v) for k, v in self.variant if k == "calibrator"]
        extra = "".join(f" {k}={v}" for k, v in (*self.options, *shown))
        pre = " +preprocess" if self.preprocess else ""
        return f"{self.runtime} {self.precision} b={self.batch_size} t={self.threads}{extra}{pre}"


@dataclass(frozen=True)
class TensorLayout:
    """One model input as every layer sees it: dtype, resolved shape, batch axis.

    ``shape`` is the concrete shape at batch 1 (every dynamic dim resolved);
    ``batch_axis`` is None for inputs that are never batched (scalars such as a
    sample rate, or constants): those are passed as given, never tiled or split."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    batch_axis: int | None

    def at(self, batch: int) -> tuple[int, ...]:
        """The shape of this input in a call of ``batch`` rows."""
        if self.batch_axis is None:
            return self.shape
        s = list(self.shape)
        s[self.batch_axis] = batch
        return tuple(s)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "batch_axis": self.batch_axis}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorLayout:
        axis = d.get("batch_axis")
        return cls(
            str(d["name"]), str(d["dtype"]), tuple(int(x) for x in d["shape"]), None if axis is None else int(axis)
        )


@dataclass(frozen=True)
class InputLayout:
    """Every input's layout plus what the model allows as a batch.

    ``fixed_batch`` is set when the graph fixes the batch dim (1 for many exported
    detectors): then that is the only batch size the model can run. ``output_axes``
    holds the batch axis of each output (None: not batched, e.g. a pooled state)."""

    inputs: tuple[TensorLayout, ...]
    fixed_batch: int | None = None
    output_axes: tuple[tuple[str, int | None], ...] = ()

    def shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        return {t.name: t.at(batch) for t in self.inputs}

    def allows(self, batch: int) -> bool:
        return self.fixed_batch is None or batch == self.fixed_batch

    @property
    def batched(self) -> tuple[TensorLayout, ...]:
        return tuple(t for t in self.inputs if t.batch_axis is not None)

    def get(self, name: str) -> TensorLayout:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)

    def output_axis(self, name: str, default: int | None = 0) -> int | None:
        return dict(self.output_axes).get(name, default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "fixed_batch": self.fixed_batch,
            "output_axes": dict(self.output_axes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputLayout:
        fixed = d.get("fixed_batch")
        return cls(
            inputs=tuple(TensorLayout.from_dict(t) for t in d.get("inputs") or ()),
            fixed_batch=None if fixed is None else int(fixed),
            output_axes=tuple(
                (str(k), None if v is None else int(v)) for k, v in dict(d.get("output_axes") or {}).items()
            ),
        )


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-call latencies in milliseconds, with the p99's confidence interval."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float
    p99_ci_low: float
    p99_ci_high: float

    @property
    def p99_ci_rel(self) -> float:
        """Half-width of the p99 confidence interval relative to the p99."""
        return (self.p99_ci_high - self.p99_ci_low) / (2 * self.p99) if self.p99 > 0 else 0.0


@dataclass(frozen=True)
class AccuracyReport:
    """A variant's outputs against the fp32 reference on the same inputs.

    ``drop`` is the figure ``--max-accuracy-drop`` bounds: the worst of
    ``checks``, every gated figure of every output (a task metric where the
    output's task is known, else the relative L2 of its worst group) and of
    any user metric. ``drop_metric`` names it (accuracy, top1-disagreement,
    relative-l2, step-disagreement, detection-disagreement, detection-iou-loss,
    mismatch and shape-mismatch for non-float or reshaped outputs, or the
    user's module:function); ``output``/``worst_output`` and
    ``worst_group`` (numpy-style, ``[:, :, 4]``) say where it was. The overall
    figures span every float output (cosine: the worst output's mean);
    ``per_output`` has each one's figures and groups. Profiles
    written before these fields judged the first float output only: they read
    back with the defaults. ``synthetic`` is true when inputs or calibration
    data were synthetic, not the user's."""

    samples: int
    output: int
    max_abs_error: float
    rel_l2_error: float
    cosine: float
    top1_agreement: float | None
    accuracy: float | None
    reference_accuracy: float | None
    drop: float
    drop_metric: str
    synthetic: bool
    worst_output: str = ""
    worst_group: str = ""
    group_error: float | None = None  # the worst group's relative L2 over all outputs, gated or not
    checks: dict[str, float] = field(default_factory=dict)  # "output:metric" (or the user's metric) -> drop
    per_output: dict[str, dict[str, Any]] = field(default_factory=dict)  # output name -> its figures (JSON)


@dataclass(frozen=True)
class Measurement:
    """The result of one config: measured figures, or the reason it failed.

    Raw samples (nanoseconds, one per call) are kept so later analysis can
    recompute any statistic; ``warnings`` carries stability complaints.
    """

    config: BenchConfig
    status: Status
    error: str = ""
    stats: LatencyStats | None = None
    throughput: float = 0.0  # items/s, single stream
    load_time_s: float = 0.0
    warmup_iterations: int = 0
    warmup_stable: bool = False
    peak_rss_mb: float = 0.0
    model_rss_mb: float = 0.0
    wall_time_s: float = 0.0
    stop_reason: str = ""
    warnings: tuple[str, ...] = ()
    samples_ns: tuple[int, ...] = field(default=(), repr=False)
    accuracy: AccuracyReport | None = None
    within_tolerance: bool | None = None  # None: no --max-accuracy-drop given
    variant: dict[str, Any] = field(default_factory=dict)  # key, method, build_s, cache_hit
    stages: dict[str, Any] = field(default_factory=dict)  # stage -> {p50_ms, p99_ms, mean_ms} or None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    """Everything measured for one model on one machine: metadata plus one row per config."""

    meta: dict[str, Any]
    measurements: tuple[Measurement, ...]

    @property
    def ok(self) -> tuple[Measurement, ...]:
        return tuple(m for m in self.measurements if m.status is Status.OK)

    def to_pandas(self) -> Any:
        """A DataFrame with one row per config (raw samples in ``samples_ns``)."""
        import pandas as pd

        from optiserve._rows import measurement_row

        return pd.DataFrame([measurement_row(m) for m in self.measurements])
