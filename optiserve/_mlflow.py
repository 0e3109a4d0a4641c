"""MLflow tracking and registry: runs for profile/plan/verify, the chosen variant as a model version,
and ``models:/NAME/VERSION`` resolved to a file whose digest is checked.

Only MLflow's client is used (``mlflow-skinny``, the ``mlflow`` extra): any tracking URI
works, a local ``sqlite:///mlflow.db`` or file store included. A registered version
carries the served file's SHA-256 (tag ``optiserve.sha256``) and the plan id; resolving
it downloads the version's artifacts and refuses bytes with another digest — the
registry is a transport, never the authority on which bytes were measured.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from optiserve._audit import sha256_file
from optiserve._imports import optional_import
from optiserve.errors import UsageError

SHA_TAG = "optiserve.sha256"
MODELS_URI = re.compile(r"models:/([^/]+)/(\d+)")


def _client(tracking_uri: str) -> Any:
    mlflow = optional_import("mlflow", "mlflow")
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def is_models_uri(text: str) -> bool:
    return str(text).startswith("models:/")


def log_run(
    tracking_uri: str,
    command: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    artifacts: Iterable[Path],
    tags: Mapping[str, str],
    experiment: str = "optiserve",
) -> str:
    """One finished run: parameters, finite metrics, the files as artifacts, the digests as tags; its id."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    run = client.create_run(exp_id, tags={"optiserve.command": command, **tags}, run_name=f"optiserve-{command}")
    rid = run.info.run_id
    try:
        for k, v in params.items():
            client.log_param(rid, _key(k), str(v)[:6000])
        for k, v in metrics.items():
            if isinstance(v, int | float) and math.isfinite(float(v)):
                client.log_metric(rid, _key(k), float(v))
        for a in artifacts:
            if Path(a).is_dir():
                client.log_artifacts(rid, str(a), Path(a).name)
            elif Path(a).is_file():
                client.log_artifact(rid, str(a))
    except Exception:
        client.set_terminated(rid, "FAILED")
        raise
    client.set_terminated(rid, "FINISHED")
    return str(rid)


def _key(name: str) -> str:
    """MLflow keys allow letters, digits and ``_-. /``: ``p99_ms[cnn/fp32]`` becomes ``p99_ms.cnn/fp32``."""
    return re.sub(r"[^\w\-. /]", ".", name).strip(".")


def plan_metrics(plan: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(params, metrics, tags) of a plan: per model the chosen placement, its p50/p99 and cost."""
    params: dict[str, Any] = {"plan_id": plan.get("plan_id"), "feasible": plan.get("feasible")}
    metrics: dict[str, Any] = {"total_cost_usd_per_hour": float(plan.get("total_cost_usd_per_hour") or math.nan)}
    tags: dict[str, str] = {"optiserve.plan_id": str(plan.get("plan_id"))}
    for p in plan.get("inputs", {}).get("profiles", []):
        tags[f"optiserve.model_sha256.{p['model']}"] = str(p.get("model_sha256"))
    for m in plan.get("models", []):
        c, name = m.get("chosen") or {}, m["model"]
        if not c:
            continue
        params[f"{name}.instance_type"] = f"{c['provider']}:{c['instance_type']}"
        for k in ("precision", "runtime", "replicas", "max_batch", "max_delay_ms", "binding_constraint"):
            params[f"{name}.{k}"] = c.get(k)
        metrics[f"{name}.p50_ms"] = float(c["at_target"]["p50_ms"])
        metrics[f"{name}.p99_ms"] = float(c["at_target"]["p99_ms"])
        metrics[f"{name}.p99_target_ms"] = float(m["sla"]["p99_ms"])
        metrics[f"{name}.cost_usd_per_hour"] = float(c["cost_usd_per_hour"])
        art = c.get("artifact") or {}
        if art.get("sha256"):
            tags[f"optiserve.variant_sha256.{name}"] = str(art["sha256"])
    return params, metrics, tags


def register_chosen(
    tracking_uri: str, plan: Mapping[str, Any], run_id: str, registered_name: str, model: str | None = None
) -> int:
    """The file the plan ships for ``model`` (the only one by default) as a new version; its number."""
    models = [m for m in plan.get("models", []) if m.get("chosen") and (model is None or m["model"] == model)]
    if len(models) != 1:
        raise UsageError("--register needs exactly one planned model (name it as MODEL=NAME when there are several)")
    m = models[0]
    art = m["chosen"].get("artifact") or {}
    path, sha = art.get("path"), art.get("sha256")
    if not path or not sha or not Path(path).is_file():
        raise UsageError(f"the file the plan ships for {m['model']!r} is not on this machine: cannot register it")
    if sha256_file(Path(path)) != sha:
        raise UsageError(f"{path} no longer has the plan's SHA-256 {sha[:12]}: refusing to register it")
    client = _client(tracking_uri)
    client.log_artifact(run_id, str(path), "model")
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    try:
        client.get_registered_model(registered_name)
    except Exception:  # RESOURCE_DOES_NOT_EXIST
        client.create_registered_model(registered_name)
    tags = {SHA_TAG: str(sha), "optiserve.plan_id": str(plan.get("plan_id")), "optiserve.precision": art["precision"]}
    version = client.create_model_version(registered_name, source, run_id=run_id, tags=tags)
    return int(version.version)


def resolve_models_uri(uri: str, tracking_uri: str | None, dest: Path | None = None) -> Path:
    """The ONNX file of ``models:/NAME/VERSION``, downloaded, its digest checked against the version's tag."""
    found = MODELS_URI.fullmatch(uri)
    if not found:
        raise UsageError(f"{uri!r}: expected models:/NAME/VERSION")
    if not tracking_uri:
        raise UsageError(f"{uri}: give --mlflow TRACKING_URI (or set MLFLOW_TRACKING_URI) to resolve it")
    name, version = found.groups()
    client = _client(tracking_uri)
    try:
        mv = client.get_model_version(name, version)
    except Exception as exc:
        raise UsageError(f"{uri}: no such model version in {tracking_uri} ({type(exc).__name__})") from None
    want = (mv.tags or {}).get(SHA_TAG)
    if not want:
        raise UsageError(f"{uri} has no {SHA_TAG} tag: register it with optiserve plan --register")
    mlflow = optional_import("mlflow", "mlflow")
    out = Path(dest or tempfile.mkdtemp(prefix="optiserve-mlflow-"))
    where = client.get_model_version_download_uri(name, version)  # the version's own artifact location
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=where, dst_path=str(out), tracking_uri=tracking_uri))
    files = [local] if local.is_file() else sorted(local.rglob("*.onnx"))
    if len(files) != 1:
        raise UsageError(f"{uri}: expected one .onnx file in the version's artifacts, found {len(files)}")
    got = sha256_file(files[0])
    if got != want:
        raise UsageError(f"{uri}: downloaded bytes have SHA-256 {got[:12]}, the version says {want[:12]}: refusing")
    return files[0]


def profile_metrics(folder: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(params, metrics, tags) of a profile folder: p50/p99 and throughput per measured config."""
    import json

    import pandas as pd

    meta = json.loads((Path(folder) / "profile.json").read_text())
    df = pd.read_parquet(
        Path(folder) / "profile.parquet",
        columns=["runtime", "precision", "batch_size", "threads", "status", "p50_ms", "p99_ms", "throughput"],
    )
    metrics: dict[str, Any] = {}  # non-numbers and NaN are left out by log_run
    for r in df[df["status"] == "ok"].itertuples():
        cfg = f"{r.runtime}/{r.precision}/b{r.batch_size}/t{r.threads}"
        metrics |= {f"{cfg}.p50_ms": r.p50_ms, f"{cfg}.p99_ms": r.p99_ms, f"{cfg}.throughput": r.throughput}
    model = meta.get("model") or {}
    params = {"model": model.get("path"), "configs": len(df), "failed": int((df["status"] != "ok").sum())}
    tags = {"optiserve.model_sha256": str(model.get("sha256"))}
    tags |= {
        f"optiserve.variant_sha256.{k}": str(v.get("sha256"))
        for k, v in (meta.get("variants") or {}).items()
        if isinstance(v, dict) and v.get("sha256")
    }
    return params, metrics, tags


def verify_metrics(doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(params, metrics, tags) of verify.json: measured and predicted p50/p99 and the error rate per load."""
    metrics: dict[str, Any] = {}  # non-numbers and NaN are left out by log_run
    for m in doc.get("models", []):
        for r in m.get("rates", []):
            at = f"{m['model']}.{r['load']}"
            meas, pred = r.get("measured") or {}, r.get("predicted") or {}
            metrics |= {f"{at}.measured_p50_ms": meas.get("p50_ms"), f"{at}.measured_p99_ms": meas.get("p99_ms")}
            metrics |= {f"{at}.predicted_p99_ms": pred.get("p99_ms"), f"{at}.error_rate": r.get("error_rate")}
    return {"verdict": doc.get("verdict")}, metrics, {"optiserve.plan_id": str(doc.get("plan_id"))}
