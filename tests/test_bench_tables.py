"""Benchmark records and the README tables made from them, on temporary files (never the real README)."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from benchmarks.record import (
    SCHEMA_VERSION,
    Benchmark,
    Machine,
    Outcome,
    Ratio,
    RunRecord,
    load_records,
    newest,
    write_record,
)
from benchmarks.tables import provenance, render, stale, table_for, update

REPO = Path(__file__).resolve().parents[1]
MACHINE = Machine("abc123def456", "Test CPU", 2, 2, 8.0, "Linux", "3.11.0")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_tables", REPO / "scripts" / "bench_tables.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(when: str, value: float, module: str = "test_sim", commit: str | None = "0123456789abcdef") -> RunRecord:
    ratios = (
        Ratio("sim s per 1e6", value, "< 1.0", value < 1.0, "detail | with pipe", f"benchmarks/{module}.py::t"),
        Ratio("batch 1", 0.1, "report", None, "", f"benchmarks/{module}.py::t"),
    )
    bench = Benchmark(module, "summary", ratios, {"rows": ({"a": 1, "b": [1.5, None]},)}, (Outcome("t", "passed"),))
    return RunRecord(SCHEMA_VERSION, when, MACHINE, commit, False, "pytest benchmarks", (bench,))


def test_record_round_trip_and_schema(tmp_path: Path) -> None:
    run = _run("2026-12-02T10:00:00+00:00", 0.5)
    path = write_record(run, tmp_path)
    assert path.name == "20261202T100000Z-abc123def456.json"
    assert load_records(tmp_path) == [run]
    d = json.loads(path.read_text())
    assert d["benchmarks"][0]["asserts"] is True and d["benchmarks"][0]["ratios"][1]["asserts"] is False
    d["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="schema"):
        RunRecord.from_json(json.dumps(d))


def test_non_finite_values_are_null_not_invalid_json(tmp_path: Path) -> None:
    run = _run("2026-12-02T10:00:00+00:00", float("inf"))
    text = run.to_json()
    assert "Infinity" not in text and json.loads(text)["benchmarks"][0]["ratios"][0]["value"] is None
    back = RunRecord.from_json(text).benchmarks[0].ratios[0].value
    assert back != back  # NaN: no figure


def test_newest_skips_runs_that_did_not_measure() -> None:
    old = _run("2026-12-01T10:00:00+00:00", 0.5)
    skipped = RunRecord(
        SCHEMA_VERSION,
        "2026-12-03T10:00:00+00:00",
        MACHINE,
        None,
        None,
        "",
        (Benchmark("test_sim", "", (), {}, (Outcome("t", "skipped", "no GPU"),)),),
    )
    mid = _run("2026-12-02T10:00:00+00:00", 0.7)
    found = newest([old, mid, skipped], "test_sim")
    assert found is not None and found[0] is mid
    assert newest([old], "test_other") is None
    partial = dataclasses.replace(mid, created_utc="2026-12-04T10:00:00+00:00")
    partial = dataclasses.replace(partial, benchmarks=(dataclasses.replace(mid.benchmarks[0], partial=True),))
    found = newest([old, mid, partial], "test_sim")  # a -k run does not replace a whole one
    assert found is not None and found[0] is mid
    found = newest([partial], "test_sim")
    assert found is not None and found[0] is partial and "Partial run" in provenance(*found)


def test_generated_table_names_its_run() -> None:
    run = _run("2026-12-02T10:00:00+00:00", 0.5)
    text = render("ratios:test_sim", [run])
    assert "| sim s per 1e6 | 0.5 | < 1.0 | met | detail / with pipe |" in text
    assert "| batch 1 | 0.1 | report | reports only |" in text
    line = provenance(run, run.benchmarks[0])
    assert "Test CPU" in line and "2026-12-02" in line and "`0123456789`" in line and "asserts 1 of 2" in line
    assert "No record" in render("ratios:test_missing", [run])
    with pytest.raises(KeyError):
        table_for("no-such-table")


def test_check_fails_on_a_stale_readme_and_passes_once_regenerated(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_record(_run("2026-12-01T10:00:00+00:00", 0.5), results)
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\ntext 1.23x by hand\n<!-- bench:ratios:test_sim -->\n| typed | 9 |\n<!-- /bench -->\nend\n"
    )
    main = _script().main
    args = ["--readme", str(readme), "--results", str(results)]
    assert main([*args, "--check"]) == 1
    assert main(args) == 0
    regenerated = readme.read_text()
    assert "| typed | 9 |" not in regenerated and regenerated.startswith("# x\n\ntext 1.23x by hand\n")
    assert regenerated.endswith("<!-- /bench -->\nend\n")
    assert main([*args, "--check"]) == 0
    # a newer record makes the README stale again
    write_record(_run("2026-12-05T10:00:00+00:00", 0.9, commit="fedcba9876543210"), results)
    assert stale(regenerated, load_records(results)) == ["ratios:test_sim"]
    assert "`fedcba9876`" in update(regenerated, load_records(results))


def test_every_benchmark_says_whether_it_asserts() -> None:
    for path in sorted((REPO / "benchmarks").glob("test_*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        said = " ".join(doc.lower().split())
        assert "asserts" in said or "only reports" in said, f"{path.name}: docstring says neither"


CONFTEST = "from benchmarks.conftest import *  # noqa: F403\n"
BENCH = '''"""Asserts one ratio, reports one."""


def test_missed(record_ratio):
    record_ratio("met ratio", 0.5, "< 1", True)
    record_ratio("missed ratio", 2.0, "< 1", False)
    record_ratio("after the miss", 3.0, "report", True)


def test_reported(record_ratio, record_rows):
    record_ratio("reported", 2.0, "report", False)
    record_rows("rows", [{"x": 1}])
'''


def test_a_missed_target_fails_its_test_and_the_run_leaves_a_record(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "conftest.py").write_text(CONFTEST)
    (bench / "test_fake.py").write_text(BENCH)
    results = tmp_path / "results"
    env = {**os.environ, "OPTISERVE_BENCH_RESULTS": str(results), "OPTISERVE_BENCH_NO_GIT": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", str(bench)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 failed, 1 passed" in proc.stdout and "missed target: missed ratio" in proc.stdout
    (run,) = load_records(results)
    b = run.benchmark("test_fake")
    assert b is not None and b.asserts and run.git_commit is None
    assert [r.name for r in b.ratios] == ["met ratio", "missed ratio", "after the miss", "reported"]
    assert [r.passed for r in b.ratios] == [True, False, None, None]
    assert {o.test.split("::")[1]: o.outcome for o in b.outcomes} == {
        "test_missed": "failed",
        "test_reported": "passed",
    }
    assert b.tables["rows"] == ({"x": 1},)
    assert run.machine.usable_cpus >= 1 and run.machine.fingerprint


def test_cross_machine_table_groups_recordings_of_one_kind() -> None:
    from benchmarks.tables import cross_machine

    def pair(src: str, dst: str, err: float, met: bool, repeat: bool = False) -> dict[str, object]:
        return {
            "source": src, "target": dst, "precision": "fp32", "ceilings": "effective", "statistic": "quiet",
            "repeat": repeat, "mean_abs_error": err, "no_transfer": 0.5, "covered": 3, "rows": 4, "met": met,
        }  # fmt: skip

    rows = (
        pair("zen3-2vcpu", "zen5-2vcpu", 0.10, True),
        pair("zen3-2vcpu-r2", "zen5-2vcpu", 0.20, False),
        pair("zen3-2vcpu", "zen3-2vcpu-r2", 0.30, False, repeat=True),
        {**pair("zen3-2vcpu", "zen5-2vcpu", 0.9, False), "ceilings": "datasheet"},  # not what is asserted
    )
    lines = cross_machine(Benchmark("test_cross_machine", "", (), {"pairs": rows}))
    assert lines[2] == "| zen3-2vcpu -> zen5-2vcpu | **10%-20% (50%), 6/8** |"  # one recording missed: bold
    assert lines[3] == "| zen3-2vcpu -> zen3-2vcpu (repeat: noise floor) | 30% (50%), 3/4 |"  # last, never bold
    assert len(lines) == 4
