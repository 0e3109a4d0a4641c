"""The regression gate on synthetic profiles and load-test files: it must catch a real
10% slowdown, stay quiet on run-to-run noise, and refuse bad input with one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from optiserve.errors import StoreError, UsageError
from optiserve.profile.stats import summarize
from optiserve.profile.store import ParquetStore
from optiserve.report import Verdict, compare, to_dict, to_markdown, to_rows
from optiserve.types import BenchConfig, Measurement, Precision, Status


def _cfg(batch: int) -> BenchConfig:
    return BenchConfig("onnxruntime-cpu", Precision.FP32, batch, 1, (("graph_optimization", "all"),))


def _draw(seed: int, n: int = 2000, scale: float = 1.0, sigma: float = 0.05) -> np.ndarray:
    """Latencies in ns around 2 ms with a lognormal tail, as calls on a quiet CI runner look.

    The spread matters: with 2000 samples the p99 ratio's 95% interval is about +-3% at
    sigma 0.05 but +-7% at sigma 0.25, where a 10% slowdown cannot be shown to exceed 5%."""
    return np.random.default_rng(seed).lognormal(np.log(2e6), sigma, n) * scale


def _profile(folder: Path, samples: dict[int, np.ndarray], hardware: str = "hw0") -> Path:
    """A profile folder as ``optiserve profile`` writes it: one OK row per batch size."""
    store = ParquetStore(folder)
    store.create({"model": {"name": "m", "sha256": "0" * 64}, "hardware": {"id": hardware}})
    for batch, ns in samples.items():
        ints = tuple(int(v) for v in ns)
        store.append(Measurement(_cfg(batch), Status.OK, stats=summarize(ints), samples_ns=ints))
    store.append(Measurement(_cfg(64), Status.FAILED, error="out of memory"))  # never compared
    return folder


def _loadtest(path: Path, latency_ms: np.ndarray, valid: bool = True) -> Path:
    data = {"url": "http://127.0.0.1:8000", "target_rate": 50.0, "valid": valid, "latency_ms": latency_ms.tolist()}
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def regressed_pair(tmp_path: Path) -> tuple[Path, Path]:
    """b=1 is 10% slower in new; b=2 and b=4 are fresh draws of the same distribution;
    b=8 is only in base and b=16 only in new."""
    base = _profile(tmp_path / "base", {1: _draw(1), 2: _draw(2), 4: _draw(3), 8: _draw(4)})
    new = _profile(tmp_path / "new", {1: _draw(11, scale=1.10), 2: _draw(12), 4: _draw(13), 16: _draw(14)})
    return base, new


def test_ten_percent_regression_is_detected(regressed_pair: tuple[Path, Path]) -> None:
    c = compare(*regressed_pair, max_regression=0.05)
    assert c.failed
    by_batch = {r.label.split(" b=")[1].split()[0]: r for r in c.rows}
    assert set(by_batch) == {"1", "2", "4"}
    slow = by_batch["1"]
    assert slow.regressed and slow.verdict is Verdict.WORSE
    assert slow.ci_low > 1.05 and slow.ci_low < slow.ratio < slow.ci_high
    assert slow.n_base == slow.n_new == 2000
    assert not by_batch["2"].regressed and not by_batch["4"].regressed
    assert [r.label for r in c.regressed] == [slow.label]
    assert c.only_base == (_cfg(8).label(),) and c.only_new == (_cfg(16).label(),)


def test_same_distribution_is_not_flagged(tmp_path: Path) -> None:
    for seed in range(5):
        base = _profile(tmp_path / f"b{seed}", {1: _draw(100 + seed), 4: _draw(200 + seed)})
        new = _profile(tmp_path / f"n{seed}", {1: _draw(300 + seed), 4: _draw(400 + seed)})
        c = compare(base, new)
        assert not c.failed, to_markdown(c)
        assert all(r.ci_low < 1 + c.max_regression for r in c.rows)


def test_improvement_is_better_and_passes(tmp_path: Path) -> None:
    base = _profile(tmp_path / "b", {1: _draw(1)})
    new = _profile(tmp_path / "n", {1: _draw(2, scale=0.85)})
    c = compare(base, new, metric="p50")
    (row,) = c.rows
    assert row.verdict is Verdict.BETTER and row.ci_high < 1 and not row.regressed
    assert not c.failed


def test_small_slowdown_within_tolerance_is_worse_but_passes(tmp_path: Path) -> None:
    """Significant but below ``max_regression``: reported, not gated."""
    base = _profile(tmp_path / "b", {1: _draw(1, n=20_000)})
    new = _profile(tmp_path / "n", {1: _draw(2, n=20_000, scale=1.10)})
    c = compare(base, new, metric="mean", max_regression=0.25)
    (row,) = c.rows
    assert row.verdict is Verdict.WORSE and not row.regressed and not c.failed


def test_is_deterministic_for_a_seed(regressed_pair: tuple[Path, Path]) -> None:
    a, b = compare(*regressed_pair, seed=7), compare(*regressed_pair, seed=7)
    assert a == b
    assert compare(*regressed_pair, seed=8).rows[0].ci_low != a.rows[0].ci_low


def test_loadtest_pair(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = _loadtest(tmp_path / "base.json", rng.lognormal(np.log(5.0), 0.3, 3000))
    new = _loadtest(tmp_path / "new.json", rng.lognormal(np.log(5.0), 0.3, 3000) * 1.10, valid=False)
    c = compare(base, new)
    (row,) = c.rows
    assert row.label == "loadtest http://127.0.0.1:8000 @ 50/s"
    assert row.regressed and c.failed
    assert any("invalid" in w for w in c.warnings)


def test_few_samples_are_insufficient_not_regressed(tmp_path: Path) -> None:
    base = _profile(tmp_path / "b", {1: _draw(1, n=50)})
    new = _profile(tmp_path / "n", {1: _draw(2, n=50, scale=1.5)})
    c = compare(base, new, metric="p99")
    (row,) = c.rows
    assert row.verdict is Verdict.INSUFFICIENT and not row.regressed and not c.failed
    assert any("50 samples" in w and "p99" in w for w in c.warnings)
    # The same 50 samples are plenty for a median.
    assert compare(base, new, metric="median").rows[0].regressed


def test_empty_side_is_insufficient(tmp_path: Path) -> None:
    base = _loadtest(tmp_path / "b.json", np.array([]))
    new = _loadtest(tmp_path / "n.json", np.full(500, 3.0))
    (row,) = compare(base, new).rows
    assert row.verdict is Verdict.INSUFFICIENT and math.isnan(row.ratio)
    assert to_rows(compare(base, new))[0]["ratio"] is None


def test_different_machines_warn(tmp_path: Path) -> None:
    base = _profile(tmp_path / "b", {1: _draw(1)}, hardware="a")
    new = _profile(tmp_path / "n", {1: _draw(2)}, hardware="b")
    assert any("different machines" in w for w in compare(base, new).warnings)


def test_markdown_and_rows(regressed_pair: tuple[Path, Path]) -> None:
    c = compare(*regressed_pair)
    md = to_markdown(c)
    assert md.splitlines()[0] == "**FAIL**: 1 of 3 configs regressed > 5% (p99, 95% confidence)"
    table = [line for line in md.splitlines() if line.startswith("| onnxruntime")]
    assert len(table) == 3 and sum("**regressed**" in line for line in table) == 1
    assert any("worse" in line for line in table)
    assert "Only in base" in md and "Only in new" in md

    rows = to_rows(c)
    assert [r["config"] for r in rows] == [r.label for r in c.rows]
    assert {r["verdict"] for r in rows} <= {v.value for v in Verdict}
    assert json.loads(json.dumps(to_dict(c)))["failed"] is True

    base = regressed_pair[0]
    passed = compare(base, base)
    assert to_markdown(passed).startswith("**PASS**: none of 4 configs regressed > 5% (p99, 95% confidence)")


@pytest.fixture
def inputs(tmp_path: Path, regressed_pair: tuple[Path, Path]) -> dict[str, Path]:
    text = tmp_path / "notes.txt"
    text.write_text("not json at all")
    no_latency = tmp_path / "summary.json"
    no_latency.write_text(json.dumps({"url": "http://x", "p99_ms": 3.0}))
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2, 3]")
    strings = tmp_path / "strings.json"
    strings.write_text(json.dumps({"latency_ms": ["1.0"]}))
    lt = _loadtest(tmp_path / "lt.json", np.full(200, 2.0))
    return {
        "profile": regressed_pair[0],
        "text": text,
        "no_latency": no_latency,
        "list": a_list,
        "strings": strings,
        "lt": lt,
    }


@pytest.mark.parametrize(
    ("base", "new", "kwargs", "message"),
    [
        ("missing", "profile", {}, r"base .*missing does not exist"),
        ("profile", "text", {}, r"new .*notes\.txt is neither a profile folder nor a load-test JSON"),
        ("list", "profile", {}, r"neither a profile folder nor a load-test JSON"),
        ("profile", "no_latency", {}, r"has no 'latency_ms'"),
        ("strings", "lt", {}, r"'latency_ms' must be a list of numbers"),
        (
            "profile",
            "profile",
            {"metric": "p42"},
            r"unknown metric 'p42'; valid metrics: p50, median, p90, p95, p99, mean",
        ),
        ("profile", "profile", {"max_regression": -0.01}, r"max_regression must be >= 0"),
        ("profile", "profile", {"confidence": 1.0}, r"confidence must be strictly between 0 and 1"),
        ("profile", "profile", {"confidence": 0.0}, r"confidence must be strictly between 0 and 1"),
        ("profile", "profile", {"resamples": 10}, r"resamples must be >= 100"),
        ("profile", "lt", {}, r"no config in common: base has 4 \(profile\), new has 1 \(loadtest\)"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(
    inputs: dict[str, Path], tmp_path: Path, base: str, new: str, kwargs: dict[str, object], message: str
) -> None:
    paths = {**inputs, "missing": tmp_path / "missing"}
    with pytest.raises(UsageError, match=message) as err:
        compare(paths[base], paths[new], **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_folder_without_profile_is_a_store_error(tmp_path: Path, regressed_pair: tuple[Path, Path]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no profile"):
        compare(regressed_pair[0], tmp_path / "empty")


def test_compare_cli_gate_and_formats(tmp_path: Path) -> None:
    """The CLI: exit 1 on a regression, 0 otherwise; md and json outputs; bad threshold is a usage error."""
    import json as _json

    from typer.testing import CliRunner

    from optiserve.cli import app

    rng = np.random.default_rng(7)
    base = rng.lognormal(np.log(10.0), 0.05, 3000)
    for name, lat in (("base", base), ("same", rng.lognormal(np.log(10.0), 0.05, 3000)), ("slow", base * 1.12)):
        (tmp_path / f"{name}.json").write_text(
            _json.dumps({"latency_ms": lat.tolist(), "url": "http://127.0.0.1:8000", "target_rate": 50.0})
        )
    run = CliRunner().invoke
    res = run(app, ["compare", str(tmp_path / "base.json"), str(tmp_path / "slow.json"), "--max-regression", "5%"])
    assert res.exit_code == 1 and "REGRESSED" in res.output, res.output
    res = run(app, ["compare", str(tmp_path / "base.json"), str(tmp_path / "same.json"), "--format", "md"])
    assert res.exit_code == 0 and "**PASS**" in res.output, res.output
    res = run(app, ["compare", str(tmp_path / "base.json"), str(tmp_path / "same.json"), "--format", "json"])
    assert res.exit_code == 0 and _json.loads(res.output)["failed"] is False
    res = run(app, ["compare", str(tmp_path / "base.json"), str(tmp_path / "same.json"), "--max-regression", "lots"])
    assert res.exit_code == 2 and "expected e.g. 5%" in res.output and "Traceback" not in res.output
