"""A Measurement as one flat row of JSON-able values: the Parquet layout, the worker's
result file and ``Profile.to_pandas``'s columns (and back, for every layout written)."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from optiserve.types import AccuracyReport, BenchConfig, LatencyStats, Measurement, Precision, Status


def measurement_row(m: Measurement) -> dict[str, Any]:
    """One flat row per config: the Parquet layout and ``Profile.to_pandas``'s columns."""
    s = m.stats
    row: dict[str, Any] = {
        "key": m.config.key,
        "runtime": m.config.runtime,
        "precision": m.config.precision.value,
        "batch_size": m.config.batch_size,
        "threads": m.config.threads,
        "options": json.dumps(dict(m.config.options), sort_keys=True),
        "variant_recipe": json.dumps(dict(m.config.variant), sort_keys=True),
        "preprocess": m.config.preprocess,
        "inputs": m.config.inputs,
        "status": m.status.value,
        "error": m.error,
    }
    for name in ("n", "mean", "std", "min", "max", "p50", "p90", "p95", "p99", "p999", "p99_ci_low", "p99_ci_high"):
        col = name if name == "n" else f"{name}_ms"
        row[col] = getattr(s, name) if s else None
    row.update(
        throughput=m.throughput,
        load_time_s=m.load_time_s,
        warmup_iterations=m.warmup_iterations,
        warmup_stable=m.warmup_stable,
        peak_rss_mb=m.peak_rss_mb,
        model_rss_mb=m.model_rss_mb,
        wall_time_s=m.wall_time_s,
        stop_reason=m.stop_reason,
        warnings=list(m.warnings),
        samples_ns=list(m.samples_ns),
        extra=json.dumps(m.extra, sort_keys=True),
    )
    a = m.accuracy
    for f in fields(AccuracyReport):
        value = getattr(a, f.name) if a else None
        row[f"acc_{f.name}"] = json.dumps(value, sort_keys=True) if f.name in _ACC_JSON and a else value
    row["within_tolerance"] = m.within_tolerance
    row["variant_key"] = m.variant.get("key")
    row["variant_method"] = m.variant.get("method")
    row["variant_build_s"] = m.variant.get("build_s")
    row["variant_cache_hit"] = m.variant.get("cache_hit")
    row["stages"] = json.dumps(m.stages, sort_keys=True)
    return row


_ACC_JSON = ("checks", "per_output")  # dict fields, stored as JSON text
_ACC_LATER = ("worst_output", "worst_group", "group_error", *_ACC_JSON)  # absent from older profiles


def _accuracy_from_row(row: dict[str, Any]) -> AccuracyReport:
    """Columns a profile lacks (written before them) take the field's default."""
    values: dict[str, Any] = {}
    for f in fields(AccuracyReport):
        value = row.get(f"acc_{f.name}")
        if value is None and f.name in _ACC_LATER:
            continue
        values[f.name] = json.loads(value) if f.name in _ACC_JSON and isinstance(value, str) else value
    return AccuracyReport(**values)


def measurement_from_row(row: dict[str, Any]) -> Measurement:
    config = BenchConfig(
        runtime=row["runtime"],
        precision=Precision(row["precision"]),
        batch_size=int(row["batch_size"]),
        threads=int(row["threads"]),
        options=tuple(sorted(json.loads(row["options"] or "{}").items())),
        variant=tuple(sorted(json.loads(row.get("variant_recipe") or "{}").items())),
        preprocess=row.get("preprocess") or "",
        inputs=row.get("inputs") or "",
    )
    stats = None
    if row.get("n"):
        stats = LatencyStats(
            n=int(row["n"]),
            **{
                k: float(row[f"{k}_ms"])
                for k in ("mean", "std", "min", "max", "p50", "p90", "p95", "p99", "p999", "p99_ci_low", "p99_ci_high")
            },
        )
    return Measurement(
        config=config,
        status=Status(row["status"]),
        error=row.get("error") or "",
        stats=stats,
        throughput=float(row.get("throughput") or 0.0),
        load_time_s=float(row.get("load_time_s") or 0.0),
        warmup_iterations=int(row.get("warmup_iterations") or 0),
        warmup_stable=bool(row.get("warmup_stable")),
        peak_rss_mb=float(row.get("peak_rss_mb") or 0.0),
        model_rss_mb=float(row.get("model_rss_mb") or 0.0),
        wall_time_s=float(row.get("wall_time_s") or 0.0),
        stop_reason=row.get("stop_reason") or "",
        warnings=tuple(row.get("warnings") or ()),
        samples_ns=tuple(int(x) for x in (row.get("samples_ns") or ())),
        accuracy=_accuracy_from_row(row) if row.get("acc_drop_metric") else None,
        within_tolerance=row.get("within_tolerance"),
        variant={
            k: row[f"variant_{k}"]
            for k in ("key", "method", "build_s", "cache_hit")
            if row.get(f"variant_{k}") is not None
        },
        stages=json.loads(row.get("stages") or "{}"),
        extra=json.loads(row.get("extra") or "{}"),
    )
