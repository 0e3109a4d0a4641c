"""Offline validation of custom resources against the schemas a registry package ships.

No pip package carries the Prometheus Operator's or Argo Rollouts' schemas; the npm
packages ``@kubernetes-models/prometheus-operator`` and ``@kubernetes-models/argo-rollouts``
do, generated from the operators' Go API types and compiled to validators. They are
installed into an npm prefix (``make crd-schemas``: ``.cache/npm`` of the checkout, or
``$OPTISERVE_CRD_SCHEMAS``) and run by Node in one process for all objects of an emit.
Like the API server's structural schemas, they check types, required fields, enums and
patterns (durations, ...); unknown fields would be pruned by the cluster, not rejected.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optiserve.errors import RuntimeUnavailableError, UsageError

PROMETHEUS = "@kubernetes-models/prometheus-operator"
ARGO = "@kubernetes-models/argo-rollouts"
_PO = "ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1"
_AR = "ComGithubArgoprojArgoRolloutsPkgApisRolloutsV1alpha1"
SCHEMAS: dict[tuple[str, str], tuple[str, str]] = {  # (apiVersion, kind) -> (package, schema module)
    ("monitoring.coreos.com/v1", "PrometheusRule"): (PROMETHEUS, f"{_PO}PrometheusRule"),
    ("monitoring.coreos.com/v1", "PodMonitor"): (PROMETHEUS, f"{_PO}PodMonitor"),
    ("argoproj.io/v1alpha1", "AnalysisTemplate"): (ARGO, f"{_AR}AnalysisTemplate"),
    ("argoproj.io/v1alpha1", "Rollout"): (ARGO, f"{_AR}Rollout"),
}
INSTALL_HINT = (
    "install the CRD schemas: make crd-schemas (npm install --prefix .cache/npm "
    f"{PROMETHEUS}@6.0.0 {ARGO}@2.0.0), or point $OPTISERVE_CRD_SCHEMAS at such an npm prefix"
)
_passed: set[str] = set()  # digests of objects already validated in this process


class CRDError(UsageError):
    """An emitted custom resource that fails its CRD schema."""


def covers(obj: dict[str, Any]) -> bool:
    return (str(obj.get("apiVersion")), str(obj.get("kind"))) in SCHEMAS


def npm_root() -> Path:
    """The npm prefix holding the schema packages: ``$OPTISERVE_CRD_SCHEMAS``, else the checkout's ``.cache/npm``."""
    env = os.environ.get("OPTISERVE_CRD_SCHEMAS")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / ".cache" / "npm" / "node_modules" / PROMETHEUS).is_dir():
            return base / ".cache" / "npm"
    return Path.cwd() / ".cache" / "npm"


def versions(root: Path | None = None) -> dict[str, str]:
    """Package -> installed version (what the emit output says it validated against)."""
    root = root or npm_root()
    out = {}
    for pkg in (PROMETHEUS, ARGO):
        meta = root / "node_modules" / pkg / "package.json"
        if meta.is_file():
            out[pkg] = str(json.loads(meta.read_text()).get("version", "?"))
    return out


def unavailable_reason() -> str | None:
    """``None`` when Node and both schema packages are present, else why not and how to fix it."""
    if shutil.which("node") is None:
        return f"Node.js is not on PATH; {INSTALL_HINT}"
    missing = sorted({PROMETHEUS, ARGO} - set(versions()))
    return f"{', '.join(missing)} not found under {npm_root()}; {INSTALL_HINT}" if missing else None


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def validate_crds(objects: Sequence[dict[str, Any]]) -> None:
    """Validate every covered object in one Node run; the first failure is one ``CRDError`` line."""
    todo = [o for o in objects if covers(o) and _digest(o) not in _passed]
    if not todo:
        return
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeUnavailableError(f"cannot validate {todo[0].get('kind')} objects: {reason}")
    items = []
    for o in todo:
        pkg, module = SCHEMAS[(str(o["apiVersion"]), str(o["kind"]))]
        items.append({"module": f"{pkg}/_schemas/{module}.js", "object": o})
    script = Path(__file__).with_name("crd_validate.mjs")
    request = json.dumps({"root": str(npm_root().resolve()), "items": items}, default=str)
    try:
        run = subprocess.run(
            ["node", str(script)], input=request, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeUnavailableError(f"cannot run node for CRD validation: {exc}") from None
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeUnavailableError(f"CRD validation failed to run: {last}; {INSTALL_HINT}")
    for obj, result in zip(todo, json.loads(run.stdout), strict=True):
        if result is not None:
            pkg = SCHEMAS[(str(obj["apiVersion"]), str(obj["kind"]))][0]
            name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name', '?')}"
            where = result["path"].strip("/").replace("/", ".")
            raise CRDError(f"{name} fails the {pkg} {versions().get(pkg, '?')} schema at {where}: {result['message']}")
        _passed.add(_digest(obj))
