"""Hand over: a plan becomes Kubernetes, KServe and Triton files, all validated before any is written.

``render`` is pure (plan in, files as bytes out); ``emit`` validates everything
``render`` made and only then writes, so an invalid object never reaches disk.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optiserve._files import atomic_write
from optiserve.emit.common import Deployable, EmitOptions, deployables
from optiserve.emit.crd_schemas import validate_crds
from optiserve.emit.targets import TARGETS, shipment
from optiserve.emit.validate import validate_object, validate_triton_config
from optiserve.errors import UsageError
from optiserve.models.graph import require_sha256

__all__ = ["TARGETS", "EmitOptions", "emit", "render"]


def _check_model_files(ds: Sequence[Deployable], model_files: Mapping[str, Path]) -> None:
    known = {d.model for d in ds}
    unknown = sorted(set(model_files) - known)
    if unknown:
        raise UsageError(f"--model names models not in the plan: {', '.join(unknown)}")
    for d in ds:
        f = model_files.get(d.model)
        if f is None:
            continue
        if not Path(f).is_file():
            raise UsageError(f"model file not found: {f}")
        require_sha256(Path(f), d.model_sha256, "the model the plan was made for")


def render(
    plan: Mapping[str, Any], targets: Sequence[str], opts: EmitOptions, model_files: Mapping[str, Path] = {}
) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """(relative path -> bytes, every Kubernetes-style object) for the plan's models."""
    chosen = set(TARGETS.check_names(targets))
    ds = deployables(plan, opts.model_uris)
    _check_model_files(ds, model_files)
    files: dict[str, bytes] = {}
    objects: list[dict[str, Any]] = []
    for d in ds:
        f = model_files.get(d.model)
        ship = None if f is None else functools.cache(functools.partial(shipment, d, Path(f)))
        for name in TARGETS:  # registry order, whatever order they were asked in
            if name in chosen:
                out = TARGETS.require(name, d, opts, ship)
                files.update(out.files)
                objects += out.objects
    return files, objects


def emit(
    plan: Mapping[str, Any],
    targets: Sequence[str],
    out: Path,
    opts: EmitOptions,
    model_files: Mapping[str, Path] = {},
) -> list[Path]:
    files, objects = render(plan, targets, opts, model_files)
    validate_crds(objects)  # every custom resource in one Node run; validate_object then finds them checked
    for obj in objects:
        validate_object(obj, opts.k8s_version)
    for rel, data in files.items():
        if rel.endswith("config.pbtxt"):
            validate_triton_config(data.decode(), rel)
    written = []
    out = Path(out)
    for rel, data in files.items():
        dest = out / rel
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(dest, lambda tmp, data=data: Path(tmp).write_bytes(data))  # type: ignore[misc]
        except OSError as exc:
            raise UsageError(f"cannot write {dest}: {exc.strerror}") from None
        written.append(dest)
    return written
