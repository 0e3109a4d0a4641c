"""The cross-machine check (``benchmarks/cross_machine.py``) on two synthetic reference machines
whose rows follow a known truth: effective ceilings that match the truth transfer exactly,
and a machine whose stored int8 ceiling is wrong fails the 15% target for int8 alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.cross_machine import Machine, cross_check, load_machines, machine_entry, misses
from optiserve.estimate.catalog import Catalog, load_catalog
from optiserve.estimate.graph_cost import graph_cost
from optiserve.estimate.targets import cpu_ceiling
from optiserve.profile.ceilings import Ceilings, ThreadCeilings
from optiserve.types import BenchConfig, Measurement, Precision, Profile, Status

PRICE = "[{region: lab-1, on_demand_usd_per_hour: 1.0, source: https://lab.example, as_of: 2026-01-01}]"
CPU = """{{model: {model}, arch: x86_64, generation: {gen}, threads_per_core: 2, ghz: 3.0,
          fp32_flops_per_cycle_per_core: 64, int8_ops_per_cycle_per_core: {int8},
          bf16_flops_per_cycle_per_core: 64, memory_bandwidth_gbs: 20}}"""
CATALOG = f"""
provider: lab
regions: {{lab-1: {{provider: lab, country: DE, geo: [EU]}}}}
instances:
  - {{name: spr, family: s, vcpus: 4, memory_gib: 16, prices: {PRICE},
     cpu: {CPU.format(model="Intel Xeon Platinum 8488C", gen="sapphire-rapids", int8=2048)}}}
  - {{name: genoa, family: s, vcpus: 4, memory_gib: 16, prices: {PRICE},
     cpu: {CPU.format(model="AMD EPYC 9R14", gen="zen4", int8=256)}}}
"""
HW = {
    "intel": {"vendor_id": "GenuineIntel", "cpu_model": "Intel(R) Xeon(R) Platinum 8488C", "cpu_flags": ["amx_int8"]},
    "amd": {"vendor_id": "AuthenticAMD", "cpu_model": "AMD EPYC 9R14 96-Core Processor", "cpu_flags": ["avx512f"]},
}
EFFICIENCY = {"fp32": 0.6, "int8-static": 0.3}  # the truth: the same on both machines, against effective ceilings
OVERHEAD_S = 1e-4


@pytest.fixture
def lab(tmp_path: Path) -> Catalog:
    p = tmp_path / "lab.yaml"
    p.write_text(CATALOG)
    return load_catalog([p], builtin=False)


def _ceilings(fp32: float, int8: float) -> Ceilings:
    """Rates low enough that the MLP is compute-bound: the ceilings under test decide its time."""
    per = {t: ThreadCeilings(fp32 * t, fp32 * t * 0.9, int8 * t, int8 * t * 0.5, 20e9) for t in (1, 2)}
    return Ceilings(per, "onnxruntime test", "2026-01-01T00:00:00", "synthetic")


def _machine(
    name: str, vendor: str, model: Path, catalog: Catalog, truth: Ceilings, stored: Ceilings | None = None
) -> Machine:
    """Rows timed as roofline(truth) / efficiency + overhead; the profile stores ``stored`` (default the truth)."""
    hw: dict[str, Any] = {**HW[vendor], "arch": "x86_64", "logical_cpus": 2, "physical_cores": 2, "usable_cpus": 2}
    meta: dict[str, Any] = {"hardware": hw, "created": "2026-01-01T00:00:00", "ceilings": truth.to_dict()}
    entry = machine_entry(Machine(name, {"mlp": Profile(meta, ())}), catalog)
    rows = []
    for prec, elem, compute in (("fp32", "fp32", "fp32"), ("int8-static", "int8", "int8")):
        for t in (1, 2):
            ceil = cpu_ceiling(entry, t, compute, 0.0, truth)
            for b in (1, 8):
                secs = ceil.roofline_s(graph_cost(model, b, elem)) / EFFICIENCY[prec]
                jitter = np.random.default_rng(b + t).normal(1.0, 0.01, 200).clip(0.97, 1.03)
                samples = tuple(round((secs + OVERHEAD_S) * 1e9 * j) for j in jitter)
                cfg = BenchConfig("onnxruntime-cpu", Precision(prec), b, t)
                rows.append(Measurement(cfg, Status.OK, samples_ns=samples))
    meta["ceilings"] = (stored or truth).to_dict()
    return Machine(name, {"mlp": Profile(meta, tuple(rows))})


def test_effective_ceilings_transfer_where_datasheet_peaks_do_not(mlp_path: Path, lab: Catalog) -> None:
    spr = _machine("sapphire-rapids-2vcpu", "intel", mlp_path, lab, _ceilings(2e9, 17e9))
    genoa = _machine("zen4-2vcpu", "amd", mlp_path, lab, _ceilings(1.5e9, 6e9))
    pairs = cross_check([spr, genoa], {"mlp": mlp_path}, lab)
    assert {(p.source, p.precision) for p in pairs} == {
        (m, q) for m in (spr.name, genoa.name) for q in ("fp32", "int8-static")
    }
    for p in pairs:
        assert p.rows == 4 and p.covered == 4
        assert p.mean_abs_error < 0.03, p  # jitter only: the truth is recovered
        assert p.no_transfer > 0.1  # the machines do differ: "same time" would be wrong
    assert not misses(pairs)
    # the same truth through datasheet peaks x reach: AMX's 2048 vs 256 int8 peaks do not match the 17 vs 6 reached
    datasheet = cross_check([spr, genoa], {"mlp": mlp_path}, lab, "datasheet")
    assert any("int8-static" in line for line in misses(datasheet))


def test_a_wrong_stored_int8_ceiling_fails_the_target_for_int8_only(mlp_path: Path, lab: Catalog) -> None:
    spr = _machine("sapphire-rapids-2vcpu", "intel", mlp_path, lab, _ceilings(2e9, 17e9))
    wrong = _machine("zen4-2vcpu", "amd", mlp_path, lab, _ceilings(1.5e9, 6e9), stored=_ceilings(1.5e9, 24e9))
    failed = misses(cross_check([spr, wrong], {"mlp": mlp_path}, lab))
    assert failed and all("int8-static" in line for line in failed)


def test_the_committed_reference_machines_carry_the_recipe_and_their_ceilings(mlp_path: Path, lab: Catalog) -> None:
    from optiserve.profile.ceilings import from_meta

    machines = load_machines(Path(__file__).resolve().parents[2] / "profiles" / "reference" / "machines")
    assert machines, "no reference machine committed"
    for m in machines:
        assert set(m.profiles) >= {"cnn", "encoder"}, m.name
        for prof in m.profiles.values():
            ceilings = from_meta(prof.meta)
            assert ceilings is not None and set(ceilings.threads) >= {1, 2}
            got = {(r.config.precision.value, r.config.batch_size, r.config.threads) for r in prof.ok}
            assert got >= {(p, b, t) for p in ("fp32", "int8-static") for b in (1, 8) for t in (1, 2)}, m.name
    spr = _machine("sapphire-rapids-2vcpu", "intel", mlp_path, lab, _ceilings(2e9, 17e9))
    assert cross_check([spr], {"mlp": mlp_path}, lab) == []  # one machine: nothing to cross-check
