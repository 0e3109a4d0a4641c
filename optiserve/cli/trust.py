"""``keygen``, ``sign``, ``check-signature``: Ed25519 signatures over plans and emitted bundles,
and the audit-trail hook the ``plan``, ``emit`` and ``verify`` commands call."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from optiserve.cli._common import err, one_line_errors, out


@one_line_errors
def keygen(
    key: Annotated[Path, typer.Argument(help="private key file to create (the public key goes to KEY.pub)")],
) -> None:
    """Make an Ed25519 key pair for signing plans and bundles."""
    from optiserve._signing import generate_key

    private, public = generate_key(key)
    out.print(f"wrote {escape(str(private))} (private, mode 0600) and {escape(str(public))}")


@one_line_errors
def sign(
    target: Annotated[Path, typer.Argument(help="a plan JSON or an emitted folder")],
    key: Annotated[Path, typer.Option(help="Ed25519 private key (PEM)")],
) -> None:
    """Sign a plan file or a bundle folder; the signature is written beside it."""
    from optiserve._signing import sign as sign_target

    out.print(f"wrote {escape(str(sign_target(target, key)))}")


@one_line_errors
def check_signature(
    target: Annotated[Path, typer.Argument(help="a signed plan JSON or emitted folder")],
    public_key: Annotated[Path, typer.Option(help="the signer's Ed25519 public key (PEM)")],
) -> None:
    """Check a plan's or bundle's signature: exit 0 only if every byte is what was signed."""
    from optiserve._signing import check

    c = check(target, public_key)
    out.print(f"{escape(str(c.target))}: signature OK ({c.files} files, signer {c.signer}, sha256 {c.sha256[:16]})")


def audit(
    command: str,
    plan: Mapping[str, Any],
    plan_file: Path | None,
    written: Iterable[Path] = (),
    result: Mapping[str, Any] | None = None,
    time: str | None = None,
) -> None:
    """Append the command's line to the audit trail (one line on stderr says where)."""
    from optiserve._audit import append, record_for_plan

    path = append(record_for_plan(command, plan, plan_file, written, result, time))
    if path is not None:
        err.print(f"audit: {command} recorded in {escape(str(path))}", highlight=False)
