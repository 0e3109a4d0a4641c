"""The HTML report and its Markdown summary, from the committed reference profiles and a plan fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from optiserve.cli import app
from optiserve.errors import UsageError
from optiserve.profile.store import load_profile
from optiserve.report.document import build_figures, load_loadtest, render_markdown, write_report

REPO = Path(__file__).resolve().parents[2]
PLAN = REPO / "tests" / "emit" / "data" / "plan.json"
LOADTEST = {
    "url": "http://127.0.0.1:8000",
    "target_rate": 40.0,
    "p50_ms": 20.0,
    "p95_ms": 40.0,
    "p99_ms": 60.0,
    "p999_ms": 80.0,
    "valid": True,
    "late_fraction": 0.0,
    "predicted": {"p50_ms": 18.0, "p99_ms": 51.0, "source": "test"},
    "latency_ms": [20.0] * 10,
}


@pytest.fixture(scope="module")
def profiles():  # type: ignore[no-untyped-def]
    return {
        "cnn-int8": load_profile(REPO / "profiles/reference/cnn-int8"),
        "cnn-precisions": load_profile(REPO / "profiles/reference/cnn-precisions"),
    }


def test_every_figure_is_drawn_from_full_inputs(profiles, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lt = tmp_path / "lt.json"
    lt.write_text(json.dumps(LOADTEST))
    figs = build_figures(profiles, json.loads(PLAN.read_text()), [load_loadtest(lt)])
    drawn = {f.name: f for f in figs}
    for name in (
        "latency_vs_batch",
        "throughput_vs_p99",
        "speedup_vs_drift",
        "pareto",
        "load_fidelity",
        "stage_breakdown",
    ):
        assert drawn[name].png and drawn[name].png.startswith(b"\x89PNG"), name


def test_html_is_self_contained_and_says_what_was_measured(profiles, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    written = write_report(tmp_path / "r", profiles, json.loads(PLAN.read_text()), [], "t")
    html = (tmp_path / "r" / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 5  # no load test given: that one figure says what it needs
    assert "needs --loadtest" in html
    assert "src='http" not in html and "<script" not in html  # opens from a file, no server, nothing fetched
    assert "Intel(R) Xeon(R) Processor" in html and "onnxruntime 1." in html and "2026-11-30" in html
    assert "Warnings" in html and "bf16 b1 2t failed" in html and "PREDICTED" in html
    assert html.index("<h2>Warnings") < html.index("<h2>Figures")  # surfaced, not buried
    assert {p.name for p in written} >= {"index.html", "summary.md", "pareto.png", "latency_vs_batch.png"}


def test_markdown_summary_is_short(profiles, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lt = tmp_path / "lt.json"
    lt.write_text(json.dumps(LOADTEST))
    md = render_markdown("t", profiles, json.loads(PLAN.read_text()), [load_loadtest(lt)])
    assert len(md.splitlines()) <= 12
    assert "$0.192/h" in md and "predicted 51.0 ms (-15%)" in md and "warning" in md


def test_report_cli_and_bad_inputs(tmp_path: Path) -> None:
    run = CliRunner().invoke
    ok = run(app, ["report", str(REPO / "profiles/reference/cnn-int8"), "--plan", str(PLAN), "-o", str(tmp_path / "r")])
    assert ok.exit_code == 0 and (tmp_path / "r" / "index.html").is_file(), ok.output
    md = run(app, ["report", str(REPO / "profiles/reference/cnn-int8"), "--format", "md"])
    assert md.exit_code == 0 and md.output.startswith("### ")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    for args, message in (
        ([str(tmp_path / "nope")], "no profile"),
        ([str(REPO / "profiles/reference/cnn-int8"), "--loadtest", str(bad)], "not an `optiserve loadtest --json`"),
        ([str(REPO / "profiles/reference/cnn-int8"), "--plan", str(bad)], "not an optiserve plan"),
        ([str(REPO / "profiles/reference/cnn-int8"), "--format", "pdf"], "valid: html, md"),
    ):
        res = run(app, ["report", *args, "-o", str(tmp_path / "x")])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, (args, res.output)
    with pytest.raises(UsageError, match="at least one profile"):
        write_report(tmp_path / "y", {}, None)
