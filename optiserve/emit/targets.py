"""The emit targets, one function each, found by name in the shared registry.

A target turns one ``Deployable`` into files (relative path -> bytes) and the
Kubernetes-style objects among them (validated before anything is written). The
model file, when given, is resolved once per model and shared by the targets
that ship it: ``triton`` puts it in the repository; ``k8s``/``kserve`` bundle a
measured variant where their model URI points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from optiserve._imports import missing_reason
from optiserve._registry import Entry, Registry
from optiserve.emit.common import Deployable, EmitOptions
from optiserve.errors import UsageError


@dataclass(frozen=True)
class Shipment:
    """The file Triton or a pod loads (the measured variant's bytes, digest checked) and its data files."""

    served: Path
    files: dict[str, bytes]  # "model.onnx" and every external-data file, by the name the graph uses


@dataclass(frozen=True)
class Rendered:
    files: dict[str, bytes]
    objects: list[dict[str, Any]]


Ship = Callable[[], Shipment] | None  # None: no model file for this model; else resolves it (once)


def _yaml(objs: list[dict[str, Any]]) -> bytes:
    return yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False, width=120).encode()


def _stamped(objs: list[dict[str, Any]], opts: EmitOptions) -> list[dict[str, Any]]:
    """Every object carries ``opts.annotations`` (the audit record of this emit)."""
    for o in objs:
        if opts.annotations:
            o.setdefault("metadata", {}).setdefault("annotations", {}).update(opts.annotations)
    return objs


def _bundle(d: Deployable, ship: Ship) -> dict[str, bytes]:
    """A measured variant to upload where the manifests' model URI points."""
    if ship is None or not d.prebuilt:
        return {}
    rel = {"model.onnx": d.artifact_name()}
    return {f"models/{d.name}/{rel.get(k, k)}": data for k, data in ship().files.items()}


def k8s_target(d: Deployable, opts: EmitOptions, ship: Ship) -> Rendered:
    from optiserve.emit import k8s

    objs = k8s.objects(d, opts)
    if opts.canary == "argo":  # the Rollout is gated by the plan's SLO: its analysis, and the scrape it reads
        from optiserve.emit import slo

        objs = [slo.gate_rollout(o, d) if o["kind"] == "Rollout" else o for o in objs]
        objs += [slo.analysis_template(d, opts), slo.pod_monitor(d, opts)]
    objs = _stamped(objs, opts)
    return Rendered({f"k8s/{d.name}.yaml": _yaml(objs), **_bundle(d, ship)}, objs)


def alerts_target(d: Deployable, opts: EmitOptions, ship: Ship) -> Rendered:
    from optiserve.emit import slo

    objs = _stamped([slo.pod_monitor(d, opts), slo.prometheus_rule(d, opts)], opts)
    return Rendered({f"alerts/{d.name}.yaml": _yaml(objs)}, objs)


def kserve_target(d: Deployable, opts: EmitOptions, ship: Ship) -> Rendered:
    from optiserve.emit import kserve

    objs = _stamped(kserve.objects(d, opts), opts)
    return Rendered({f"kserve/{d.name}.yaml": _yaml(objs), **_bundle(d, ship)}, objs)


def triton_target(d: Deployable, opts: EmitOptions, ship: Ship) -> Rendered:
    from optiserve.emit import triton

    if ship is None:
        raise UsageError(f"--target triton puts the model file in the repository: give --model {d.model}=FILE")
    s = ship()
    files = {f"triton/{d.name}/config.pbtxt": triton.config_text(d, s.served).encode()}
    files.update({f"triton/{d.name}/1/{rel}": data for rel, data in s.files.items()})
    return Rendered(files, [])


def _triton_reason() -> str | None:
    return missing_reason("tritonclient.grpc.model_config_pb2", "emit")


def _crd_reason() -> str | None:
    from optiserve.emit.crd_schemas import unavailable_reason

    return unavailable_reason()


TARGETS: Registry[Rendered] = Registry(
    "target",
    (
        Entry("k8s", k8s_target, description="Deployment, Service, HPA, PDB, NetworkPolicy (+ canary)"),
        Entry("kserve", kserve_target, description="KServe InferenceService (+ NetworkPolicy)"),
        Entry("triton", triton_target, _triton_reason, "Triton model repository: config.pbtxt + the model"),
        Entry("alerts", alerts_target, _crd_reason, "Prometheus Operator PodMonitor + PrometheusRule from the SLO"),
    ),
)


def shipment(d: Deployable, model: Path) -> Shipment:
    from optiserve.emit import triton

    served = triton.served_file(d, model)  # the measured variant's bytes (digest checked) or the model
    return Shipment(served, {rel: src.read_bytes() for rel, src in triton.model_files(served).items()})
