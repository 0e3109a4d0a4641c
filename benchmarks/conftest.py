"""Collects the ratios each benchmark measures and prints them as one table at the end.

Ratios, not absolute times, are what the README quotes: both sides of each ratio
are measured in the same run, interleaved, on the same machine.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import pytest

from optiserve.profile.hardware import fingerprint


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float
    target: str
    passed: bool
    detail: str


RATIOS: list[Ratio] = []


@pytest.fixture
def record_ratio() -> object:
    def record(name: str, value: float, target: str, passed: bool, detail: str = "") -> None:
        RATIOS.append(Ratio(name, value, target, passed, detail))

    return record


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.conftest import _gpu_reason

    reason = _gpu_reason()
    if reason:
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RATIOS:
        return
    hw = fingerprint()
    tr = terminalreporter
    tr.section("optiserve benchmark ratios")
    tr.write_line(f"machine: {hw['cpu_model']}, {hw['usable_cpus']} usable CPUs, python {platform.python_version()}")
    tr.write_line(f"{'benchmark':<52} {'ratio':>8}  {'target':<10} {'ok':<4} detail")
    for r in RATIOS:
        tr.write_line(f"{r.name:<52} {r.value:>8.4f}  {r.target:<10} {'yes' if r.passed else 'NO':<4} {r.detail}")
