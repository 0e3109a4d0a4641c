"""Measure where it matters: one Kubernetes Job per candidate instance type, profiling there.

For the K cheapest feasible placements of a plan whose latency was transferred,
a Job lands on that instance type (nodeSelector, the plan's resources requested
as limits so the profile gets dedicated CPUs, GPU and toleration where needed),
checks the model by the plan's SHA-256, runs a fixed ``optiserve profile``
recipe (the placement's runtime and precision; the source profile's batch
sizes, thread counts and shapes) under a deadline, and leaves ``profile/`` and
``fanout.json`` (what was asked) at ``STORE/<plan>/<model>/<entry>/``:

- ``pvc://CLAIM/PATH``: the profile container writes to the claim directly;
- ``s3://`` / ``gs://``: it runs as an init container into an emptyDir and the
  main container uploads with the cloud's CLI (credentials from the pod's
  service account: IRSA, Workload Identity).

The profile step is one ``sh -c`` script whose inputs are environment
variables, so ``local_jobs.py`` runs the very same script here. Every Job is
validated against the Kubernetes schemas before a file is written.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from optiserve._files import atomic_write
from optiserve.emit.common import Deployable, EmitOptions, deployables, dns_name
from optiserve.emit.k8s import _container_security, _model_source
from optiserve.emit.validate import validate_k8s
from optiserve.errors import UsageError
from optiserve.plan.gathered import REQUEST, entry_folder

INDEX = "fanout.json"
RESULTS = "/results"
UPLOADERS = {
    "s3": ("amazon/aws-cli:2.22.35", 'aws s3 cp --recursive --only-show-errors "$OPTISERVE_OUT" "$OPTISERVE_DEST"'),
    "gs": (
        "gcr.io/google.com/cloudsdktool/google-cloud-cli:502.0.0-slim",
        'gcloud storage cp --recursive "$OPTISERVE_OUT/*" "$OPTISERVE_DEST/"',
    ),
}
SCRIPT = """set -eu
echo "$OPTISERVE_MODEL_SHA256  $OPTISERVE_MODEL" | sha256sum -c - >/dev/null
optiserve profile "$OPTISERVE_MODEL" {flags} --overwrite -o "$OPTISERVE_OUT/profile"
printf '%s\\n' "$OPTISERVE_REQUEST" > "$OPTISERVE_OUT/{request}"
"""


@dataclass(frozen=True)
class Recipe:
    """The fixed profile recipe every Job runs (the placement adds runtime, precision, threads)."""

    budget_s: float = 10.0
    warmup_s: float = 5.0
    min_samples: int = 100


@dataclass(frozen=True)
class FanoutOptions:
    store: str  # pvc://CLAIM/PATH, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX
    top: int = 3
    deadline_s: int = 3600
    recipe: Recipe = field(default_factory=Recipe)
    emit: EmitOptions = field(default_factory=EmitOptions)
    service_account: str | None = None  # object stores: the identity allowed to write there

    def __post_init__(self) -> None:
        scheme, _, rest = self.store.partition("://")
        bucket, _, _ = rest.partition("/")
        if scheme not in ("pvc", *UPLOADERS) or not bucket:
            raise UsageError(
                f"--store {self.store!r}: expected pvc://CLAIM/PATH, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX"
            )
        if self.top < 1 or self.deadline_s < 60:
            raise UsageError("--top must be >= 1 and --deadline-s >= 60")


@dataclass(frozen=True)
class FanoutJob:
    name: str
    model: str
    entry: str  # catalog key
    out: str  # STORE-relative folder of its results
    job: dict[str, Any]


def _transferred(p: Mapping[str, Any]) -> bool:
    return bool(p.get("feasible", True)) and "transferred" in str(p["provenance"]["latency"])


def picks(
    plan: Mapping[str, Any], top: int, model_uris: Mapping[str, str] | None = None
) -> list[tuple[Deployable, Mapping[str, Any]]]:
    """Per model: the ``top`` cheapest feasible placements with transferred latency, one per instance type."""
    out = []
    for d in deployables(plan, model_uris or {}):
        m = next(m for m in plan["models"] if m["model"] == d.model)
        seen: set[str] = set()
        for p in sorted([m["chosen"], *m["alternatives"]], key=lambda p: p["cost_usd_per_hour"]):
            key = f"{p['provider']}:{p['instance_type']}"
            if _transferred(p) and key not in seen and len(seen) < top:
                seen.add(key)
                out.append((replace(d, placement=p, artifact=p.get("artifact")), p))
    return out


def _sweep(plan: Mapping[str, Any], model: str) -> tuple[str, str]:
    """(batch sizes, thread counts) of the source profile, so every curve on the entry is measured size
    for size and thread count for thread count, whatever the re-plan then prefers."""
    prof: Mapping[str, Any] = next((p for p in plan["inputs"].get("profiles", []) if p["model"] == model), {})
    meta = Path(str(prof.get("path", ""))) / "profile.json"
    try:
        sweep = json.loads(meta.read_text())["sweep"]
        return ",".join(str(int(b)) for b in sweep["batch"]), ",".join(str(int(t)) for t in sweep["threads"])
    except (OSError, KeyError, TypeError, ValueError):
        return "1,2,4,8,16", ""


def profile_flags(d: Deployable, sweep: tuple[str, str], recipe: Recipe) -> list[str]:
    p = d.placement
    flags = ["--runtime", p["runtime"], "--precision", p["precision"], "--batch", sweep[0]]
    if p["threads_per_instance"]:
        flags += ["--threads", sweep[1] or str(p["threads_per_instance"])]
    flags += ["--budget", f"{recipe.budget_s:g}", "--warmup", f"{recipe.warmup_s:g}"]
    return [*flags, "--min-samples", str(recipe.min_samples), *d.layout_args()]


def script(flags: list[str]) -> str:
    return SCRIPT.format(flags=" ".join(shlex.quote(f) for f in flags), request=REQUEST)


def job(d: Deployable, plan: Mapping[str, Any], opts: FanoutOptions) -> FanoutJob:
    p, eo = d.placement, opts.emit
    entry = f"{p['provider']}:{p['instance_type']}"
    name = f"profile-{d.name[:20]}-{dns_name(p['instance_type'])}"[:63].strip("-")
    plan_id = str(plan.get("plan_id", "plan"))
    out = f"{plan_id}/{d.name}/{entry_folder(entry)}"
    scheme, _, rest = opts.store.partition("://")
    claim, _, prefix = rest.partition("/")
    volume, init, model_path = _model_source(d, eo)
    request = {"entry": entry, "model": d.model, "model_sha256": d.model_sha256, "plan_id": plan_id, "job": name}
    local_out = f"{RESULTS}/{prefix.strip('/') + '/' if scheme == 'pvc' and prefix.strip('/') else ''}{out}"
    env = [
        {"name": "OPTISERVE_MODEL", "value": model_path},
        {"name": "OPTISERVE_MODEL_SHA256", "value": d.model_sha256},
        {"name": "OPTISERVE_OUT", "value": local_out},
        {"name": "OPTISERVE_REQUEST", "value": json.dumps(request, sort_keys=True)},
        {"name": "OPTISERVE_CACHE", "value": "/cache"},
        {"name": "NUMBA_CACHE_DIR", "value": "/tmp/numba"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]
    limits = d.limits()
    mounts = [
        {"name": "model", "mountPath": "/models", "readOnly": True},
        {"name": "results", "mountPath": RESULTS},
        {"name": "cache", "mountPath": "/cache"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    profile = {
        "name": "profile",
        "image": eo.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", script(profile_flags(d, _sweep(plan, d.model), opts.recipe))],
        "env": env,
        "resources": {"requests": dict(limits), "limits": limits},
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    if scheme == "pvc":
        results: dict[str, Any] = {"name": "results", "persistentVolumeClaim": {"claimName": claim}}
        containers = [profile]
    else:
        image, upload = UPLOADERS[scheme]
        results = {"name": "results", "emptyDir": {}}
        dest = f"{scheme}://{rest.rstrip('/')}/{out}"
        uploader = {
            "name": "upload",
            "image": image,
            "command": ["sh", "-c", upload],
            "env": [
                {"name": "OPTISERVE_OUT", "value": local_out},
                {"name": "OPTISERVE_DEST", "value": dest},
                {"name": "HOME", "value": "/tmp"},
            ],
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
            "securityContext": _container_security(),
            "volumeMounts": [{"name": "results", "mountPath": RESULTS, "readOnly": True}, mounts[3]],
        }
        init, containers = [*init, profile], [uploader]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": opts.service_account is not None,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
        "nodeSelector": d.node_selector(),
        "containers": containers,
        "volumes": [
            volume,
            results,
            {"name": "cache", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"medium": "Memory"}},
        ],
    }
    if opts.service_account:
        spec["serviceAccountName"] = opts.service_account
    if init:
        spec["initContainers"] = init
    if d.gpu:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    labels = {
        "app.kubernetes.io/name": d.name,
        "app.kubernetes.io/managed-by": "optiserve",
        "optiserve.io/job": "profile",
    }
    notes = {
        "optiserve.io/plan-id": plan_id,
        "optiserve.io/instance-type": entry,
        "optiserve.io/model-sha256": d.model_sha256,
        "optiserve.io/results": f"{opts.store.rstrip('/')}/{out}",
    }
    obj = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": eo.namespace, "labels": labels, "annotations": notes},
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": opts.deadline_s,
            "ttlSecondsAfterFinished": 7 * 86400,
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }
    validate_k8s(obj, eo.k8s_version)
    return FanoutJob(name, d.model, entry, out, obj)


def fanout(plan: Mapping[str, Any], opts: FanoutOptions, out_dir: Path) -> list[FanoutJob]:
    """Validate and write one Job file per pick, and ``fanout.json`` (what the executor and people read)."""
    chosen = picks(plan, opts.top, opts.emit.model_uris)
    if not chosen:
        raise UsageError("no feasible placement of the plan has transferred latency: nothing to measure elsewhere")
    jobs = [job(d, plan, opts) for d, _ in chosen]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    listed: list[dict[str, Any]] = []
    for j, (d, _) in zip(jobs, chosen, strict=True):
        path = out_dir / f"{j.name}.yaml"
        text = yaml.safe_dump(j.job, sort_keys=False)
        atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text))  # type: ignore[misc]
        model_file = (d.artifact or {}).get("path") if not d.prebuilt else None
        listed.append(
            {"name": j.name, "file": path.name, "model": j.model, "entry": j.entry, "out": j.out}
            | {"model_file": model_file}
        )
    body = json.dumps({"store": opts.store, "plan_id": plan.get("plan_id"), "jobs": listed}, indent=2) + "\n"
    atomic_write(out_dir / INDEX, lambda tmp: Path(tmp).write_text(body))
    return jobs
