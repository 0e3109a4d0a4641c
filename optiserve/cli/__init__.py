"""The ``optiserve`` command: Typer commands that parse their options and delegate.

One module per command group holds the commands; this one builds the app and
registers them in the order ``--help`` lists them. Each command maps an
``OptiserveError`` to one line on stderr and its exit code (``_common``).
"""

from __future__ import annotations

import sys

import typer

from optiserve.cli import drift, emit, loadtest, models_catalog, plan, profile, reports, scale_out, serve, trust
from optiserve.cli._common import err

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Measure, predict and choose the cheapest way to serve a model inside an SLA.",
)
models_app = typer.Typer(no_args_is_help=True, help="The offline model zoo.")
app.add_typer(models_app, name="models")
catalog_app = typer.Typer(no_args_is_help=True, help="The hardware catalog: instance types, ceilings, prices.")
app.add_typer(catalog_app, name="catalog")

models_app.command("build")(models_catalog.models_build)
catalog_app.command("list")(models_catalog.catalog_list)
catalog_app.command("check")(models_catalog.catalog_check)
models_app.command("list")(models_catalog.models_list)
for command in (
    profile.profile,
    profile.show,
    profile.env,
    plan.predict,
    plan.plan,
    emit.emit,
    scale_out.fanout,
    scale_out.gather,
    reports.compare,
    reports.report,
    serve.serve,
    drift.drift,
    loadtest.loadtest,
    loadtest.verify,
    trust.keygen,
    trust.sign,
    trust.check_signature,
):
    app.command()(command)

__all__ = ["app", "main"]


def main() -> None:
    """The console script: Ctrl-C outside a command's own handling exits 130 with one line."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
