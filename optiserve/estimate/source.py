"""Which catalog entry stands in for the machine that measured a profile, and which
entries optiserve can serve on at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from optiserve.errors import CatalogError
from optiserve.estimate.catalog import Catalog, Entry
from optiserve.estimate.cpu_id import check_named, match


def match_source(hardware: Mapping[str, Any], catalog: Catalog) -> Entry:
    """The catalog CPU entry standing in for the machine that measured a profile:
    identified by vendor, part name, family/model, then flags (``cpu_id.match``);
    never another vendor's. A nearest-generation stand-in carries the measured
    generation, so its band is "other CPU generation"."""
    return match(hardware, catalog).entry


def source_entry(catalog: Catalog, hardware: Mapping[str, Any], measured_on: str | None) -> tuple[Entry, bool]:
    """(entry, explicit): the named entry, or the one matched from the profile's CPU identity.
    A named entry must be the kind of machine the profile's fingerprint says measured it:
    the same CPU architecture and vendor, and an accelerator only where the profile saw a GPU."""
    if measured_on:
        entry = catalog.get(measured_on)
        arch = "arm64" if hardware.get("arch") in ("aarch64", "arm64") else "x86_64"
        cpu = hardware.get("cpu_model", "?")
        if hardware.get("arch") and entry.instance.cpu.arch != arch:
            raise CatalogError(
                f"--measured-on {measured_on} is an {entry.instance.cpu.arch} machine; the profile was measured "
                f"on {arch} ({cpu})"
            )
        if entry.accelerator is not None and not hardware.get("gpus"):
            raise CatalogError(
                f"--measured-on {measured_on} has {entry.accelerator.model} GPUs; "
                f"the profile's machine had none ({cpu})"
            )
        check_named(hardware, entry)
        return entry, True
    return match_source(hardware, catalog), False


def usable(entry: Entry) -> str | None:
    """Why no runtime of optiserve can serve on this entry, or None."""
    acc = entry.accelerator
    if acc is not None and acc.kind != "gpu":
        return f"{acc.kind} accelerators ({acc.model}) have no optiserve runtime yet"
    return None


def targets(catalog: Catalog, names: Sequence[str] = ()) -> list[Entry]:
    return [catalog.get(n) for n in names] if names else list(catalog.entries)
