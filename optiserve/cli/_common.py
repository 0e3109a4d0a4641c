"""What every command shares: the consoles, one-line errors, ``NAME=VALUE`` items,
the sweep flags generated from ``SweepSpec`` and the batching options, each declared once."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from optiserve.errors import OptiserveError, UsageError

# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
out = Console() if sys.stdout.isatty() else Console(width=180)
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

# The server's batching, as `serve` takes it and as `predict` and `loadtest --predict-from` model it.
Precision = Annotated[str, typer.Option(help="fp32, fp16, int8-dynamic, int8-static, int4")]
Threads = Annotated[int, typer.Option(help="intra-op threads of the session")]
MaxBatch = Annotated[int, typer.Option(help="most rows per executed batch")]
MaxDelayMs = Annotated[float, typer.Option(help="longest a request waits for a batch to fill")]
Instances = Annotated[int, typer.Option(help="batches run concurrently")]
# Extra hardware catalog files, read over the built-in one (`plan`, `catalog list`).
Catalogs = Annotated[Optional[list[Path]], typer.Option(help="extra catalog YAML (repeatable)")]  # noqa: UP045
# An MLflow tracking URI (sqlite:///mlflow.db, http://...): the command is logged there as a run,
# and models:/NAME/VERSION model arguments resolve through its registry.
Mlflow = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--mlflow", help="MLflow tracking URI: log this command as a run (also resolves models:/ URIs)"),
]


def mlflow_run(
    uri: str | None,
    command: str,
    logged: tuple[dict[str, Any], dict[str, Any], dict[str, str]],
    artifacts: list[Path],
) -> str | None:
    """Log one run when ``--mlflow`` was given; one line says which."""
    if not uri:
        return None
    from optiserve._mlflow import log_run

    params, metrics, tags = logged
    rid = log_run(uri, command, params, metrics, artifacts, tags)
    err.print(f"mlflow: {command} logged as run {rid} in {escape(uri)}", highlight=False)
    return rid


def pairs(
    items: list[str] | None, flag: str, lone: str | None = None, hint: str = "expected NAME=VALUE"
) -> dict[str, str]:
    """``NAME=VALUE`` items of a repeatable option; a bare item is named ``lone`` where
    there is one obvious name, else one line saying which item is malformed."""
    found: dict[str, str] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep and lone is not None:
            k, v = lone, item
        elif not sep or not k.strip() or not v.strip():
            raise UsageError(f"{flag} {item!r}: {hint}")
        found[k.strip()] = v.strip()
    return found


def one_line_errors(func: F) -> F:
    """User errors become ``error: ...`` and the error's exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OptiserveError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def with_sweep_options(func: F) -> F:
    """Append one ``--flag`` per ``SweepSpec`` field; pass those given as ``sweep_overrides``."""
    from optiserve.profile.sweep import SweepSpec

    sig = inspect.signature(func, eval_str=True)
    params = [p for p in sig.parameters.values() if p.name != "sweep_overrides"]
    names = list(SweepSpec.model_fields)
    for name, field in SweepSpec.model_fields.items():
        default = field.get_default(call_default_factory=True)
        many = isinstance(default, list)
        shown = ",".join(map(str, default)) if many else default
        hint = " (repeatable)" if many else ""
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):  # a switch: --serving / --no-serving
            flag = f"{flag}/--no-{name.replace('_', '-')}"
        opt = typer.Option(
            None,
            flag,
            help=f"{field.description}{hint} (default: {shown if shown not in ('', None) else 'none'})",
            show_default=False,
        )
        scalar = Optional[bool] if isinstance(default, bool) else Optional[str]  # noqa: UP045
        kind = Optional[list[str]] if many else scalar  # noqa: UP045
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind))

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        given = {n: kwargs.pop(n) for n in names if n in kwargs}
        overrides = {k: ",".join(v) if isinstance(v, list) else v for k, v in given.items() if v not in (None, "", [])}
        return func(**kwargs, sweep_overrides=overrides)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper  # type: ignore[return-value]
