"""``drift``: which served inputs moved away from the profile's reference, from a live ``/metrics`` or a dump of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from optiserve.cli._common import err, one_line_errors, out
from optiserve.errors import UsageError

SLIGHT = 0.1  # PSI's customary bands: below 0.1 stable, 0.1-0.2 slight, past 0.2 moved


@dataclass(frozen=True)
class Scored:
    """One input group as the server exported it."""

    model: str
    input: str
    group: str
    values: int
    psi: float | None
    shift: float | None


@dataclass(frozen=True)
class Exported:
    scored: tuple[Scored, ...]
    source: str  # the reference's, as the server names it
    synthetic: bool
    digest: str
    window_s: str


def _read(source: str) -> str:
    """The metrics text of a URL (``/metrics`` added to a bare server address) or a saved dump."""
    if source.startswith(("http://", "https://")):
        import urllib.error
        import urllib.parse
        import urllib.request

        parts = urllib.parse.urlsplit(source)
        url = source.rstrip("/") + "/metrics" if parts.path in ("", "/") else source
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body: bytes = r.read()
        except urllib.error.HTTPError as exc:
            raise UsageError(f"{url} answered {exc.code} {exc.reason}") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {url}: {getattr(exc, 'reason', exc)}") from None
        return body.decode("utf-8", errors="replace")
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"no such metrics dump: {source} (or pass an http(s):// URL)")
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None


def parse_metrics(text: str, where: str) -> Exported:
    """The drift gauges of a Prometheus text exposition (read by prometheus_client's own parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    psi: dict[tuple[str, str, str], float] = {}
    shift: dict[tuple[str, str, str], float] = {}
    values: dict[tuple[str, str, str], int] = {}
    info: dict[str, str] = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = (s.labels.get("model", ""), s.labels.get("input", ""), s.labels.get("group", ""))
                if s.name == "optiserve_input_drift_psi":
                    psi[key] = s.value
                elif s.name == "optiserve_input_drift_shift":
                    shift[key] = s.value
                elif s.name == "optiserve_input_window_values":
                    values[key] = int(s.value)
                elif s.name == "optiserve_input_reference":
                    info = dict(s.labels)
    except ValueError as exc:
        raise UsageError(f"{where} is not Prometheus metrics text: {exc}") from None
    if not info:
        raise UsageError(f"{where} exports no input drift metrics: serve the model with --reference PROFILE_DIR")
    scored = tuple(Scored(*k, n, psi.get(k), shift.get(k)) for k, n in values.items())
    synthetic = info.get("synthetic") == "true"
    return Exported(scored, info.get("source", "?"), synthetic, info.get("digest", ""), info.get("window_s", "?"))


def _table(scored: tuple[Scored, ...], threshold: float) -> tuple[Table, int]:
    """Every group past the slight band, worst first, then one row per input for the rest."""
    table = Table("input", "group", "PSI", "mean shift (ref sd)", "values", "state")
    moved = 0
    for name in dict.fromkeys(s.input for s in scored):
        mine = sorted((s for s in scored if s.input == name), key=lambda s: -(s.psi or 0.0))
        rest = []
        for s in mine:
            if s.psi is not None and s.psi >= min(SLIGHT, threshold):
                state = "MOVED" if s.psi >= threshold else "slight"
                moved += state == "MOVED"
                shown = f"{s.shift:+.2f}" if s.shift is not None else "-"
                table.add_row(escape(name), s.group, f"{s.psi:.3f}", shown, str(s.values), state)
            else:
                rest.append(s)
        if rest:
            scores = [s.psi for s in rest if s.psi is not None]
            few = len(rest) - len(scores)
            state = "stable" if scores else "too few values"
            state += f" ({few} with too few values)" if few and scores else ""
            worst = f"max {max(scores):.3f}" if scores else "-"
            group = rest[0].group if len(rest) == 1 else f"{len(rest)} groups"
            table.add_row(escape(name), group, worst, "", str(min(s.values for s in rest)), state)
    return table, moved


@one_line_errors
def drift(
    source: Annotated[str, typer.Argument(help="a server's URL (its /metrics is read) or a saved /metrics dump")],
    profile: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="profile folder the server's --reference names: checks it is the same reference"),
    ] = None,
    threshold: Annotated[float, typer.Option(help="PSI past which an input counts as moved")] = 0.2,
    fail_on_drift: Annotated[bool, typer.Option(help="exit 1 when any input moved")] = False,
) -> None:
    """Which inputs drifted from the profile's reference inputs, and by how much (PSI, mean shift)."""
    if threshold <= 0:
        raise UsageError("--threshold must be > 0")
    exported = parse_metrics(_read(source), source)
    source_label, synthetic = exported.source, exported.synthetic
    if profile is not None:
        from optiserve.profile.reference import load_reference

        ref = load_reference(profile)
        source_label, synthetic = ref.source, ref.synthetic
        if ref.digest != exported.digest:
            err.print(
                f"the server scores against reference {exported.digest} ({escape(exported.source)}), "
                f"not {escape(str(profile))}'s {ref.digest}: its figures are against its own reference"
            )
    out.print(
        f"reference: {escape(source_label)}; window {exported.window_s} s; moved: PSI >= {threshold:g}",
        highlight=False,
    )
    if synthetic:
        out.print(
            "the reference inputs are SYNTHETIC: drift against synthetic data is meaningless for real traffic "
            "(profile with --inputs real samples for a real reference)",
            highlight=False,
        )
    table, moved = _table(exported.scored, threshold)
    out.print(table)
    n_inputs = len({s.input for s in exported.scored if s.psi is not None and s.psi >= threshold})
    out.print(f"{moved} group(s) of {n_inputs} input(s) moved" if moved else "no input moved", highlight=False)
    if moved and fail_on_drift:
        raise typer.Exit(1)
