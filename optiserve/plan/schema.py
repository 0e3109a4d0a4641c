"""What a plan file must hold to be deployed, checked on read (pydantic).

A plan is JSON a person can open, and edit: ``emit`` must not turn a hand-edited
``replicas: -1`` into a "validated" Deployment. Only the fields the emitters and
reports rely on are constrained; everything else passes through untouched.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from optiserve.errors import UsageError
from optiserve.types import Precision


class _Open(BaseModel):
    """Unknown fields pass through; known numbers must be finite, counts whole numbers (not "0")."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class Placement(_Open):
    instance_type: StrictStr = Field(min_length=1)
    provider: StrictStr = Field(min_length=1)
    runtime: StrictStr = Field(min_length=1)
    precision: StrictStr
    threads_per_instance: StrictInt | None = Field(None, ge=1)
    instances_per_pod: StrictInt = Field(ge=1)
    max_batch: StrictInt = Field(ge=1)
    max_delay_ms: float = Field(ge=0)
    replicas: StrictInt = Field(ge=1)
    nodes: StrictInt = Field(ge=1)
    pods_per_node: StrictInt = Field(ge=1)
    pod_vcpus: float = Field(gt=0)
    pod_memory_gib: float = Field(gt=0)
    pod_rate_at_p99: float = Field(ge=0)
    cost_usd_per_hour: float = Field(ge=0)

    @field_validator("precision")
    @classmethod
    def _known(cls, v: str) -> str:
        Precision.parse(v)
        return v

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v: str) -> str:
        from optiserve.runtimes.registry import runtime_names

        if v not in runtime_names():
            raise ValueError(f"unknown runtime {v!r}; valid: {', '.join(runtime_names())}")
        return v


class ModelPlan(_Open):
    model: StrictStr = Field(min_length=1)
    feasible: StrictBool
    chosen: Placement | None
    alternatives: list[Placement] = []
    sla: dict[str, Any]

    @model_validator(mode="after")
    def _chosen_when_feasible(self) -> ModelPlan:
        if self.feasible and self.chosen is None:
            raise ValueError("feasible but 'chosen' is null: nothing to deploy")
        return self


class PlanFile(_Open):
    schema_version: StrictInt
    feasible: StrictBool
    models: list[ModelPlan] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> PlanFile:
        if self.feasible and not all(m.feasible for m in self.models):
            raise ValueError("the plan says feasible but a model's placement is not")
        return self


def validate_plan(data: Any, where: str) -> None:
    """One line naming the first bad field, e.g. ``models[0].chosen.replicas: ... (got -1)``."""
    try:
        PlanFile.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        msg = str(e["msg"]).removeprefix("Value error, ")
        got = f" (got {e['input']!r})" if e.get("input") is not None and not isinstance(e["input"], dict) else ""
        raise UsageError(f"plan {where}: {loc}: {msg}{got}") from None
