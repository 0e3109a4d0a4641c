"""The ``models`` and ``catalog`` sub-commands: the offline zoo and the hardware catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from optiserve.cli._common import Catalogs, err, one_line_errors, out
from optiserve.errors import OptiserveError


@one_line_errors
def models_build(
    names: Annotated[Optional[list[str]], typer.Argument(help="zoo models (default: mlp cnn encoder)")] = None,  # noqa: UP045
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder to write to")] = Path("models"),
    seed: Annotated[int, typer.Option(help="weight seed")] = 0,
    force: Annotated[bool, typer.Option(help="rebuild existing files")] = False,
    all_models: Annotated[bool, typer.Option("--all", help="every zoo model")] = False,
) -> None:
    """Build zoo models deterministically (seeded weights, no download)."""
    from optiserve.models.zoo import ZOO, build_zoo

    wanted = list(ZOO) if all_models else names
    try:
        paths = build_zoo(out_dir, wanted, seed=seed, force=force)
    except OSError as exc:
        raise OptiserveError(f"cannot write models to {out_dir}: {exc.strerror or exc}") from None
    for p in paths:
        out.print(f"{p}  ({p.stat().st_size / 1e6:.1f} MB)")


@one_line_errors
def catalog_list(
    catalog: Catalogs = None,
    region: Annotated[Optional[list[str]], typer.Option(help="region names or geo tags (EU, US, AE)")] = None,  # noqa: UP045
    gpu: Annotated[bool, typer.Option(help="accelerator instances only")] = False,
) -> None:
    """List instance types with their ceilings and cheapest on-demand price in the allowed regions."""
    from optiserve.estimate.catalog import load_catalog
    from optiserve.estimate.targets import cpu_ceiling

    cat = load_catalog(catalog or ())
    t = Table("instance", "vCPU", "GiB", "accelerator", "fp32 TFLOP/s", "GB/s", "$/h", "region", "as of")
    for e in cat.entries:
        acc = e.accelerator
        if gpu and acc is None:
            continue
        offer = cat.offer(e, region or (), spot=False)
        if offer is None:
            continue
        if acc:
            tf, bw = acc.fp32_tflops * acc.count, acc.memory_bandwidth_gbs * acc.count
        else:  # every vCPU: the ceiling the estimates use
            ceiling = cpu_ceiling(e, e.instance.vcpus, "fp32")
            tf, bw = ceiling.flops_per_s / 1e12, ceiling.dram_bytes_per_s / 1e9
        t.add_row(
            escape(e.key),
            str(e.instance.vcpus),
            f"{e.instance.memory_gib:g}",
            f"{acc.count} x {escape(acc.model)}" if acc else "",
            f"{tf:.1f}",
            f"{bw:.0f}",
            f"{offer.usd_per_hour:.3f}",
            offer.region,
            offer.as_of.isoformat(),
        )
    out.print(t)
    out.print(f"{t.row_count} of {len(cat.entries)} instance types; files: {', '.join(cat.files)}")


@one_line_errors
def catalog_check(files: Annotated[list[Path], typer.Argument(help="catalog YAML files to validate")]) -> None:
    """Validate catalog files (with the built-in regions): the first error names the entry and field."""
    from optiserve.estimate.catalog import load_catalog

    cat = load_catalog(files)
    for w in cat.warnings:
        err.print(f"[yellow]warning[/yellow]: {w}")
    out.print(f"ok: {len(cat.entries)} instance types after adding {', '.join(map(str, files))}")


def models_list() -> None:
    """List the zoo."""
    from optiserve.models.zoo import ZOO

    t = Table("name", "description", "in demo")
    for e in ZOO.values():
        t.add_row(e.name, e.description, "yes" if e.demo else "")
    out.print(t)
