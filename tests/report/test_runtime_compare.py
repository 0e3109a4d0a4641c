"""Runtimes side by side, from a real profile swept on ONNX Runtime and OpenVINO: ``show``, HTML and Markdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from optiserve.profile.runtime_compare import compare_runtimes
from optiserve.profile.store import load_profile
from optiserve.report.document import render_markdown, write_report
from tests.conftest import REPO, profile_cli, run_cli

pytest.importorskip("openvino", reason="openvino is not installed: pip install 'optiserve[openvino]'")


@pytest.fixture(scope="module")
def two_runtimes(mlp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("two") / "p"
    args = ("--runtime", "onnxruntime-cpu,openvino", "--precision", "fp32", "--batch", "1,4")
    proc = profile_cli(mlp_path, out, *args, "--option", "num_streams=1", cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return out


def test_one_column_per_runtime_and_the_ratio_to_onnxruntime(two_runtimes: Path) -> None:
    prof = load_profile(two_runtimes)
    cmp = compare_runtimes(prof)
    assert cmp is not None and cmp.baseline == "onnxruntime-cpu" and cmp.runtimes == ("onnxruntime-cpu", "openvino")
    assert [(r.precision, r.batch, r.threads) for r in cmp.rows] == [("fp32", 1, 1), ("fp32", 4, 1)]
    p50 = {(m.config.runtime, m.config.batch_size): m.stats.p50 for m in prof.ok if m.stats}
    for row in cmp.rows:
        ort, ov = row.cells
        assert ort is not None and ov is not None and ort.ratio is None
        assert ort.p50_ms == p50[("onnxruntime-cpu", row.batch)] and ov.p50_ms == p50[("openvino", row.batch)]
        assert ov.ratio == pytest.approx(ov.p50_ms / ort.p50_ms)


def test_show_prints_the_side_by_side_table(two_runtimes: Path, tmp_path: Path) -> None:
    proc = run_cli("show", str(two_runtimes), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mlp: p50 ms by runtime (onnxruntime-cpu = 1x)" in proc.stdout
    table = proc.stdout[proc.stdout.index("p50 ms by runtime") :]
    assert "openvino" in table and "x)" in table  # the ratio next to openvino's p50


def test_report_html_and_markdown_compare_runtimes(two_runtimes: Path, tmp_path: Path) -> None:
    profiles = {"mlp": load_profile(two_runtimes)}
    write_report(tmp_path / "r", profiles, None, [], "t")
    page = (tmp_path / "r" / "index.html").read_text()
    section = page[page.index("<h2>Runtimes side by side</h2>") : page.index("<h2>Measurements</h2>")]
    assert "<th>onnxruntime-cpu</th><th>openvino</th>" in section and section.count("<tr><td class=l>fp32") == 2
    md = render_markdown("t", profiles, None, [])
    assert "| precision | batch | threads | onnxruntime-cpu | openvino |" in md
    assert any(line.startswith("| fp32 | 4 | 1 | ") and line.endswith("x) |") for line in md.splitlines())


def test_one_runtime_has_no_comparison() -> None:
    prof = load_profile(REPO / "profiles/reference/cnn-int8")
    assert len({m.config.runtime for m in prof.ok}) == 1 and compare_runtimes(prof) is None
