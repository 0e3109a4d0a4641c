"""Effective compute ceilings of a CPU: measured, from the catalog, or datasheet x reach.

A transfer fit's efficiency only carries over between machines when both
ceilings are what the runtime *reaches*: against datasheet peaks, an int8
efficiency fitted on Sapphire Rapids (AMX peak 2048 op/cycle/core, far above
ONNX Runtime's int8 kernels) predicted a Genoa guest 50% slow (issue 18). In
order of preference:

1. measured: the profile's own microbenchmark (``profile/ceilings.py``), used
   for the machine that measured it;
2. catalog: an entry's ``cpu.effective`` block, that microbenchmark run on
   the entry's CPU and written per core and cycle like the peaks;
3. datasheet x reach: the peak times a reach factor per ISA class and kernel
   (below), which widens the band.

A compute ceiling blends the GEMM and convolution rates by the graph's share of
convolution FLOPs (a harmonic mean: time adds up). DRAM bandwidth is not
replaced: a guest's copy bandwidth measures what an idle host lends it, not the
all-instances-busy share the catalog models, so both sides keep the datasheet
share (the microbenchmark's copy rate is stored with the profile, not used), and it
only bounds reading the weights: a node's cached tensors cost vector work
(``kernels.py``) at the fp32 GEMM ceiling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optiserve.estimate.catalog import Entry
from optiserve.profile.ceilings import Ceilings, ThreadCeilings

# Reach = measured rate / datasheet peak at the catalog clock, per ISA class and kernel: the
# effective blocks of the reference machines (profiles/reference/machines/, ONNX Runtime 1.32,
# best per-core rate of 1 and 2 threads) over their catalog entries' peaks. Classes never
# measured take the AVX-512 fp32 factors: an assumption that MLAS's other kernels approach
# their peak as its SGEMM does, labelled so in the band.
REACH: dict[str, tuple[float, float]] = {  # class -> (gemm, conv)
    "fp32-avx512": (0.95, 0.86),  # Sapphire Rapids, c7i.xlarge: 60.7 and 55.2 of 64 flop/cycle
    "fp32-avx2": (0.76, 0.70),  # Zen 3 (Milan), Standard_D4as_v5: 24.4 and 22.5 of 32 flop/cycle
    "int8-amx": (0.24, 0.096),  # Sapphire Rapids: 500 and 197 of 2048 op/cycle
    "int8-avx2": (0.75, 0.67),  # Zen 3: VPMADDUBSW, 48.1 and 42.7 of 64 op/cycle
    "int8-vnni": (0.65, 0.60),  # Zen 5 (Turin), m8a.xlarge: AVX-512 VNNI, 166 and 153 of 256 op/cycle
}
REACH_MEASURED = {
    "fp32-avx512": "sapphire-rapids-2vcpu",
    "fp32-avx2": "zen3-2vcpu",
    "int8-amx": "sapphire-rapids-2vcpu",
    "int8-avx2": "zen3-2vcpu",
    "int8-vnni": "zen5-2vcpu",
}  # the reference machine each class's factors come from
ASSUMED = "fp32-avx512"  # the factors of a class no machine measured
DATASHEET_WIDENING = 0.10  # added to the band of a target whose ceilings are datasheet x reach


def isa_class(entry: Entry, compute: str) -> str:
    """The reach class of a compute class on this CPU, read off its peaks: fp32 at 64
    flop/cycle/core is AVX-512 (two FMA ports), 32 on x86 AVX2; AMX int8 shows as an
    int8 peak 16x the fp32 one, VNNI 4x, AVX2's VPMADDUBSW 2x. ARM has no measured class."""
    cpu = entry.instance.cpu
    x86 = cpu.arch == "x86_64"
    wide = cpu.fp32_flops_per_cycle_per_core >= 64
    if compute == "int8":
        ratio = cpu.int8_ops_per_cycle_per_core / cpu.fp32_flops_per_cycle_per_core
        if ratio >= 16:
            return "int8-amx"
        if x86 and ratio <= 2:
            return "int8-avx2"
        return "int8-vnni" if x86 else "int8-arm"
    if not x86:
        return "fp32-arm"
    return "fp32-avx512" if wide else "fp32-avx2"


def _peak_per_cycle(entry: Entry, compute: str) -> float:
    cpu = entry.instance.cpu
    return {
        "fp32": cpu.fp32_flops_per_cycle_per_core,
        "fp16": cpu.fp32_flops_per_cycle_per_core,  # ONNX Runtime's CPU kernels compute fp16 graphs in fp32
        "bf16": cpu.bf16_flops_per_cycle_per_core,
        "int8": cpu.int8_ops_per_cycle_per_core,
    }[compute]


def blend(gemm: float, conv: float, conv_share: float) -> float:
    """One compute ceiling for a graph with ``conv_share`` of its FLOPs in convolutions."""
    s = min(1.0, max(0.0, conv_share))
    return 1.0 / (s / conv + (1.0 - s) / gemm)


@dataclass(frozen=True)
class Compute:
    """A compute ceiling (ops per second) and where it comes from."""

    ops_per_s: float
    kind: str  # "measured" | "catalog" | "datasheet"
    basis: str


def measured_compute(ceilings: Ceilings | None, threads: int, compute: str, conv_share: float) -> float | None:
    """The profile's own rate for ``threads`` vCPUs: the best per-vCPU rate over the
    thread counts measured, times ``threads``; None where this count was not measured.

    Why not the rate measured at this count: a target's ceiling is its per-core rate
    times its cores (``entry_compute``, an ``effective`` block), so the source's must be
    made the same way for the ratio to hold. A thread count's own microbenchmark also
    measures how the guest's vCPUs scaled in those milliseconds: on the Emerald Rapids
    reference the 2-thread GEMM came out 1.49x the 1-thread one while the models' own
    batches scaled 1.9x, and the transfer carried that to every target."""
    if ceilings is None or ceilings.at(threads) is None or compute not in ("fp32", "fp16", "int8"):
        return None

    def rate(c: ThreadCeilings) -> float:
        if compute == "int8":
            return blend(c.int8_gemm, c.int8_conv, conv_share)
        return blend(c.fp32_gemm, c.fp32_conv, conv_share)

    return threads * max(rate(c) / t for t, c in ceilings.threads.items())


def entry_compute(entry: Entry, threads: int, compute: str, conv_share: float = 0.0) -> Compute:
    """A catalog entry's ceiling for ``threads`` vCPUs: its effective block, else the
    datasheet peak times the reach of its ISA class."""
    cpu = entry.instance.cpu
    scale = threads / cpu.threads_per_core * cpu.ghz * 1e9
    eff = cpu.effective
    if eff is not None and compute in ("fp32", "fp16", "int8"):
        gemm, conv = (
            (eff.int8_gemm_ops_per_cycle_per_core, eff.int8_conv_ops_per_cycle_per_core)
            if compute == "int8"
            else (eff.fp32_gemm_flops_per_cycle_per_core, eff.fp32_conv_flops_per_cycle_per_core)
        )
        return Compute(scale * blend(gemm, conv, conv_share), "catalog", f"effective ({eff.source}, {eff.as_of})")
    cls = isa_class(entry, compute)
    gemm_r, conv_r = REACH.get(cls, REACH[ASSUMED])
    backed = f"measured on {REACH_MEASURED[cls]}" if cls in REACH_MEASURED else f"assumed {ASSUMED}'s, not measured"
    basis = f"datasheet x {cls} reach ({backed})"
    return Compute(scale * _peak_per_cycle(entry, compute) * blend(gemm_r, conv_r, conv_share), "datasheet", basis)


def _sig(x: float) -> float:
    return float(f"{x:.3g}")  # three significant figures: more than the measurement holds


def effective_block(
    ceilings: Ceilings, entry: Entry, hardware: Mapping[str, Any], source: str, as_of: str
) -> dict[str, Any]:
    """The catalog ``effective:`` block this machine's ceilings make for ``entry``: per
    physical core used (this machine's own vCPUs per core, from its fingerprint) and per
    cycle at the entry's clock, the best over the thread counts measured (a busy
    machine only ever lowers a rate)."""
    per_core = max(1.0, int(hardware.get("logical_cpus") or 1) / max(1, int(hardware.get("physical_cores") or 1)))

    def best(rate: str) -> float:
        per = [getattr(c, rate) / (t / per_core) for t, c in ceilings.threads.items()]
        return _sig(max(per) / (entry.instance.cpu.ghz * 1e9))

    return {
        "fp32_gemm_flops_per_cycle_per_core": best("fp32_gemm"),
        "fp32_conv_flops_per_cycle_per_core": best("fp32_conv"),
        "int8_gemm_ops_per_cycle_per_core": best("int8_gemm"),
        "int8_conv_ops_per_cycle_per_core": best("int8_conv"),
        "source": source,
        "as_of": as_of,
    }
