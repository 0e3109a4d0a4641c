"""Predict every reference machine from every other, through the planner's own path.

Each machine under ``profiles/reference/machines/<generation>-<vcpus>vcpu[-rN]/`` holds
the fixed recipe (CNN and encoder; fp32 and int8-static; batch 1 and 8; threads
1 and 2) profiled with its ceilings. A machine stands in the catalog as the
entry its CPU matches, resized to its own vCPUs and cores, with its measured
ceilings as the ``effective`` block (``ceilings="effective"``) or without them
(``"datasheet"``: the peaks times ``reach.REACH``). ``CurveBuilder`` fitted on
machine A predicts machine B's rows; the "no transfer" baseline predicts B's
time as A's. Rows that measured contention (``profile.contention``: more threads
slower than fewer) are left out on either side, and the benchmark prints them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from optiserve.estimate.catalog import Catalog, Entry
from optiserve.estimate.catalog.schema import Effective
from optiserve.estimate.cpu_id import match
from optiserve.estimate.reach import effective_block
from optiserve.estimate.targets import CurveBuilder
from optiserve.profile.ceilings import from_meta
from optiserve.profile.contention import Contended, contended
from optiserve.profile.store import load_profile
from optiserve.types import Profile

TARGET = 0.15  # issue 18: mean |error| per machine pair and precision
PRECISIONS = ("fp32", "int8-static")


def machine_kind(name: str) -> str:
    """A reference machine's kind: ``zen3-2vcpu-r2`` is a later recording of ``zen3-2vcpu``."""
    repeat = re.fullmatch(r"(.+)-r\d+", name)
    return repeat.group(1) if repeat else name


@dataclass(frozen=True)
class Machine:
    name: str  # the folder: <generation>-<vcpus>vcpu, and -rN for a later recording of the same kind
    profiles: Mapping[str, Profile]  # model name -> its profile there

    @property
    def kind(self) -> str:
        """The machine kind: recordings of one kind are repeats, not another machine."""
        return machine_kind(self.name)

    @cached_property
    def findings(self) -> dict[str, list[Contended]]:
        """Per model, its rows that measured contention (more threads slower than fewer)."""
        return {name: contended(prof) for name, prof in self.profiles.items()}

    def contended(self) -> dict[str, set[tuple[str, int]]]:
        """Per model, the (precision, threads) families with no truth to check a transfer against."""
        return {name: {(c.config.precision.value, c.config.threads) for c in cs} for name, cs in self.findings.items()}

    def describe_contended(self) -> list[str]:
        return [f"{self.name} {name}: {c.describe()}" for name, cs in self.findings.items() for c in cs]


@dataclass(frozen=True)
class Pair:
    """One source -> target prediction of one precision, over models, batches and threads."""

    source: str
    target: str
    precision: str
    ceilings: str  # "effective" | "datasheet"
    repeat: bool  # two recordings of one machine kind: the noise floor, not a transfer
    mean_abs_error: float
    no_transfer: float  # mean |error| of predicting the target's time as the source's
    covered: int  # rows whose band held the truth
    rows: int
    errors: tuple[float, ...]


QUIET_SHARE = 0.25  # "quiet" truth: the fastest quarter of each row's calls


def quiet(profile: Profile, share: float = QUIET_SHARE) -> Profile:
    """The profile with each row's calls cut to its fastest ``share``: a neighbour's load
    only ever adds time, so these estimate the machine's own speed where a busy session
    measured it (the Sapphire Rapids reference: median up to 2.1x its fastest call)."""
    rows = []
    for m in profile.measurements:
        if m.samples_ns:
            keep = max(1, round(len(m.samples_ns) * share))
            m = replace(m, samples_ns=tuple(sorted(m.samples_ns)[:keep]))
        rows.append(m)
    return replace(profile, measurements=tuple(rows))


def load_machines(root: Path, statistic: str = "all") -> list[Machine]:
    """Every reference machine; ``statistic`` "quiet" keeps each row's fastest quarter."""
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        profs = {p.parent.name: load_profile(p.parent) for p in sorted(folder.glob("*/profile.json"))}
        if statistic == "quiet":
            profs = {k: quiet(v) for k, v in profs.items()}
        if profs:
            out.append(Machine(folder.name, profs))
    return out


def machine_entry(machine: Machine, catalog: Catalog, ceilings: str = "effective") -> Entry:
    """The catalog entry this machine's CPU matches, resized to the machine and, for
    ``effective``, carrying its measured ceilings (as a catalog entry for it would)."""
    prof = next(iter(machine.profiles.values()))
    hw = prof.meta["hardware"]
    entry = match(hw, catalog).entry
    logical = int(hw.get("logical_cpus") or 1)
    per_core = max(1, min(2, round(logical / int(hw.get("physical_cores") or logical))))
    cpu = entry.instance.cpu.model_copy(update={"threads_per_core": per_core, "effective": None})
    inst = entry.instance.model_copy(update={"name": machine.name, "vcpus": int(hw.get("usable_cpus") or logical)})
    resized = Entry("reference", inst.model_copy(update={"cpu": cpu}))
    measured = from_meta(prof.meta)
    if ceilings == "effective" and measured is not None:
        block = effective_block(measured, resized, hw, f"reference {machine.name}", str(prof.meta["created"])[:10])
        cpu = cpu.model_copy(update={"effective": Effective.model_validate(block)})
        resized = Entry("reference", inst.model_copy(update={"cpu": cpu}))
    return resized


def cross_check(
    machines: Sequence[Machine], models: Mapping[str, Path], catalog: Catalog, ceilings: str = "effective"
) -> list[Pair]:
    """Every ordered pair of machines, per precision: the planner's prediction of the
    target's measured rows from the source's, and the no-transfer baseline."""
    entries = {m.name: machine_entry(m, catalog, ceilings) for m in machines}
    spoiled = {m.name: m.contended() for m in machines}
    out = []
    for src in machines:
        for tgt in machines:
            if src.name == tgt.name:
                continue
            for precision in PRECISIONS:
                errs, base, covered = [], [], 0
                for name, prof in src.profiles.items():
                    if name not in tgt.profiles or name not in models:
                        continue
                    a = CurveBuilder(prof, models[name], catalog, entries[src.name])
                    b = CurveBuilder(tgt.profiles[name], models[name], catalog, entries[tgt.name])
                    if precision not in a.precisions or precision not in b.precisions:
                        continue
                    for t in sorted(set(a.threads(precision)) & set(b.threads(precision))):
                        if any((precision, t) in spoiled[m.name].get(name, set()) for m in (src, tgt)):
                            continue  # contention on either side: neither a fit nor a truth
                        curve = a.curve(entries[tgt.name], precision, t)
                        for batch in sorted(set(a.batches(precision, t)) & set(b.batches(precision, t))):
                            truth = b.measured_mean_s(precision, t, batch)
                            err = curve.service.mean(batch) / truth - 1
                            errs.append(err)
                            base.append(a.measured_mean_s(precision, t, batch) / truth - 1)
                            covered += abs(err) <= curve.band
                if errs:
                    out.append(
                        Pair(
                            src.name,
                            tgt.name,
                            precision,
                            ceilings,
                            src.kind == tgt.kind,
                            float(np.mean(np.abs(errs))),
                            float(np.mean(np.abs(base))),
                            covered,
                            len(errs),
                            tuple(errs),
                        )
                    )
    return out


def misses(pairs: Iterable[Pair], target: float = TARGET) -> list[str]:
    """One line per pair and precision whose mean |error| exceeds the target or does not
    beat assuming the source's times unchanged."""
    out = []
    for p in pairs:
        if p.repeat:
            continue  # a repeat only measures how far one machine is from itself
        if p.mean_abs_error > target:
            out.append(f"{p.source} -> {p.target} {p.precision}: mean |error| {p.mean_abs_error:.0%} > {target:.0%}")
        elif p.mean_abs_error >= p.no_transfer:
            out.append(
                f"{p.source} -> {p.target} {p.precision}: mean |error| {p.mean_abs_error:.0%} "
                f">= no transfer {p.no_transfer:.0%}"
            )
    return out


def coverage(pairs: Iterable[Pair]) -> float:
    """The share of all predicted points whose band held the truth (issue 18: >= 90%)."""
    ps = [p for p in pairs if not p.repeat]
    rows = sum(p.rows for p in ps)
    return sum(p.covered for p in ps) / rows if rows else float("nan")


def describe(p: Pair) -> str:
    return (
        ("repeat (same kind): " if p.repeat else "")
        + f"{p.source} -> {p.target} {p.precision} ({p.ceilings} ceilings): mean abs error {p.mean_abs_error:.0%}, "
        f"no transfer {p.no_transfer:.0%}, band covered {p.covered}/{p.rows}"
    )
