"""Offline validation of every emitted object; an invalid object is an error, never a file.

- Kubernetes objects: ``kubernetes-validate``'s bundled JSON schemas of the
  chosen cluster version, strict (unknown fields are errors).
- KServe InferenceService: the field types of the KServe SDK's models, which
  are generated from the CRD's OpenAPI schema. The SDK is read, not imported
  (importing it pulls in a server stack): each ``kserve/models/*.py`` declares
  ``openapi_types`` and ``attribute_map``, and Kubernetes types inside (V1Probe,
  V1ResourceRequirements, ...) are checked against the Kubernetes schemas.
- Argo Rollouts: its pod template is checked as a PodTemplateSpec and its
  strategy against the fields of Argo's documentation; it, AnalysisTemplates
  and the Prometheus Operator's objects also against the CRD schemas the npm
  ``@kubernetes-models`` packages ship (``crd_schemas``).
- Triton ``config.pbtxt``: parsed with Triton's own model-config protobuf.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from optiserve._imports import optional_import
from optiserve.emit.crd_schemas import covers, validate_crds
from optiserve.errors import OptiserveError, RuntimeUnavailableError, UsageError


class ManifestError(UsageError):
    """An emitted object that does not validate: names the object and the field."""


def _kv() -> Any:
    return optional_import("kubernetes_validate", "emit")


def _object_name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}"


def _bundled_versions() -> list[tuple[int, int]]:
    root = Path(_kv().__file__).parent / "kubernetes-json-schema"
    return sorted({tuple(int(x) for x in p.name[1:].split("-")[0].split(".")[:2]) for p in root.iterdir()})  # type: ignore[misc]


def _check_version(version: str) -> None:
    want = tuple(int(x) for x in version.split(".")[:2])
    have = _bundled_versions()
    if not have or want < have[0] or want > have[-1]:
        span = f"{have[0][0]}.{have[0][1]}-{have[-1][0]}.{have[-1][1]}" if have else "none"
        raise UsageError(f"no bundled Kubernetes schemas for version {version} (bundled: {span})")


def validate_k8s(obj: dict[str, Any], version: str) -> None:
    kv = _kv()
    _check_version(version)
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ManifestError(
            f"{_object_name(obj)} fails the Kubernetes {version} schema at {where}: {exc.message}"
        ) from None
    except kv.SchemaNotFoundError:
        raise ManifestError(
            f"{_object_name(obj)}: no Kubernetes {version} schema for {obj.get('apiVersion')}"
        ) from None


@functools.cache
def _definitions(version: str) -> tuple[Any, dict[str, Any]]:
    """(referencing registry, $defs) of the strict schemas for ``version``."""
    kv = _kv()
    referencing = optional_import("referencing", "emit")
    root = Path(kv.__file__).parent / "kubernetes-json-schema"
    want = tuple(int(x) for x in version.split(".")[:2])
    dirs = sorted(
        (p for p in root.iterdir() if p.name.endswith("-local-strict")),
        key=lambda p: tuple(int(x) for x in p.name[1:].split("-")[0].split(".")[:2]),
    )
    usable = [p for p in dirs if tuple(int(x) for x in p.name[1:].split("-")[0].split(".")[:2]) <= want]
    if not usable:
        raise UsageError(f"no bundled Kubernetes schemas for version {version}")
    defs = json.loads((usable[-1] / "_definitions.json").read_text())
    resource = referencing.Resource.from_contents(defs)
    return resource @ referencing.Registry(), defs["$defs"]


def _check_k8s_type(value: Any, definition: str, version: str, where: str) -> None:
    jsonschema = optional_import("jsonschema", "emit")
    registry, _ = _definitions(version)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/{definition}",
    }
    errors = sorted(jsonschema.Draft202012Validator(schema, registry=registry).iter_errors(value), key=str)
    if errors:
        e = errors[0]
        inner = ".".join(str(p) for p in e.absolute_path)
        raise ManifestError(f"{where}{'.' + inner if inner else ''}: {e.message}")


def _k8s_definition(type_name: str, version: str) -> str | None:
    _, defs = _definitions(version)
    m = re.fullmatch(r"K8sIoApi(\w+?)(V\d\w*?)([A-Z]\w*)", type_name)
    if m:
        cand = f"io.k8s.api.{m.group(1).lower()}.{m.group(2).lower()}.{m.group(3)}"
        return cand if cand in defs else None
    m = re.fullmatch(r"(V\d(?:alpha\d|beta\d)?)([A-Z]\w*)", type_name)
    if not m:
        return None
    ver, kind = m.group(1).lower(), m.group(2)
    hits = [k for k in defs if k.endswith(f".{ver}.{kind}")]
    for prefix in ("io.k8s.api.core.", "io.k8s.apimachinery.pkg.apis.meta.", "io.k8s.api."):
        for h in hits:
            if h.startswith(prefix):
                return h
    return hits[0] if hits else None


@functools.cache
def _kserve_models() -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """class name -> (attribute -> type, attribute -> JSON key), read from the KServe SDK's source."""
    spec = importlib.util.find_spec("kserve")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeUnavailableError(
            "the KServe SDK is not installed, so InferenceServices cannot be validated; "
            "install it without its server stack: pip install --no-deps 'kserve>=0.13'"
        )
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    out: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for f in sorted(models.glob("v1*.py")):
        tree = ast.parse(f.read_text())
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            found: dict[str, dict[str, str]] = {}
            for stmt in cls.body:
                target = stmt.targets[0] if isinstance(stmt, ast.Assign) else None
                if isinstance(target, ast.Name) and target.id in ("openapi_types", "attribute_map"):
                    found[target.id] = ast.literal_eval(stmt.value)  # type: ignore[attr-defined]
            if len(found) == 2:
                out[cls.name] = (found["openapi_types"], found["attribute_map"])
    if "V1beta1InferenceService" not in out:
        raise RuntimeUnavailableError(f"the KServe SDK at {models} has no V1beta1InferenceService model")
    return out


def _check_kserve(value: Any, type_name: str, version: str, where: str) -> None:
    models = _kserve_models()
    t = type_name.strip()
    if t in ("object",):
        return
    if t == "str" or t == "datetime":
        if not isinstance(value, str):
            raise ManifestError(f"{where}: expected a string, got {type(value).__name__}")
        return
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ManifestError(f"{where}: expected an integer, got {value!r}")
        return
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ManifestError(f"{where}: expected a number, got {value!r}")
        return
    if t == "bool":
        if not isinstance(value, bool):
            raise ManifestError(f"{where}: expected true or false, got {value!r}")
        return
    if t == "ResourceQuantity":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ManifestError(f"{where}: expected a resource quantity, got {value!r}")
        return
    m = re.fullmatch(r"list\[(.+)\]", t)
    if m:
        if not isinstance(value, list):
            raise ManifestError(f"{where}: expected a list")
        for i, v in enumerate(value):
            _check_kserve(v, m.group(1), version, f"{where}[{i}]")
        return
    m = re.fullmatch(r"dict\((\w+), (.+)\)", t)
    if m:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ManifestError(f"{where}: expected a mapping with string keys")
        for k, v in value.items():
            _check_kserve(v, m.group(2), version, f"{where}.{k}")
        return
    if t in models:
        types, keys = models[t]
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object ({t})")
        by_json = {j: a for a, j in keys.items()}
        for k, v in value.items():
            if k not in by_json:
                raise ManifestError(f"{where}: unknown field {k!r} for {t}")
            _check_kserve(v, types[by_json[k]], version, f"{where}.{k}")
        return
    definition = _k8s_definition(t, version)
    if definition is None:
        raise OptiserveError(f"{where}: no schema known for type {t} (a KServe SDK newer than this validator?)")
    _check_k8s_type(value, definition, version, where)


def validate_kserve(obj: dict[str, Any], version: str) -> None:
    if obj.get("apiVersion") != "serving.kserve.io/v1beta1" or obj.get("kind") != "InferenceService":
        raise ManifestError(f"{_object_name(obj)}: not a serving.kserve.io/v1beta1 InferenceService")
    _check_kserve(obj, "V1beta1InferenceService", version, _object_name(obj))


ROLLOUT_STRATEGY = {"canary": {"steps", "maxSurge", "maxUnavailable", "canaryService", "stableService", "analysis"}}


def validate_rollout(obj: dict[str, Any], version: str) -> None:
    where = _object_name(obj)
    if obj.get("apiVersion") != "argoproj.io/v1alpha1" or obj.get("kind") != "Rollout":
        raise ManifestError(f"{where}: not an argoproj.io/v1alpha1 Rollout")
    if set(obj) - {"apiVersion", "kind", "metadata", "spec"}:
        raise ManifestError(
            f"{where}: unknown top-level fields {sorted(set(obj) - {'apiVersion', 'kind', 'metadata', 'spec'})}"
        )
    _check_k8s_type(
        obj.get("metadata", {}), "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", version, f"{where}.metadata"
    )
    spec = obj.get("spec", {})
    unknown = set(spec) - {"replicas", "selector", "template", "strategy", "revisionHistoryLimit", "minReadySeconds"}
    if unknown:
        raise ManifestError(f"{where}.spec: unknown fields {sorted(unknown)}")
    _check_k8s_type(spec.get("template", {}), "io.k8s.api.core.v1.PodTemplateSpec", version, f"{where}.spec.template")
    _check_k8s_type(
        spec.get("selector", {}),
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
        version,
        f"{where}.spec.selector",
    )
    strategy = spec.get("strategy", {})
    for kind, fields in strategy.items():
        if kind not in ROLLOUT_STRATEGY or set(fields) - ROLLOUT_STRATEGY[kind]:
            raise ManifestError(f"{where}.spec.strategy: unsupported {kind!r} fields")
        for i, step in enumerate(fields.get("steps", [])):
            if not isinstance(step, dict) or len(step) != 1 or next(iter(step)) not in ("setWeight", "pause"):
                raise ManifestError(f"{where}.spec.strategy.{kind}.steps[{i}]: expected one of setWeight, pause")


def validate_object(obj: dict[str, Any], version: str) -> None:
    """Route one object to the validator its apiVersion needs."""
    api = str(obj.get("apiVersion", ""))
    if api.startswith("serving.kserve.io/"):
        validate_kserve(obj, version)
    elif api.startswith("argoproj.io/") and obj.get("kind") == "Rollout":
        validate_rollout(obj, version)  # its pod template against Kubernetes' schemas, then the CRD's
        validate_crds([obj])
    elif covers(obj):
        validate_crds([obj])
    elif api.startswith("argoproj.io/"):
        validate_rollout(obj, version)
    else:
        validate_k8s(obj, version)


def validate_triton_config(text: str, where: str) -> Any:
    """Parse ``config.pbtxt`` with Triton's ModelConfig message; returns the message."""
    mc = optional_import("tritonclient.grpc.model_config_pb2", "emit")
    text_format = optional_import("google.protobuf.text_format", "emit")
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ManifestError(f"{where}: not a valid Triton model config: {exc}") from None
