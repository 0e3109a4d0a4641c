"""Identifying the profiling machine from recorded (or reconstructed) cpuinfo, and matching
it to a catalog entry that never crosses vendors. Each fixture says in its first line
whether it was recorded or reconstructed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from optiserve._cpuinfo import parse_cpuinfo
from optiserve.errors import CatalogError
from optiserve.estimate.catalog import load_catalog
from optiserve.estimate.cpu_id import entry_vendor, explain, identify, match
from optiserve.estimate.source import source_entry
from optiserve.profile.hardware import cpu_fingerprint

DATA = Path(__file__).parent / "data" / "cpuinfo"
ARM = {"graviton3", "graviton4"}


def _hw(name: str) -> dict[str, Any]:
    text = "\n".join(ln for ln in (DATA / f"{name}.txt").read_text().splitlines() if not ln.startswith("#"))
    arch = "aarch64" if name in ARM else "x86_64"
    return {**cpu_fingerprint(parse_cpuinfo(text)), "arch": arch, "gpus": []}


@pytest.mark.parametrize(
    ("fixture", "vendor", "generation", "rule"),
    [
        ("kvm-sapphire-rapids-masked", "intel", "sapphire-rapids", "flags"),  # model 167 contradicts AMX
        ("intel-icelake-8375c", "intel", "ice-lake", "model name"),
        ("amd-genoa-kvm", "amd", "zen4", "family/model"),
        ("amd-genoa-9r14", "amd", "zen4", "model name"),
        ("amd-genoa-masked-flags", "amd", "zen4", "family/model"),  # flags alone would say zen3
        ("amd-milan-7r13", "amd", "zen3", "model name"),
        ("amd-milan-kvm", "amd", "zen3", "family/model"),  # recorded: "AMD EPYC", no part number
        ("graviton3", "arm", "graviton3", "family/model"),
        ("graviton4", "arm", "graviton4", "family/model"),
    ],
)
def test_fixture_is_identified_by_the_strongest_rule(fixture: str, vendor: str, generation: str, rule: str) -> None:
    ident = identify(_hw(fixture))
    assert (ident.vendor, ident.generation, ident.rule) == (vendor, generation, rule), ident.reason


@pytest.mark.parametrize(
    ("fixture", "vendor"),
    [
        ("kvm-sapphire-rapids-masked", "intel"),
        ("intel-icelake-8375c", "intel"),
        ("amd-genoa-kvm", "amd"),
        ("amd-genoa-9r14", "amd"),
        ("amd-genoa-masked-flags", "amd"),
        ("amd-milan-7r13", "amd"),
        ("amd-milan-kvm", "amd"),
        ("graviton3", "arm"),
        ("graviton4", "arm"),
    ],
)
def test_match_never_crosses_vendors(fixture: str, vendor: str) -> None:
    """Issue 18: a Genoa profile was matched to c6i (Ice Lake) because both have AVX-512 VNNI."""
    m = match(_hw(fixture), load_catalog())
    assert entry_vendor(m.entry) == vendor, m.reason
    assert m.exact and m.entry.instance.cpu.generation == identify(_hw(fixture)).generation


def test_genoa_profile_matches_a_zen4_entry_and_says_why() -> None:
    src, explicit = source_entry(load_catalog(), _hw("amd-genoa-kvm"), None)
    assert not explicit and src.instance.cpu.generation == "zen4" and "EPYC" in src.instance.cpu.model
    line = explain(_hw("amd-genoa-kvm"), load_catalog())
    assert "zen4" in line and "family/model" in line and "\n" not in line


def test_legacy_profile_without_id_fields_falls_back_to_name_then_flags() -> None:
    """Profiles stored before the fingerprint had vendor/family/model (profiles/demo-cnn)."""
    genoa = {"cpu_model": "AMD EPYC Processor", "arch": "x86_64", "cpu_flags": ["avx2", "avx512_vnni", "avx512f"]}
    assert identify(genoa).vendor == "amd" and identify(genoa).generation == "zen4"
    spr = {"cpu_model": "Intel(R) Xeon(R) Processor", "arch": "x86_64", "cpu_flags": ["amx_int8", "avx512_vnni"]}
    assert identify(spr).vendor == "intel" and identify(spr).generation == "sapphire-rapids"
    nameless = {"cpu_model": "x86_64", "arch": "x86_64", "cpu_flags": ["avx2", "avx512_vnni"]}
    with pytest.raises(CatalogError, match="--measured-on"):
        match(nameless, load_catalog())  # vendor unknown: never guessed from shared flags


def test_missing_generation_falls_back_to_the_same_vendor_and_says_other_generation(
    tmp_path: Path, mlp_path: Path
) -> None:
    """Only Intel and Zen 3 entries: a Zen 4 machine stands on Zen 3 (never on Ice Lake),
    and a Zen 3 target is then 'other CPU generation', not 'same generation'."""
    from tests.estimate.test_targets import CATALOG, _profile

    lab_yaml = CATALOG.replace("model: x,", "model: AMD EPYC 7B13,")
    intel = lab_yaml.replace("name: src,", "name: icx,").replace("name: fast,", "name: icx2,")
    intel = intel.replace("AMD EPYC 7B13", "Intel Xeon Platinum 8375C").replace("zen3", "ice-lake")
    p, q = tmp_path / "lab.yaml", tmp_path / "intel.yaml"
    p.write_text(lab_yaml)
    q.write_text(intel.replace("provider: lab", "provider: labi").replace("lab-1", "labi-1"))
    cat = load_catalog([p, q], builtin=False)
    m = match(_hw("amd-genoa-9r14"), cat)
    assert m.entry.key.startswith("lab:") and not m.exact
    assert m.entry.instance.cpu.generation == "zen4" and "nearest catalog generation" in m.reason
    from optiserve.estimate.targets import CurveBuilder

    builder = CurveBuilder(_profile(mlp_path, cat), mlp_path, cat, m.entry)
    curve = builder.curve(cat.get("lab:fast"), "fp32", 2)
    assert "same CPU generation" not in curve.basis and "other CPU generation" in curve.basis
    assert curve.band >= 0.3


def test_measured_on_of_another_vendor_is_a_one_line_error() -> None:
    cat = load_catalog()
    with pytest.raises(CatalogError, match=r"--measured-on c6i\.xlarge has an intel CPU") as err:
        source_entry(cat, _hw("amd-genoa-kvm"), "c6i.xlarge")
    assert "\n" not in str(err.value)
    entry, explicit = source_entry(cat, _hw("amd-genoa-kvm"), "c7a.xlarge")
    assert explicit and entry.name == "c7a.xlarge"


def test_every_catalog_cpu_names_its_vendor() -> None:
    """The never-cross-vendors rule reads the vendor from the entry's CPU model string."""
    assert [e.key for e in load_catalog().entries if entry_vendor(e) is None] == []


def test_two_generations_behind_one_masked_model_name_get_different_machine_ids() -> None:
    """Zen 4 and Zen 5 guests both say "AMD EPYC": the id (the ceilings cache's key, the resume
    check's) must still tell them apart, and one machine must keep one id."""
    from optiserve.profile.hardware import machine_id

    zen4 = {**_hw("amd-genoa-kvm"), "logical_cpus": 2, "usable_cpus": 2, "memory_gb": 23.5}
    zen5 = {**zen4, "cpu_family": 26, "cpu_model_number": 2}
    assert zen4["cpu_model"] == zen5["cpu_model"]
    assert machine_id(zen4) != machine_id(zen5)
    assert machine_id(zen4) == machine_id(dict(zen4))
    assert machine_id({**zen4, "hostname": "elsewhere"}) == machine_id(zen4)
