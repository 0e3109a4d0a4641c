"""The planner for notebooks: what-if plans from a dict, and plans as DataFrames.

``what_if`` takes the SLA as a mapping (the YAML file's structure) so a
notebook can sweep traffic, regions or spot without writing files by hand;
it validates the mapping exactly as ``optiserve plan`` validates the file.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from optiserve.plan.planner import PlanOptions, make_plan
from optiserve.plan.result import read_plan
from optiserve.plan.sla import parse_sla


def what_if(
    sla: Mapping[str, Any],
    profiles: Mapping[str, Path | str] = {},
    *,
    catalogs: Sequence[Path] = (),
    measured_on: str | None = None,
    trials: int = 150,
    seed: int = 0,
    sampler: str = "tpe",
    requests: int = 5_000,
    verify_requests: int = 20_000,
) -> dict[str, Any]:
    """A plan (the same dict `optiserve plan` writes) for an SLA given as a mapping.

    Fewer trials and simulated requests than the CLI's defaults: a sweep of many
    what-ifs stays interactive; re-run the chosen one with the CLI for the record."""
    text = yaml.safe_dump(dict(sla), sort_keys=False)
    parse_sla(text, "what-if SLA")  # the same errors as the CLI, before any work
    with tempfile.TemporaryDirectory(prefix="optiserve-what-if-") as tmp:
        path = Path(tmp) / "sla.yaml"
        path.write_text(text)
        opts = PlanOptions(
            sla=path,
            profiles={k: Path(v).resolve() for k, v in profiles.items()},
            catalogs=tuple(catalogs),
            measured_on=measured_on,
            trials=trials,
            seed=seed,
            sampler=sampler,
            requests=requests,
            verify_requests=verify_requests,
            alternatives=3,
        )
        return make_plan(opts)


def load_plan(path: Path | str) -> dict[str, Any]:
    """A plan JSON written by `optiserve plan` (schema-checked)."""
    return read_plan(Path(path))


def plan_frame(plan: Mapping[str, Any]) -> Any:
    """One row per model: the chosen placement's instance, knobs, cost and predicted latency."""
    import pandas as pd

    rows = []
    for m in plan["models"]:
        c = m.get("chosen")
        row: dict[str, Any] = {"model": m["model"], "feasible": m["feasible"], "rate": m["sla"]["rate"]}
        if c:
            row.update(
                instance=f"{c['provider']}:{c['instance_type']}",
                region=c["region"],
                spot=c["spot"],
                precision=c["precision"],
                max_batch=c["max_batch"],
                max_delay_ms=c["max_delay_ms"],
                replicas=c["replicas"],
                nodes=c["nodes"],
                usd_per_hour=c["cost_usd_per_hour"],
                usd_per_million=c["cost_usd_per_million_requests"],
                p99_ms_target=c["at_target"]["p99_ms"],
                p99_ms_peak=c["at_peak"]["p99_ms"],
                latency=c["provenance"]["latency"],
                binding=m["binding_constraint"],
            )
        rows.append(row)
    return pd.DataFrame(rows)
