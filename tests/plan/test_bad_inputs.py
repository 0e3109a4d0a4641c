"""Bad SLA files and hand-edited plans: one line naming the field, never a traceback, and
never a "validated" manifest from a plan that cannot be deployed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from optiserve.errors import SLAError, UsageError
from optiserve.plan.planner import PlanOptions, make_plan
from optiserve.plan.schema import validate_plan
from optiserve.plan.sla import parse_sla

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "reference" / "cnn-default"
PLAN = json.loads((REPO / "tests" / "emit" / "data" / "plan.json").read_text())


def _sla(model: str) -> str:
    return f"models:\n  cnn:\n{model}"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (_sla("    rate: .inf\n    p99_ms: 60\n"), "field rate"),
        (_sla("    rate: .nan\n    p99_ms: 60\n"), "field rate"),
        (_sla("    rate: '150'\n    p99_ms: 60\n"), "field rate"),
        (_sla("    rate: 150\n    p99_ms: '60'\n"), "field p99_ms"),
        (_sla("    rate: 150\n    p99_ms: 60\n    spot: 'yes'\n"), "field spot"),
        (_sla("    rate: 150\n    rate: 300\n    p99_ms: 60\n"), "duplicate key 'rate'"),
        ("models:\n  cnn: {rate: 1, p99_ms: 5}\n  cnn: {rate: 2, p99_ms: 5}\n", "duplicate key 'cnn'"),
        ("search: {instances: ['2']}\nmodels:\n  cnn: {rate: 1, p99_ms: 5}\n", "instances"),
    ],
)
def test_bad_sla_is_one_line(body: str, needle: str) -> None:
    with pytest.raises(SLAError) as exc:
        parse_sla(body, "sla.yaml")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_numbers_yaml_11_reads_as_strings_are_still_numbers() -> None:
    sla = parse_sla(_sla("    rate: 1e12\n    p99_ms: 1.5e2\n"))
    assert sla.models["cnn"].rate == 1e12 and sla.models["cnn"].p99_ms == 150.0


def test_unknown_region_is_named_as_unknown(tmp_path: Path) -> None:
    from optiserve.models.zoo import build_zoo

    cnn = build_zoo(tmp_path / "zoo", ["cnn"])[0]
    sla = tmp_path / "sla.yaml"
    entry = f"{{profile: {PROFILE}, model: {cnn}, rate: 10, p99_ms: 60}}"
    sla.write_text(f"defaults: {{regions: [Atlantis]}}\nmodels:\n  cnn: {entry}\n")
    with pytest.raises(SLAError, match="unknown region 'Atlantis'") as exc:
        make_plan(PlanOptions(sla, trials=2, requests=1000))
    assert "not offered" not in str(exc.value)


def _edited(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    plan = copy.deepcopy(PLAN)
    target = plan
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return plan


CHOSEN = ("models", 0, "chosen")


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        ((*CHOSEN, "replicas"), -1, "replicas"),
        ((*CHOSEN, "pod_vcpus"), -2, "pod_vcpus"),
        ((*CHOSEN, "max_batch"), "0", "max_batch"),
        ((*CHOSEN, "max_batch"), "8", "max_batch"),  # a string where a count belongs, even a valid one
        ((*CHOSEN, "pod_memory_gib"), float("nan"), "pod_memory_gib"),
        ((*CHOSEN, "max_delay_ms"), float("inf"), "max_delay_ms"),
        ((*CHOSEN, "nodes"), 1.5, "nodes"),
        (CHOSEN, None, "chosen"),
        (("models", 0, "feasible"), "yes", "feasible"),
        (("models",), [], "models"),
    ],
)
def test_hand_edited_plan_is_refused(path: tuple[Any, ...], value: Any, needle: str) -> None:
    validate_plan(PLAN, "plan.json")  # the untouched plan is fine
    with pytest.raises(UsageError, match=r"plan plan\.json") as exc:
        validate_plan(_edited(path, value), "plan.json")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("path", "value"), [((*CHOSEN, "replicas"), -1), (CHOSEN, None), ((*CHOSEN, "pod_memory_gib"), float("nan"))]
)
def test_emit_refuses_a_hand_edited_plan_and_writes_nothing(tmp_path: Path, path: tuple[Any, ...], value: Any) -> None:
    from optiserve.cli import app

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(_edited(path, value)))
    out = tmp_path / "deploy"
    res = CliRunner().invoke(app, ["emit", str(plan), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "validated" not in res.output
    assert not out.exists() or not any(out.iterdir())
