"""Which CPU measured a profile, and which catalog entry stands in for it.

Flags alone confuse vendors (AVX-512 VNNI is on Ice Lake *and* Zen 4), so the
identity is decided in this order, and the reason names the rule that decided:

1. vendor (``vendor_id`` / ARM implementer; older profiles: the model name,
   then vendor-only flags) -- authoritative, a match never crosses vendors;
2. a part number in the model name ("AMD EPYC 9R14", "Xeon Platinum 8488C");
3. family/model (ARM: ``CPU part``), unless the flags show features that
   generation lacks -- hypervisors mask model numbers (a Sapphire Rapids guest
   reporting Rocket Lake's model 167) -- then
4. the flags: the oldest generation consistent with them.

Without an entry of that generation the nearest one of the same vendor stands
in, relabelled with the measured generation so the band says "other
generation", never "same generation".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from optiserve.errors import CatalogError
from optiserve.estimate.catalog import Catalog, Entry

# Per vendor, oldest first: each step is a set of catalog generation tags that
# are one microarchitecture (Graviton2 and Ampere Altra are both Neoverse N1).
GENERATIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "intel": (
        ("haswell",),
        ("broadwell",),
        ("skylake",),
        ("cascade-lake",),
        ("cooper-lake",),
        ("ice-lake",),
        ("sapphire-rapids",),
        ("emerald-rapids",),
        ("granite-rapids",),
    ),
    "amd": (("zen",), ("zen2",), ("zen3",), ("zen4",), ("zen5",)),
    "arm": (("graviton2", "ampere-altra"), ("graviton3",), ("cobalt-100",), ("graviton4", "axion")),
}
# Flags each generation has and its predecessors lack, newest first: the oldest
# generation consistent with a flag set is the first rule whose flag is present.
_FLAG_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "intel": (
        ("amx_fp16", "granite-rapids"),
        ("amx_int8", "sapphire-rapids"),
        ("avx512_fp16", "sapphire-rapids"),
        ("avx512_bf16", "cooper-lake"),
        ("avx512ifma", "ice-lake"),
        ("avx512vbmi", "ice-lake"),
        ("avx512_vnni", "cascade-lake"),
        ("avx512f", "skylake"),
        ("avx2", "haswell"),
    ),
    "amd": (
        ("avx_vnni", "zen5"),
        ("avx512f", "zen4"),
        ("vaes", "zen3"),
        ("clwb", "zen2"),
        ("avx2", "zen"),
    ),
    "arm": (("sve2", "cobalt-100"), ("sve", "graviton3"), ("asimddp", "graviton2")),
}
# Intel family 6 model numbers (server parts, plus the client part a hypervisor was seen to report).
_INTEL_MODELS: dict[int, tuple[str, str]] = {
    63: ("Haswell-EP", "haswell"),
    79: ("Broadwell-EP", "broadwell"),
    85: ("Skylake-SP/Cascade Lake", "skylake"),  # stepping >= 5: Cascade Lake, 10-11: Cooper Lake
    106: ("Ice Lake-SP", "ice-lake"),
    108: ("Ice Lake-D", "ice-lake"),
    143: ("Sapphire Rapids", "sapphire-rapids"),
    167: ("Rocket Lake, a client part", "ice-lake"),  # Cypress Cove: Ice Lake's feature set
    173: ("Granite Rapids", "granite-rapids"),
    174: ("Granite Rapids-D", "granite-rapids"),
    207: ("Emerald Rapids", "emerald-rapids"),
}
_ARM_PARTS: dict[int, tuple[str, str]] = {
    0xD0C: ("Neoverse N1", "graviton2"),
    0xD40: ("Neoverse V1", "graviton3"),
    0xD49: ("Neoverse N2", "cobalt-100"),
    0xD4F: ("Neoverse V2", "graviton4"),
}
_XEON_SCALABLE = re.compile(r"xeon(?:\(r\))?\s+(?:platinum|gold|silver|bronze)\s+\d(\d)\d\d([a-z]*)", re.I)
_XEON_6 = re.compile(r"xeon(?:\(r\))?\s+6\d{3}([pe])", re.I)
_XEON_E5 = re.compile(r"xeon(?:\(r\))?\s+cpu\s+e[57]-\d{4}\w?\s+v([34])", re.I)
_EPYC = re.compile(r"epyc\s+\d[0-9a-z]{2}(\d)", re.I)
_GRAVITON = re.compile(r"graviton\s*([234])", re.I)


@dataclass(frozen=True)
class CpuIdentity:
    """Vendor and generation of the profiling machine, and the rule that decided."""

    vendor: str | None  # "intel", "amd", "arm" (Neoverse cores); None: unknown
    arch: str  # "x86_64" | "arm64"
    generation: str | None  # a catalog generation tag
    rule: str  # "model name", "family/model", "flags", "none"
    reason: str


@dataclass(frozen=True)
class SourceMatch:
    """The catalog entry whose ceilings stand in for the profiling machine."""

    entry: Entry
    identity: CpuIdentity
    exact: bool  # the entry is of the identified generation
    reason: str


def _int(value: Any) -> int | None:
    try:
        return int(str(value), 0)
    except (TypeError, ValueError):
        return None


def _vendor(hw: Mapping[str, Any], arch: str, name: str, flags: set[str]) -> tuple[str | None, str]:
    raw = str(hw.get("cpu_vendor") or "")
    if raw == "GenuineIntel":
        return "intel", "vendor_id GenuineIntel"
    if raw in ("AuthenticAMD", "HygonGenuine"):
        return ("amd", "vendor_id AuthenticAMD") if raw == "AuthenticAMD" else (None, f"vendor_id {raw}")
    impl = _int(hw.get("cpu_implementer"))
    if impl is not None:
        return ("arm", "CPU implementer 0x41 (Arm)") if impl == 0x41 else (None, f"CPU implementer {impl:#x}")
    low = name.lower()
    if "intel" in low or "xeon" in low:
        return "intel", f"model name {name!r}"
    if "amd" in low or "epyc" in low:
        return "amd", f"model name {name!r}"
    if "graviton" in low or "neoverse" in low:
        return "arm", f"model name {name!r}"
    if arch == "x86_64" and flags & {"amx_int8", "amx_tile", "avx512_fp16"}:
        return "intel", "flags only Intel has (AMX / AVX512-FP16)"
    return None, "no vendor_id, no vendor in the model name"


def _from_name(vendor: str, name: str) -> tuple[str, str] | None:
    if vendor == "intel":
        if m := _XEON_6.search(name):
            return ("granite-rapids", "Xeon 6 P-core") if m.group(1).lower() == "p" else ("sierra-forest", "Xeon 6 E")
        if m := _XEON_SCALABLE.search(name):
            gen = {"1": "skylake", "2": "cascade-lake", "3": "ice-lake", "4": "sapphire-rapids", "5": "emerald-rapids"}
            tag = gen.get(m.group(1))
            if tag == "ice-lake" and "h" in m.group(2).lower():
                tag = "cooper-lake"  # 83xxH / 63xxH parts
            return (tag, f"Xeon Scalable gen digit {m.group(1)}") if tag else None
        if m := _XEON_E5.search(name):
            return ("haswell", "Xeon E5 v3") if m.group(1) == "3" else ("broadwell", "Xeon E5 v4")
    if vendor == "amd" and (m := _EPYC.search(name)):
        tag = {"1": "zen", "2": "zen2", "3": "zen3", "4": "zen4", "5": "zen5"}.get(m.group(1))
        return (tag, f"EPYC last digit {m.group(1)}") if tag else None
    if vendor == "arm" and (m := _GRAVITON.search(name)):
        return f"graviton{m.group(1)}", "Graviton in the model name"
    return None


def _from_numbers(vendor: str, hw: Mapping[str, Any]) -> tuple[str, str] | None:
    fam, model, step = _int(hw.get("cpu_family")), _int(hw.get("cpu_model_number")), _int(hw.get("cpu_stepping"))
    if vendor == "intel" and fam == 6 and model in _INTEL_MODELS:
        label, tag = _INTEL_MODELS[model]
        if model == 85 and step is not None:
            tag, label = (
                ("cooper-lake", "Cooper Lake")
                if step >= 10
                else (("cascade-lake", "Cascade Lake") if step >= 5 else ("skylake", "Skylake-SP"))
            )
        return tag, f"family 6 model {model} ({label})"
    if vendor == "amd" and fam is not None and model is not None:
        if fam == 0x17:
            return ("zen2" if model >= 0x30 else "zen"), f"family {fam:#x} model {model:#x}"
        if fam == 0x19:
            zen4 = 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF
            return ("zen4" if zen4 else "zen3"), f"family {fam:#x} model {model:#x}"
        if fam == 0x1A:
            return "zen5", f"family {fam:#x} model {model:#x}"
    part = _int(hw.get("cpu_part"))
    if vendor == "arm" and part in _ARM_PARTS:
        label, tag = _ARM_PARTS[part]
        return tag, f"CPU part {part:#x} ({label})"
    return None


def _from_flags(vendor: str, flags: set[str]) -> tuple[str, str] | None:
    for flag, tag in _FLAG_RULES.get(vendor, ()):
        if flag in flags:
            return tag, f"flag {flag}: {tag} or newer"
    return None


def order(vendor: str, generation: str) -> int | None:
    """The generation's position in its vendor's line, oldest 0; None: not in it."""
    for i, tags in enumerate(GENERATIONS.get(vendor, ())):
        if generation in tags:
            return i
    return None


def identify(hw: Mapping[str, Any]) -> CpuIdentity:
    """The profiling machine's vendor and generation from its stored fingerprint."""
    arch = "arm64" if hw.get("arch") in ("aarch64", "arm64") else "x86_64"
    name = str(hw.get("cpu_model") or "")
    flags = set(hw.get("cpu_flags") or ())
    vendor, why_vendor = _vendor(hw, arch, name, flags)
    if vendor is None and arch == "arm64" and flags & {"asimd", "sve"}:
        vendor, why_vendor = "arm", "arm64 without an implementer: assumed an Arm Neoverse core"
    if vendor is None:
        return CpuIdentity(None, arch, None, "none", f"vendor unknown ({why_vendor})")
    by_flags = _from_flags(vendor, flags)
    if found := _from_name(vendor, name):
        return CpuIdentity(vendor, arch, found[0], "model name", f"{why_vendor}; {found[1]} -> {found[0]}")
    if found := _from_numbers(vendor, hw):
        tag, label = found
        floor = order(vendor, by_flags[0]) if by_flags else None
        here = order(vendor, tag)
        if by_flags and floor is not None and here is not None and here < floor:
            reason = f"{why_vendor}; {label} contradicts {by_flags[1]} (a masked model number): flags decide"
            return CpuIdentity(vendor, arch, by_flags[0], "flags", reason)
        return CpuIdentity(vendor, arch, tag, "family/model", f"{why_vendor}; {label} -> {tag}")
    if by_flags:
        return CpuIdentity(vendor, arch, by_flags[0], "flags", f"{why_vendor}; {by_flags[1]}")
    return CpuIdentity(vendor, arch, None, "none", f"{why_vendor}; no part number, model number or telling flag")


def entry_vendor(entry: Entry) -> str | None:
    """The vendor of a catalog entry's CPU, read from its model string."""
    low = entry.instance.cpu.model.lower()
    if "intel" in low or "xeon" in low:
        return "intel"
    if "amd" in low or "epyc" in low:
        return "amd"
    arm_names = ("graviton", "neoverse", "ampere", "axion", "cobalt")
    if entry.instance.cpu.arch == "arm64" and any(k in low for k in arm_names):
        return "arm"
    return None


def match(hw: Mapping[str, Any], catalog: Catalog) -> SourceMatch:
    """The catalog CPU entry standing in for the profiling machine, or a one-line error."""
    ident = identify(hw)
    cpu_name = hw.get("cpu_model", "?")
    if ident.vendor is None or ident.generation is None:
        raise CatalogError(
            f"cannot identify the profiling machine's CPU ({cpu_name}: {ident.reason}): "
            "name the catalog entry it matches with --measured-on"
        )
    here = order(ident.vendor, ident.generation)
    if here is None:
        raise CatalogError(
            f"the profiling machine's CPU ({cpu_name}) is {ident.generation}, which no catalog entry resembles: "
            "name one with --measured-on"
        )
    mine = [
        e
        for e in catalog.entries
        if e.accelerator is None and e.instance.cpu.arch == ident.arch and entry_vendor(e) == ident.vendor
    ]
    same = [e for e in mine if order(ident.vendor, e.instance.cpu.generation) == here]
    if same:
        best = min(same, key=lambda e: (e.instance.vcpus, e.key))
        return SourceMatch(best, ident, True, f"{best.key} ({ident.generation}, by {ident.rule}): {ident.reason}")
    ranked = [(order(ident.vendor, e.instance.cpu.generation), e) for e in mine]
    near = [(abs(i - here), i, e) for i, e in ranked if i is not None]
    if not near:
        raise CatalogError(
            f"no {ident.vendor} {ident.arch} CPU entry in the catalog for the profiling machine "
            f"({cpu_name}, {ident.generation}): name one with --measured-on"
        )
    _, _, best = min(near, key=lambda t: (t[0], t[1], t[2].instance.vcpus, t[2].key))
    cpu = best.instance.cpu.model_copy(update={"generation": ident.generation})
    stand_in = replace(best, instance=best.instance.model_copy(update={"cpu": cpu}))
    reason = (
        f"{best.key} ({best.instance.cpu.generation}, nearest catalog generation to the measured "
        f"{ident.generation}, by {ident.rule}): {ident.reason}"
    )
    return SourceMatch(stand_in, ident, False, reason)


def check_named(hw: Mapping[str, Any], entry: Entry) -> None:
    """A --measured-on entry must be of the profiling machine's vendor (when known)."""
    ident = identify(hw)
    theirs = entry_vendor(entry)
    if ident.vendor is not None and theirs is not None and theirs != ident.vendor:
        raise CatalogError(
            f"--measured-on {entry.name} has an {theirs} CPU; the profile was measured on {ident.vendor} "
            f"({hw.get('cpu_model', '?')}: {ident.reason})"
        )


def explain(hw: Mapping[str, Any], catalog: Catalog) -> str:
    """One line for ``optiserve env``: the entry matched and why, or why none."""
    try:
        return match(hw, catalog).reason
    except CatalogError as exc:
        return f"none: {exc}"
