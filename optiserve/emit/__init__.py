"""Hand over: a plan becomes Kubernetes, KServe and Triton files, all validated before any is written.

``render`` is pure (plan in, files as bytes out); ``emit`` validates everything
``render`` made and only then writes, so an invalid object never reaches disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from optiserve._files import atomic_write
from optiserve.emit.common import Deployable, EmitOptions, deployables
from optiserve.emit.validate import validate_object, validate_triton_config
from optiserve.errors import UsageError
from optiserve.models.graph import model_sha256

TARGETS = ("k8s", "kserve", "triton")
__all__ = ["TARGETS", "EmitOptions", "emit", "render"]


def _yaml(objs: Sequence[dict[str, Any]]) -> bytes:
    return yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False, width=120).encode()


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
        got = model_sha256(Path(f))
        if got != d.model_sha256:
            raise UsageError(
                f"{f} is not the model the plan was made for "
                f"(SHA-256 {got[:16]}..., plan {d.model_sha256[:16]}...): refusing"
            )


def render(
    plan: Mapping[str, Any], targets: Sequence[str], opts: EmitOptions, model_files: Mapping[str, Path] = {}
) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """(relative path -> bytes, every Kubernetes-style object) for the plan's models."""
    from optiserve.emit import k8s, kserve, triton

    bad = sorted(set(targets) - set(TARGETS))
    if bad or not targets:
        raise UsageError(f"unknown target {', '.join(bad) or '(none)'}; valid targets: {', '.join(TARGETS)}, all")
    ds = deployables(plan, opts.model_uris)
    _check_model_files(ds, model_files)
    files: dict[str, bytes] = {}
    objects: list[dict[str, Any]] = []
    for d in ds:
        if "k8s" in targets:
            objs = k8s.objects(d, opts)
            objects += objs
            files[f"k8s/{d.name}.yaml"] = _yaml(objs)
        if "kserve" in targets:
            isvc = kserve.inference_service(d, opts)
            objects.append(isvc)
            files[f"kserve/{d.name}.yaml"] = _yaml([isvc])
        f = model_files.get(d.model)
        bundle = d.prebuilt and f is not None and bool({"k8s", "kserve"} & set(targets))
        if "triton" in targets and f is None:
            raise UsageError(f"--target triton puts the model file in the repository: give --model {d.model}=FILE")
        if f is None or not (bundle or "triton" in targets):
            continue
        served = triton.served_file(d, Path(f))  # once: the measured variant's bytes (digest checked) or the model
        shipped = {rel: src.read_bytes() for rel, src in triton.model_files(served).items()}  # graph + its data
        if bundle:  # what to upload where the manifests' model URI points
            for rel, data in shipped.items():
                files[f"models/{d.name}/{d.artifact_name() if rel == 'model.onnx' else rel}"] = data
        if "triton" in targets:
            files[f"triton/{d.name}/config.pbtxt"] = triton.config_text(d, served).encode()
            for rel, data in shipped.items():
                files[f"triton/{d.name}/1/{rel}"] = data
    return files, objects


def emit(
    plan: Mapping[str, Any],
    targets: Sequence[str],
    out: Path,
    opts: EmitOptions,
    model_files: Mapping[str, Path] = {},
) -> list[Path]:
    files, objects = render(plan, targets, opts, model_files)
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
