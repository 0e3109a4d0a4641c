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
from optiserve.types import BenchConfig, Precision


def _default_threads() -> list[int]:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return sorted({1, n})


class SweepSpec(BaseModel):
    """What to measure and how hard. Field names are the YAML keys; ``--field-name``
    (dashes for underscores) are the CLI flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime: list[str] = Field(["onnxruntime-cpu"], description="runtimes to sweep (comma list)")
    precision: list[Precision] = Field([Precision.FP32], description="precisions to sweep (comma list)")
    batch: list[int] = Field([1, 2, 4, 8, 16], description="batch sizes to sweep (comma list)")
    threads: list[int] = Field(default_factory=_default_threads, description="intra-op thread counts (comma list)")
    option: list[str] = Field([], description="runtime knobs to sweep, KEY=V1|V2 (comma list)")
    shape: list[str] = Field([], description="dims the graph leaves open, NAME=DIMS (comma list)")
    inputs: Path | None = Field(None, description=".npz of real inputs keyed by input name")
    budget: float = Field(10.0, gt=0, description="seconds of measuring per config")
    warmup: float = Field(5.0, gt=0, description="most seconds of warm-up per config")
    target_ci: float = Field(0.05, gt=0, lt=1, description="stop when the p99's 95% CI is within this fraction")
    min_samples: int = Field(100, ge=2, description="fewest timed calls per config")
    timeout: float | None = Field(None, gt=0, description="kill a config after this many seconds (default: derived)")
    memory_limit_mb: int | None = Field(None, gt=0, description="address-space cap per config, in MiB")
    seed: int = Field(0, description="seed for synthetic inputs")

    @field_validator("batch", "threads")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(x < 1 for x in v):
            raise ValueError("needs one or more whole numbers >= 1")
        return sorted(set(v))

    @field_validator("runtime", "precision")
    @classmethod
    def _nonempty(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("needs at least one value")
        return list(dict.fromkeys(v))

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

    def configs(self) -> list[BenchConfig]:
        """The cross product, ordered so cheap configs come first within a runtime."""
        grid = self.option_grid()
        out = []
        for name in self.runtime:
            rt = get_runtime(name)
            keys = sorted(grid)
            for combo in itertools.product(*(grid[k] for k in keys)):
                opts = check_options(rt, dict(zip(keys, combo, strict=True)))
                chosen = tuple(sorted((k, opts[k]) for k in keys))
                for prec, threads, batch in itertools.product(self.precision, self.threads, self.batch):
                    out.append(BenchConfig(name, prec, batch, threads, chosen))
        return out


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list or any(get_origin(a) is list for a in get_args(annotation))


def _split(value: Any) -> Any:
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
            data[key] = _split(data[key])
    try:
        return SweepSpec(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = str(err["loc"][0]) if err["loc"] else "?"
        where = _flag(loc) if loc in SweepSpec.model_fields else repr(loc)
        given = data.get(loc, "")
        shown = ",".join(map(str, given)) if isinstance(given, list) else given
        msg = err["msg"]
        if loc == "precision":
            msg = f"valid precisions: {', '.join(p.value for p in Precision)}"
        raise UsageError(f"malformed {where} {shown!r}: {msg}") from None
