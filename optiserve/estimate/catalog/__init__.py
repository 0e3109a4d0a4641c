"""The hardware catalog: instance types, their ceilings and sourced, dated prices.

Built-in entries are package data (``data/*.yaml``); ``load_catalog(extra)``
adds user files in the same format, whose entries replace built-ins of the
same provider and name. A file that does not validate raises ``CatalogError``
naming the file, the entry and the field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from optiserve._validated_yaml import parse_validated
from optiserve.errors import CatalogError, UnknownNameError
from optiserve.estimate.catalog.schema import Accelerator, Cpu, Instance, Price, ProviderFile, Region, RegionsFile

__all__ = ["Accelerator", "Catalog", "Cpu", "Entry", "Offer", "Price", "Region", "load_catalog"]


@dataclass(frozen=True)
class Entry:
    provider: str
    instance: Instance

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.instance.name}"

    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def accelerator(self) -> Accelerator | None:
        return self.instance.accelerator


@dataclass(frozen=True)
class Offer:
    """The price one placement pays: the cheapest allowed region, spot where allowed."""

    region: str
    usd_per_hour: float
    spot: bool
    source: str
    as_of: dt.date


KNOWN_PROVIDERS = ("aws", "azure", "gcp")  # the clouds the built-in prices and regions come from


@dataclass(frozen=True)
class Catalog:
    entries: tuple[Entry, ...]
    regions: dict[str, Region]
    files: tuple[str, ...]
    warnings: tuple[str, ...] = ()  # accepted but suspicious: printed by ``plan`` and ``catalog check``

    def get(self, name: str) -> Entry:
        """By ``name`` or ``provider:name``."""
        for e in self.entries:
            if name in (e.name, e.key):
                return e
        raise UnknownNameError("instance type", name, [e.key for e in self.entries])

    def region_allowed(self, region: str, allowed: Sequence[str]) -> bool:
        """``allowed`` holds region names or geo tags (``EU``, ``AE``); empty allows all."""
        if not allowed:
            return True
        info = self.regions.get(region)
        tags = {region.lower()} | ({info.country.lower(), *(g.lower() for g in info.geo)} if info else set())
        return any(a.lower() in tags for a in allowed)

    def offer(self, entry: Entry, allowed: Sequence[str], spot: bool) -> Offer | None:
        best: Offer | None = None
        for p in entry.instance.prices:
            if not self.region_allowed(p.region, allowed):
                continue
            cands = [Offer(p.region, p.on_demand_usd_per_hour, False, p.source, p.as_of)]
            if spot and p.spot_usd_per_hour is not None:
                cands.append(Offer(p.region, p.spot_usd_per_hour, True, p.spot_source or p.source, p.as_of))
            for c in cands:
                if best is None or c.usd_per_hour < best.usd_per_hour:
                    best = c
        return best

    def known_tags(self) -> set[str]:
        tags = set(self.regions)
        for r in self.regions.values():
            tags |= {r.country, *r.geo}
        return {t.lower() for t in tags}


def _where(data: Any, loc: tuple[int | str, ...]) -> str:
    """'instance c7i.2xlarge, field cpu.ghz' from a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "instances" and isinstance(loc[1], int):
        try:
            name = data["instances"][loc[1]].get("name", f"#{loc[1] + 1}")
        except (KeyError, IndexError, TypeError, AttributeError):
            name = f"#{loc[1] + 1}"
        rest = ".".join(str(x) for x in loc[2:]) or "(entry)"
        return f"instance {name!r}, field {rest}"
    return "field " + ".".join(str(x) for x in loc)


def _parse(text: str, label: str, model: type[ProviderFile] | type[RegionsFile]) -> Any:
    return parse_validated(text, f"catalog {label}", model, CatalogError, _where, "'provider' and 'instances'")


def _builtin_texts() -> Iterable[tuple[str, str]]:
    data = resources.files("optiserve.estimate.catalog") / "data"
    for item in sorted(data.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".yaml"):
            yield item.name, item.read_text()


def load_catalog(extra: Sequence[Path] = (), builtin: bool = True) -> Catalog:
    entries: dict[str, Entry] = {}
    regions: dict[str, Region] = {}
    files: list[str] = []
    texts: list[tuple[str, str]] = list(_builtin_texts()) if builtin else []
    for path in extra:
        try:
            texts.append((str(path), Path(path).read_text()))
        except OSError as exc:
            raise CatalogError(f"catalog {path}: cannot read ({exc.strerror})") from None
    for label, text in texts:
        files.append(label)
        if Path(label).name == "regions.yaml":
            regions.update(_parse(text, label, RegionsFile).regions)
            continue
        pf: ProviderFile = _parse(text, label, ProviderFile)
        regions.update(pf.regions)
        for inst in pf.instances:
            e = Entry(pf.provider, inst)
            entries[e.key] = e
    if not entries:
        raise CatalogError("the catalog has no instance types")
    unknown = sorted({p.region for e in entries.values() for p in e.instance.prices if p.region not in regions})
    if unknown:
        raise CatalogError(f"catalog prices name regions with no location (add them to regions): {', '.join(unknown)}")
    return Catalog(tuple(entries.values()), regions, tuple(files), _warnings(entries.values()))


def _warnings(entries: Iterable[Entry], today: dt.date | None = None) -> tuple[str, ...]:
    """An unknown provider (no built-in regions or prices to compare with) and prices
    dated in the future (a typo in ``as_of`` that would make them look fresh)."""
    today = today or dt.date.today()
    out: list[str] = []
    unknown = sorted({e.provider for e in entries if e.provider not in KNOWN_PROVIDERS})
    if unknown:
        out.append(f"catalog provider(s) {', '.join(unknown)} not one of {', '.join(KNOWN_PROVIDERS)}: check the name")
    future = sorted({e.key for e in entries for p in e.instance.prices if p.as_of > today})
    if future:
        shown = ", ".join(future[:3]) + (f" and {len(future) - 3} more" if len(future) > 3 else "")
        out.append(f"prices dated after today ({today.isoformat()}) for {shown}: check as_of")
    return tuple(out)
