"""Collects the ratios each benchmark measures, fails a test whose asserted ratio missed
its target, prints them as one table at the end and leaves one JSON record per run.

Ratios, not absolute times, are what the README quotes: both sides of each ratio
are measured in the same run, interleaved, on the same machine. A ratio whose
target is ``report`` is only printed and recorded; any other target is asserted
here, after the test body, so every ratio of a test is recorded before it fails.
The record (``benchmarks/record.py``) goes to ``benchmarks/results/``, or to
``$OPTISERVE_BENCH_RESULTS``; ``scripts/bench_tables.py`` turns it into README tables.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from benchmarks.record import (
    REPORT,
    RESULTS,
    SCHEMA_VERSION,
    Benchmark,
    Outcome,
    Ratio,
    RunRecord,
    git_state,
    now_utc,
    this_machine,
    write_record,
)

RATIOS: list[Ratio] = []
TABLES: dict[str, dict[str, list[Mapping[str, Any]]]] = {}  # module -> table -> rows
OUTCOMES: dict[str, list[Outcome]] = {}  # module -> outcomes
SUMMARIES: dict[str, str] = {}  # module -> first docstring line
DESELECTED: set[str] = set()  # modules with tests left out by -k / -m
WRITTEN: list[Path] = []

RecordRatio = Callable[..., None]


def _module(item: pytest.Item) -> str:
    return Path(str(item.path)).stem


def _summary(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "module", None), "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


@pytest.fixture
def record_ratio(request: pytest.FixtureRequest) -> RecordRatio:
    """``record(name, value, target, passed, detail="")``; target ``report`` means not asserted."""
    test = request.node.nodeid

    def record(name: str, value: float, target: str, passed: bool, detail: str = "") -> None:
        RATIOS.append(Ratio(name, float(value), target, None if target == REPORT else bool(passed), detail, test))

    return record


@pytest.fixture
def record_rows(request: pytest.FixtureRequest) -> Callable[[str, Iterable[Mapping[str, Any]]], None]:
    """``record_rows(table, rows)``: richer per-benchmark rows (JSON values) the README tables use."""
    module = _module(request.node)

    def record(table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        TABLES.setdefault(module, {}).setdefault(table, []).extend(dict(r) for r in rows)

    return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """A missed asserted target fails its test, after the body has recorded everything."""
    result = yield
    missed = [r for r in RATIOS if r.test == item.nodeid and r.asserts and not r.passed]
    if missed:
        lines = "; ".join(f"{r.name} = {r.value:.4g}, target {r.target}" for r in missed)
        raise AssertionError(f"missed target: {lines}")
    return result


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.conftest import _gpu_reason

    reason = _gpu_reason()
    for item in items:
        SUMMARIES.setdefault(_module(item), _summary(item))
        if reason and "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_deselected(items: list[pytest.Item]) -> None:
    DESELECTED.update(_module(i) for i in items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and not report.passed):
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2])
        elif report.failed:
            reason = str(getattr(report.longrepr, "reprcrash", None) and report.longrepr.reprcrash.message)  # type: ignore[union-attr]
        module = Path(report.nodeid.split("::")[0]).stem
        OUTCOMES.setdefault(module, []).append(Outcome(report.nodeid, report.outcome, reason[:500]))


def build_record(command: str) -> RunRecord:
    modules = sorted(set(OUTCOMES) | set(TABLES) | {Path(r.test.split("::")[0]).stem for r in RATIOS})
    benches = tuple(
        Benchmark(
            module=m,
            summary=SUMMARIES.get(m, ""),
            ratios=tuple(r for r in RATIOS if Path(r.test.split("::")[0]).stem == m),
            tables={k: tuple(v) for k, v in TABLES.get(m, {}).items()},
            outcomes=tuple(OUTCOMES.get(m, ())),
            partial=m in DESELECTED,
        )
        for m in modules
    )
    commit, dirty = git_state()
    return RunRecord(SCHEMA_VERSION, now_utc(), this_machine(), commit, dirty, command, benches)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """One record per session that ran at least one benchmark (not for --collect-only)."""
    if not OUTCOMES or session.config.option.collectonly:
        return
    folder = Path(os.environ.get("OPTISERVE_BENCH_RESULTS") or RESULTS)
    command = " ".join(["pytest", *sys.argv[1:]]) if "pytest" in Path(sys.argv[0]).name else " ".join(sys.argv)
    WRITTEN.append(write_record(build_record(command), folder))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tr = terminalreporter
    if RATIOS:
        m = this_machine()
        tr.section("optiserve benchmark ratios")
        tr.write_line(f"machine: {m.cpu_model}, {m.usable_cpus} usable CPUs, python {m.python}")
        tr.write_line(f"{'benchmark':<52} {'ratio':>8}  {'target':<10} {'ok':<6} detail")
        for r in RATIOS:
            ok = "-" if r.passed is None else ("yes" if r.passed else "NO")
            tr.write_line(f"{r.name:<52} {r.value:>8.4f}  {r.target:<10} {ok:<6} {r.detail}")
    for path in WRITTEN:
        tr.write_line(f"benchmark record: {path} (README tables: python scripts/bench_tables.py)")
