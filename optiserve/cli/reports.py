"""``compare`` and ``report``: the regression gate and the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from optiserve.cli._common import err, one_line_errors, out


@one_line_errors
def compare(
    base: Annotated[Path, typer.Argument(help="baseline: a profile folder or a load-test JSON (--json)")],
    new: Annotated[Path, typer.Argument(help="candidate: the same kind as BASE")],
    metric: Annotated[str, typer.Option(help="p50, median, p90, p95, p99 or mean")] = "p99",
    max_regression: Annotated[
        str, typer.Option(help="fail when new/base exceeds 1 + this with confidence (5% or 0.05)")
    ] = "5%",
    confidence: Annotated[float, typer.Option(help="confidence of the bootstrap interval")] = 0.95,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples per config")] = 2000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="table, md or json")] = "table",
    allow_different_models: Annotated[
        bool, typer.Option(help="compare profiles of different models (refused by default)")
    ] = False,
) -> None:
    """Regression gate: compare two runs config by config (bootstrap CI of the ratio); exit 1 on a regression."""
    from optiserve.errors import UsageError
    from optiserve.report.compare import compare as run_compare
    from optiserve.report.compare import headline, to_dict, to_markdown, to_rows

    if fmt not in ("table", "md", "json"):
        raise UsageError(f"unknown --format {fmt!r}; valid: table, md, json")
    text = max_regression.strip()
    try:
        threshold = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"--max-regression {max_regression!r}: expected e.g. 5% or 0.05") from None
    result = run_compare(base, new, metric, threshold, confidence, resamples, seed, allow_different_models)
    if fmt == "md":
        print(to_markdown(result))
    elif fmt == "json":
        import json

        print(json.dumps(to_dict(result), indent=2))
    else:
        t = Table("config", "n base/new", f"base {metric} ms", f"new {metric} ms", "new/base", "CI", "verdict")
        for r in to_rows(result):
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
            ci = "-" if r["ci_low"] is None else f"{r['ci_low']:.3f}-{r['ci_high']:.3f}"
            verdict = f"[red]{r['verdict']} REGRESSED[/red]" if r["regressed"] else escape(str(r["verdict"]))
            base_ms = "-" if r["base_ms"] is None else f"{r['base_ms']:.3f}"
            new_ms = "-" if r["new_ms"] is None else f"{r['new_ms']:.3f}"
            t.add_row(escape(r["config"]), f"{r['n_base']}/{r['n_new']}", base_ms, new_ms, ratio, ci, verdict)
        out.print(t)
        for w in result.warnings:
            err.print(f"[yellow]![/yellow] {escape(w)}")
        out.print(headline(result).replace("**", ""))
    if result.failed:
        raise typer.Exit(1)


@one_line_errors
def report(
    profiles: Annotated[list[Path], typer.Argument(metavar="PROFILE...", help="profile folders")],
    plan_file: Annotated[Optional[Path], typer.Option("--plan", help="plan JSON from optiserve plan")] = None,  # noqa: UP045
    loadtest: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(
            help="result JSON from optiserve loadtest --json (repeatable; --predict-from adds the prediction)"
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="report folder")] = Path("reports/latest"),
    title: Annotated[str, typer.Option(help="report title")] = "optiserve report",
    fmt: Annotated[
        str, typer.Option("--format", help="html (folder with index.html, PNGs, summary.md) or md")
    ] = "html",
) -> None:
    """A self-contained HTML report with figures (and a Markdown summary for pull requests)."""
    from optiserve._imports import optional_import
    from optiserve.errors import UsageError
    from optiserve.plan.result import read_plan
    from optiserve.profile.store import load_profile

    optional_import("matplotlib", "report")  # before anything is loaded: the install hint, not a traceback
    from optiserve.report.document import load_loadtest, render_markdown, write_report

    if fmt not in ("html", "md"):
        raise UsageError(f"unknown --format {fmt!r}; valid: html, md")
    loaded = {}
    for path in profiles:
        name = path.name
        while name in loaded:
            name += "'"
        loaded[name] = load_profile(path)
    plan_doc = read_plan(plan_file) if plan_file else None
    tests = [load_loadtest(p) for p in loadtest or []]
    if fmt == "md":
        print(render_markdown(title, loaded, plan_doc, tests), end="")
        return
    written = write_report(output, loaded, plan_doc, tests, title)
    out.print(f"report: {escape(str(written[0]))} ({len(written) - 2} figures, summary.md beside it)")
