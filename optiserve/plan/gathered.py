"""Profiles measured on the candidate hardware (``optiserve fanout``), gathered and checked.

Each fanout Job leaves ``<entry folder>/profile/`` and ``<entry folder>/fanout.json``
(what it was asked: catalog entry, model digest, plan, job) in the shared store.
``gather`` copies the ones that hold up into ``OUT/<model>/<entry>/`` and indexes
them in ``OUT/gathered.json``: the profile measured the model the plan names
(SHA-256), and its machine is the kind the entry is (CPU architecture and
generation from its flags, the entry's GPU model). A vCPU count that differs
(a pod sees its node's CPUs; the local executor sees this machine's) is a warning.
``plan --gathered OUT`` then hands each entry's profile to ``CurveBuilder``: those
entries get measured curves, the rest stay transferred.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optiserve._files import atomic_write, read_json
from optiserve.errors import OptiserveError, UsageError
from optiserve.estimate.catalog import Catalog, Entry
from optiserve.estimate.cpu_id import entry_vendor, identify, order
from optiserve.models.graph import file_sha256
from optiserve.profile.store import load_profile
from optiserve.types import Profile

INDEX = "gathered.json"
REQUEST = "fanout.json"  # written by each fanout Job beside its profile
INDEX_VERSION = 1


def entry_folder(key: str) -> str:
    """``aws:c7i.xlarge`` -> ``aws-c7i.xlarge``: a folder, object-store and subPath safe name."""
    provider, _, name = key.partition(":")
    return f"{provider}-{name}"


@dataclass(frozen=True)
class Gathered:
    model: str
    model_sha256: str
    entry: str  # catalog key
    path: str  # relative to the index
    parquet_sha256: str
    hardware_id: str
    warnings: tuple[str, ...]
    plan_id: str = ""
    job: str = ""


@dataclass(frozen=True)
class GatherResult:
    gathered: tuple[Gathered, ...]
    refused: tuple[tuple[str, str], ...]  # (folder, why)
    index: Path


def machine_check(hardware: Mapping[str, Any], entry: Entry) -> tuple[list[str], list[str]]:
    """(errors, warnings): is the profiling machine the kind of machine ``entry`` is?
    Its CPU is identified as the planner identifies a source (``cpu_id``): vendor,
    then part name or family/model (the generation itself), else flags (a floor)."""
    errors, warnings = [], []
    ident = identify(hardware)
    cpu, cpu_name = entry.instance.cpu, hardware.get("cpu_model", "?")
    if ident.arch != cpu.arch:
        errors.append(f"measured on {ident.arch} ({cpu_name}), {entry.key} is {cpu.arch}")
    theirs = entry_vendor(entry)
    if ident.vendor and theirs and ident.vendor != theirs:
        errors.append(f"measured on an {ident.vendor} CPU ({cpu_name}), {entry.key} has an {theirs} one")
    elif ident.vendor and ident.generation and ident.arch == cpu.arch:
        here, want = order(ident.vendor, ident.generation), order(ident.vendor, cpu.generation)
        if here is not None and want is not None and (want < here if ident.rule == "flags" else want != here):
            errors.append(f"the machine is {ident.generation} (by {ident.rule}), {entry.key} is {cpu.generation}")
    if ident.generation is None:
        warnings.append(f"the machine's CPU generation is unknown ({ident.reason})")
    acc = entry.accelerator
    gpus = [str(g.get("name", g) if isinstance(g, dict) else g) for g in hardware.get("gpus") or ()]
    if acc is not None and not any(acc.model.lower() in g.lower() for g in gpus):
        errors.append(f"{entry.key} has {acc.model} GPUs, the machine had {', '.join(gpus) or 'none'}")
    vcpus = hardware.get("logical_cpus")
    if vcpus and int(vcpus) != entry.instance.vcpus:
        warnings.append(f"the machine had {vcpus} vCPUs, {entry.key} has {entry.instance.vcpus}")
    return errors, warnings


def _check_one(folder: Path, catalog: Catalog) -> tuple[dict[str, Any], Profile, list[str]]:
    req = read_json(folder / REQUEST, "fanout request")
    if not isinstance(req, dict) or not {"entry", "model", "model_sha256"} <= set(req):
        raise UsageError(f"{folder / REQUEST}: not a fanout request (entry, model, model_sha256)")
    entry = catalog.get(str(req["entry"]))
    profile = load_profile(folder / "profile")
    if not profile.meta.get("complete") or not profile.ok:
        raise UsageError("the profile is incomplete or has no measured rows (the Job hit its deadline?)")
    got = profile.meta.get("model", {}).get("sha256")
    if got != req["model_sha256"]:
        raise UsageError(f"the profile measured model {str(got)[:12]}, the plan's is {str(req['model_sha256'])[:12]}")
    errors, warnings = machine_check(profile.meta.get("hardware", {}), entry)
    if errors:
        raise UsageError("; ".join(errors))
    return {**req, "entry": entry.key}, profile, warnings


def gather(source: Path, out: Path, catalog: Catalog) -> GatherResult:
    """Check and copy every fanout result under ``source`` into ``out``, indexed (merged with
    what ``out`` already holds, newest per model and entry)."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise UsageError(f"{source}: no such folder (copy the store's contents here first, see docs/scale-out.md)")
    folders = sorted(p.parent for p in source.rglob(REQUEST))
    if not folders:
        raise UsageError(f"{source}: no fanout results ({REQUEST} files) under it")
    known = {(g.model_sha256, g.entry): g for g in read_index(out)} if (out / INDEX).is_file() else {}
    refused: list[tuple[str, str]] = []
    fresh: list[Gathered] = []
    for folder in folders:
        try:
            req, profile, warnings = _check_one(folder, catalog)
        except OptiserveError as exc:
            refused.append((str(folder.relative_to(source)), str(exc)))
            continue
        rel = Path(_dns(str(req["model"]))) / entry_folder(req["entry"])
        dest = out / rel
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(folder / "profile", dest)
        g = Gathered(
            str(req["model"]),
            str(req["model_sha256"]),
            req["entry"],
            str(rel),
            file_sha256(dest / "profile.parquet"),
            str(profile.meta.get("hardware", {}).get("id", "")),
            tuple(warnings),
            str(req.get("plan_id", "")),
            str(req.get("job", "")),
        )
        known[(g.model_sha256, g.entry)] = g
        fresh.append(g)
    if not fresh:  # nothing to add: refuse without writing anything
        where, why = refused[0]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise UsageError(f"nothing gathered from {source}: {where}: {why}{more}")
    index = out / INDEX
    body = {
        "schema_version": INDEX_VERSION,
        "profiles": [g.__dict__ | {"warnings": list(g.warnings)} for g in known.values()],
        "refused": [{"folder": f, "reason": why} for f, why in refused],
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(index, lambda tmp: Path(tmp).write_text(json.dumps(body, indent=2) + "\n"))
    return GatherResult(tuple(fresh), tuple(refused), index)


def _dns(name: str) -> str:
    """A model name as a folder name (the same rule Kubernetes names follow)."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "model"


def read_index(folder: Path) -> list[Gathered]:
    data = read_json(Path(folder) / INDEX, "gathered index")
    if not isinstance(data, dict) or data.get("schema_version") != INDEX_VERSION:
        raise UsageError(f"{Path(folder) / INDEX}: not a gather index of version {INDEX_VERSION}")
    try:
        return [Gathered(**{**p, "warnings": tuple(p.get("warnings", ()))}) for p in data.get("profiles", [])]
    except TypeError as exc:
        raise UsageError(f"{Path(folder) / INDEX}: bad entry ({exc})") from None


def gathered_profiles(
    folders: Sequence[Path], model_sha256: str | None, catalog: Catalog
) -> tuple[dict[str, Profile], list[dict[str, Any]]]:
    """(entry key -> profile, input records) of the gathered profiles of this model: the
    index's parquet digest and the profile's model digest are checked again on read."""
    profiles: dict[str, Profile] = {}
    records: list[dict[str, Any]] = []
    for folder in folders:
        for g in read_index(folder):
            if g.model_sha256 != model_sha256:
                continue
            entry = catalog.get(g.entry)  # an entry the catalog no longer has is one line
            path = Path(folder) / g.path
            pq = path / "profile.parquet"
            if not pq.is_file() or file_sha256(pq) != g.parquet_sha256:
                raise UsageError(f"gathered profile {path}: missing or changed since gather (parquet SHA-256)")
            prof = load_profile(path)
            if prof.meta.get("model", {}).get("sha256") != model_sha256:
                raise UsageError(f"gathered profile {path}: measured another model than the index says")
            profiles[entry.key] = prof
            records.append({"entry": entry.key, "path": str(path), "parquet_sha256": g.parquet_sha256})
    return profiles, records


def gathered_inputs(folders: Sequence[Path], profiles: Sequence[Mapping[str, Any]], catalog: Catalog) -> list[Any]:
    """The plan's record of which gathered profile made which entry's curves (per model)."""
    out = []
    for p in profiles:
        _, records = gathered_profiles(folders, p.get("model_sha256"), catalog)
        out += [{"model": p["model"], **r} for r in records]
    return out
