"""Regression gate for CI: is ``new`` slower than ``base`` beyond noise?

Each matched config gets the ratio new/base of a latency statistic and a
bootstrap confidence interval of that ratio. A config only fails the gate when
the whole interval lies above ``1 + max_regression``: a CI job must not go red
because two runs of the same code drew different tails.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from optiserve.errors import UnknownNameError, UsageError
from optiserve.profile.store import PARQUET, SIDECAR, load_profile

# metric -> quantile (None: the mean)
METRICS: dict[str, float | None] = {"p50": 0.5, "median": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "mean": None}
MIN_SAMPLES_FLOOR = 20  # below this even a median's bootstrap is too coarse to gate on
MIN_RESAMPLES = 100
LOADTEST_KEY = "loadtest"
_CHUNK_ELEMENTS = 1 << 21  # resampled values held at once: ~16 MiB of indices, whatever the sample count


class Verdict(StrEnum):
    """What the interval of new/base says, regardless of the gate's tolerance."""

    WORSE = "worse"
    BETTER = "better"
    SAME = "no significant change"
    INSUFFICIENT = "insufficient samples"


@dataclass(frozen=True)
class Row:
    """One matched config. Times are the metric in ms; ``regressed`` is the gate."""

    label: str
    key: str
    n_base: int
    n_new: int
    base_ms: float
    new_ms: float
    ratio: float
    ci_low: float
    ci_high: float
    verdict: Verdict
    regressed: bool


@dataclass(frozen=True)
class Comparison:
    """Everything the gate decided, with the parameters it decided under."""

    base: str
    new: str
    metric: str
    max_regression: float
    confidence: float
    resamples: int
    seed: int
    rows: tuple[Row, ...]
    only_base: tuple[str, ...] = ()
    only_new: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def regressed(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.regressed)

    @property
    def failed(self) -> bool:
        """True when any config regressed: the CI job should fail."""
        return any(r.regressed for r in self.rows)


@dataclass(frozen=True)
class _Config:
    label: str
    samples_ms: np.ndarray


@dataclass(frozen=True)
class _Run:
    kind: str  # "profile" or "loadtest"
    configs: dict[str, _Config]  # key -> config, in the order measured
    hardware_id: str | None = None
    warnings: tuple[str, ...] = ()
    model: tuple[str, str] | None = None  # (name, sha256) of a profile's model


def min_samples(metric: str) -> int:
    """Samples a side needs before the metric's bootstrap is trusted: at least ~1 beyond the
    quantile (100 for the p99), or resamples just shuffle the few largest calls."""
    q = METRICS[metric]
    return MIN_SAMPLES_FLOOR if q is None else max(MIN_SAMPLES_FLOOR, round(1 / (1 - q)))


def _load(path: Path | str, role: str) -> _Run:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{role} {p} does not exist")
    if p.is_dir() or p.name in (PARQUET, SIDECAR):
        return _load_profile(p)
    return _load_loadtest(p, role)


def _load_profile(p: Path) -> _Run:
    prof = load_profile(p)  # StoreError (a UsageError) when it is not a readable profile
    configs = {  # keyed without what was fed, so profiles written before inputs were in the key still pair up
        m.config.keys[-1]: _Config(m.config.label(), np.asarray(m.samples_ns, dtype=np.float64) / 1e6) for m in prof.ok
    }
    hw = prof.meta.get("hardware")
    hw_id = hw.get("id") if isinstance(hw, dict) else None
    model = (str(prof.meta["model"]["name"]), str(prof.meta["model"]["sha256"]))
    return _Run("profile", configs, str(hw_id) if hw_id is not None else None, model=model)


def _load_loadtest(p: Path, role: str) -> _Run:
    not_ours = f"{role} {p} is neither a profile folder nor a load-test JSON (optiserve loadtest --json)"
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UsageError(not_ours) from None
    if not isinstance(data, dict):
        raise UsageError(not_ours)
    if "latency_ms" not in data:
        raise UsageError(f"{role} {p} has no 'latency_ms' list; write it with optiserve loadtest --json")
    lat = data["latency_ms"]
    if not isinstance(lat, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in lat):
        raise UsageError(f"{role} {p}: 'latency_ms' must be a list of numbers")
    samples = np.asarray(lat, dtype=np.float64)
    if not np.isfinite(samples).all():
        raise UsageError(f"{role} {p}: 'latency_ms' holds non-finite values")
    rate = data.get("target_rate")
    label = f"loadtest {data.get('url', '?')} @ {rate:g}/s" if isinstance(rate, int | float) else "loadtest"
    warnings: tuple[str, ...] = ()
    if data.get("valid") is False:
        warnings = (f"{role} load test is marked invalid (the client fell behind its schedule); latencies are suspect",)
    return _Run("loadtest", {LOADTEST_KEY: _Config(label, samples)}, None, warnings)


def _stat(x: np.ndarray, q: float | None) -> np.ndarray:
    """The metric along the last axis."""
    return np.asarray(x.mean(axis=-1) if q is None else np.quantile(x, q, axis=-1))


def _bootstrap(x: np.ndarray, q: float | None, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The metric of ``resamples`` resamples with replacement, drawn a chunk at a time so
    1e5 samples x 2000 resamples never materialise at once. For a quantile, ``x`` is sorted
    once and the resampled *indices* are partitioned: the order statistics of ``x[idx]`` are
    ``x`` at those of ``idx``, which is numpy's linear quantile about 3x faster."""
    n = x.size
    chunk = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty(resamples)
    if q is not None:
        x = np.sort(x)
        h = (n - 1) * q
        lo = math.floor(h)
        hi, frac = min(lo + 1, n - 1), h - lo
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        if q is None:
            out[start : start + k] = x[idx].mean(axis=1)
        else:
            part = np.partition(idx, sorted({lo, hi}), axis=1)
            out[start : start + k] = x[part[:, lo]] * (1 - frac) + x[part[:, hi]] * frac
    return out


@dataclass(frozen=True)
class _Params:
    max_regression: float
    confidence: float
    resamples: int
    seed: int


def _compare_one(
    key: str, label: str, base: np.ndarray, new: np.ndarray, metric: str, params: _Params
) -> tuple[Row, list[str]]:
    q = METRICS[metric]
    need = min_samples(metric)
    warnings = [
        f"{label}: {side} has {x.size} samples; {metric} needs >= {need} for a reliable bootstrap"
        for side, x in (("base", base), ("new", new))
        if x.size < need
    ]
    nan = math.nan
    if base.size == 0 or new.size == 0:
        return Row(label, key, base.size, new.size, nan, nan, nan, nan, nan, Verdict.INSUFFICIENT, False), warnings
    b, n = float(_stat(base, q)), float(_stat(new, q))
    # Per-config streams: a config's interval does not depend on which other configs exist.
    seq = np.random.SeedSequence([params.seed, zlib.crc32(key.encode())])
    rng_b, rng_n = (np.random.default_rng(s) for s in seq.spawn(2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = _bootstrap(new, q, params.resamples, rng_n) / _bootstrap(base, q, params.resamples, rng_b)
        ratio = n / b if b > 0 else nan
    alpha = 1 - params.confidence
    lo, hi = (float(v) for v in np.quantile(ratios, [alpha / 2, 1 - alpha / 2]))
    if warnings:
        verdict, regressed = Verdict.INSUFFICIENT, False
    else:
        verdict = Verdict.WORSE if lo > 1 else Verdict.BETTER if hi < 1 else Verdict.SAME
        regressed = lo > 1 + params.max_regression
    return Row(label, key, base.size, new.size, b, n, ratio, lo, hi, verdict, regressed), warnings


def _validate(metric: str, max_regression: float, confidence: float, resamples: int, seed: int) -> str:
    m = metric.strip().lower()
    if m not in METRICS:
        raise UnknownNameError("metric", metric, list(METRICS))
    if not (math.isfinite(max_regression) and max_regression >= 0):
        raise UsageError(f"max_regression must be >= 0 (a fraction: 0.05 = 5%), got {max_regression}")
    if not (math.isfinite(confidence) and 0 < confidence < 1):
        raise UsageError(f"confidence must be strictly between 0 and 1 (e.g. 0.95), got {confidence}")
    if resamples < MIN_RESAMPLES:
        raise UsageError(f"resamples must be >= {MIN_RESAMPLES} for a percentile interval, got {resamples}")
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    return m


def compare(
    base: Path | str,
    new: Path | str,
    metric: str = "p99",
    max_regression: float = 0.05,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    allow_different_models: bool = False,
) -> Comparison:
    """Compare two profiles (or two load-test JSONs) config by config; see the module docstring.
    Profiles of different models (by digest) are refused unless ``allow_different_models``:
    their ratios would say nothing about a regression."""
    metric = _validate(metric, max_regression, confidence, resamples, seed)
    params = _Params(max_regression, confidence, resamples, seed)
    b_run, n_run = _load(base, "base"), _load(new, "new")
    warnings = [*b_run.warnings, *n_run.warnings]
    if b_run.model and n_run.model and b_run.model[1] != n_run.model[1]:
        what = (
            f"base and new profile different models ({b_run.model[0]} sha256 {b_run.model[1][:12]} vs "
            f"{n_run.model[0]} sha256 {n_run.model[1][:12]})"
        )
        if not allow_different_models:
            raise UsageError(f"{what}: a comparison would not be a regression gate; pass --allow-different-models")
        warnings.append(f"{what}: the ratios compare models, not code changes")
    b_hw, n_hw = b_run.hardware_id, n_run.hardware_id
    if b_hw and n_hw and b_hw != n_hw:
        warnings.append(
            f"base and new were measured on different machines (hardware id {b_hw} vs {n_hw}): "
            "the ratios mix code and machine changes"
        )
    common = [k for k in b_run.configs if k in n_run.configs]
    if not common:
        nb, nn = len(b_run.configs), len(n_run.configs)
        raise UsageError(
            f"no config in common: base has {nb} ({b_run.kind}), new has {nn} ({n_run.kind}) measured configs"
        )
    rows = []
    for key in common:
        bc, nc = b_run.configs[key], n_run.configs[key]
        label = bc.label if bc.label == nc.label else f"{bc.label} vs {nc.label}"
        row, row_warnings = _compare_one(key, label, bc.samples_ms, nc.samples_ms, metric, params)
        rows.append(row)
        warnings.extend(row_warnings)
    return Comparison(
        base=str(base),
        new=str(new),
        metric=metric,
        max_regression=max_regression,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        rows=tuple(rows),
        only_base=tuple(c.label for k, c in b_run.configs.items() if k not in n_run.configs),
        only_new=tuple(c.label for k, c in n_run.configs.items() if k not in b_run.configs),
        warnings=tuple(warnings),
    )


def _pct(x: float) -> str:
    return f"{x * 100:.4g}%"


def _num(x: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def headline(c: Comparison) -> str:
    """One line for the top of a PR comment or a CI log."""
    k, n = len(c.regressed), len(c.rows)
    word = "FAIL" if c.failed else "PASS"
    what = f"{k} of {n} configs regressed" if c.failed else f"none of {n} configs regressed"
    return f"**{word}**: {what} > {_pct(c.max_regression)} ({c.metric}, {_pct(c.confidence)} confidence)"


def to_markdown(c: Comparison) -> str:
    """A short GitHub-flavoured report: headline, one table row per matched config, then notes."""
    ci = f"{_pct(c.confidence)} CI"
    lines = [
        headline(c),
        "",
        f"| config | n base | n new | base {c.metric} (ms) | new {c.metric} (ms) | new/base | {ci} | verdict |",
        "|---|--:|--:|--:|--:|--:|:-:|---|",
    ]
    for r in c.rows:
        change = f" ({(r.ratio - 1) * 100:+.1f}%)" if math.isfinite(r.ratio) else ""
        verdict = f"{r.verdict}, **regressed**" if r.regressed else str(r.verdict)
        label = r.label.replace("|", "\\|")
        lines.append(
            f"| {label} | {r.n_base} | {r.n_new} | {_num(r.base_ms)} | {_num(r.new_ms)} | {_num(r.ratio)}{change} "
            f"| [{_num(r.ci_low)}, {_num(r.ci_high)}] | {verdict} |"
        )
    notes = [f"Only in base: {', '.join(c.only_base)}"] if c.only_base else []
    notes += [f"Only in new: {', '.join(c.only_new)}"] if c.only_new else []
    notes += [f"Warning: {w}" for w in c.warnings]
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def to_rows(c: Comparison) -> list[dict[str, Any]]:
    """One plain dict per matched config (NaN as None, so ``json.dumps`` writes valid JSON)."""
    return [
        {
            "config": r.label,
            "key": r.key,
            "n_base": r.n_base,
            "n_new": r.n_new,
            "base_ms": _finite(r.base_ms),
            "new_ms": _finite(r.new_ms),
            "ratio": _finite(r.ratio),
            "ci_low": _finite(r.ci_low),
            "ci_high": _finite(r.ci_high),
            "verdict": r.verdict.value,
            "regressed": r.regressed,
        }
        for r in c.rows
    ]


def to_dict(c: Comparison) -> dict[str, Any]:
    """The whole comparison as JSON-ready data: parameters, outcome, rows and notes."""
    return {
        "base": c.base,
        "new": c.new,
        "metric": c.metric,
        "max_regression": c.max_regression,
        "confidence": c.confidence,
        "resamples": c.resamples,
        "seed": c.seed,
        "failed": c.failed,
        "headline": headline(c).replace("**", ""),
        "rows": to_rows(c),
        "only_base": list(c.only_base),
        "only_new": list(c.only_new),
        "warnings": list(c.warnings),
    }
