"""What every target needs from a plan: names, the chosen placement, provenance, options.

Emitters are pure functions from a ``Deployable`` (one model's share of a plan)
and ``EmitOptions`` to objects or files; nothing here touches the disk.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optiserve._version import __version__
from optiserve.errors import UsageError
from optiserve.types import InputLayout

ANNOTATION = "optiserve.io"
SPOT_SELECTORS = {
    "aws": ("eks.amazonaws.com/capacityType", "SPOT"),
    "gcp": ("cloud.google.com/gke-spot", "true"),
    "azure": ("kubernetes.azure.com/scalesetpriority", "spot"),
}
CANARY_MODES = ("deployment", "argo", "none")


@dataclass(frozen=True)
class EmitOptions:
    image: str = "ghcr.io/optiserve/optiserve:0.1.0"
    namespace: str = "default"
    k8s_version: str = "1.35"
    model_uris: Mapping[str, str] = field(default_factory=dict)  # model -> oci://, pvc://, https://, s3://, gs://
    canary: str = "deployment"
    canary_weight: int = 10  # percent of traffic
    canary_image: str | None = None
    fetcher_image: str = "curlimages/curl:8.11.1"  # downloads an https:// model in an init container
    port: int = 8000
    grpc_port: int | None = None  # also serve OIP v2 gRPC on this container port
    health_port: int = 8002  # the probes' port: never closed by the server's overload gate
    tls_secret: str | None = None  # a kubernetes.io/tls Secret: the server speaks HTTPS (and TLS gRPC) with it
    token_secret: str | None = None  # a Secret whose key ``token`` clients must send as a bearer token
    allow_namespaces: tuple[str, ...] = ()  # besides the model's own: e.g. the ingress controller's, monitoring
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"  # queried by the canary analysis
    annotations: Mapping[str, str] = field(default_factory=dict)  # added to every object: the audit record

    def __post_init__(self) -> None:
        for what, value in (("--tls-secret", self.tls_secret), ("--token-secret", self.token_secret)):
            if value is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", value):
                raise UsageError(f"{what} {value!r} is not a Kubernetes Secret name")
        for ns in self.allow_namespaces:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", ns):
                raise UsageError(f"--allow-namespace {ns!r} is not a Kubernetes namespace name")
        if self.grpc_port is not None and (not 0 < self.grpc_port < 65536 or self.grpc_port == self.port):
            raise UsageError(f"--grpc-port {self.grpc_port}: a port in 1..65535 other than the HTTP port")
        if not 0 < self.health_port < 65536 or self.health_port in (self.port, self.grpc_port):
            raise UsageError(f"health port {self.health_port}: a port in 1..65535 other than HTTP's and gRPC's")
        if self.canary not in CANARY_MODES:
            raise UsageError(f"unknown canary mode {self.canary!r}; valid: {', '.join(CANARY_MODES)}")
        if not 0 < self.canary_weight < 100:
            raise UsageError("--canary-weight must be a percentage between 1 and 99")
        if not re.fullmatch(r"1\.\d+(\.\d+)?", self.k8s_version):
            raise UsageError(f"--k8s-version {self.k8s_version!r}: expected e.g. 1.34")


def dns_name(text: str) -> str:
    """A DNS-1123 label from a model name (what Kubernetes names must be)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:50].strip("-")
    if not name:
        raise UsageError(f"model name {text!r} has nothing usable for a Kubernetes name")
    return name


@dataclass(frozen=True)
class Deployable:
    """One model of a plan, with what the emitters need and nothing else."""

    model: str
    placement: Mapping[str, Any]
    sla: Mapping[str, Any]
    model_sha256: str
    profile_id: str
    plan_id: str
    model_uri: str
    layout: InputLayout | None = None  # what the profile ran: the server is sized and warmed the same
    artifact: Mapping[str, Any] | None = None  # the file the profile measured at the plan's precision

    @property
    def prebuilt(self) -> bool:
        """The plan's precision is a variant file the profile built: shipped and served as is."""
        return bool(self.artifact and self.artifact.get("kind") == "variant")

    @property
    def served_sha256(self) -> str:
        """The digest of the file the server loads: the variant's when there is one, else the model's."""
        if self.prebuilt:
            sha = self.artifact.get("sha256") if self.artifact else None
            if not sha:
                raise UsageError(
                    f"the plan's {self.placement['precision']} variant of {self.model!r} is no longer in the "
                    "variant cache: re-profile that precision here (or pass the profile's --cache-dir), then re-plan"
                )
            return str(sha)
        return self.model_sha256

    def artifact_name(self) -> str:
        """The served file's name in a model bundle: the precision in it, so nobody mixes them up."""
        return f"{self.name}.{self.placement['precision']}.onnx" if self.prebuilt else f"{self.name}.onnx"

    @property
    def name(self) -> str:
        return dns_name(self.model)

    @property
    def gpu(self) -> bool:
        return self.placement["runtime"] != "onnxruntime-cpu" and self.placement["threads_per_instance"] is None

    def annotations(self) -> dict[str, str]:
        p = self.placement
        return {
            f"{ANNOTATION}/model-sha256": self.model_sha256,
            f"{ANNOTATION}/served-sha256": self.served_sha256,
            f"{ANNOTATION}/model-uri": self.model_uri,
            f"{ANNOTATION}/profile-id": self.profile_id,
            f"{ANNOTATION}/plan-id": self.plan_id,
            f"{ANNOTATION}/predicted-p99-ms": f"{p['at_target']['p99_ms']:.2f}",
            f"{ANNOTATION}/p99-target-ms": f"{self.sla['p99_ms']:g}",
            f"{ANNOTATION}/latency": p["provenance"]["latency"],
            f"{ANNOTATION}/cost-usd-per-hour": f"{p['cost_usd_per_hour']:.4f}",
            f"{ANNOTATION}/instance-type": f"{p['provider']}:{p['instance_type']}",
            f"{ANNOTATION}/version": __version__,
        }

    def labels(self, track: str = "stable") -> dict[str, str]:
        return {
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/managed-by": "optiserve",
            "optiserve.io/track": track,
        }

    def usable_pod_rate(self) -> float:
        headroom = float(self.sla.get("headroom", 0.2))
        return float(self.placement["pod_rate_at_p99"]) * (1 - headroom)

    def replica_bounds(self) -> tuple[int, int]:
        """(min, max) for an autoscaler: enough for the target rate, as many as the peak needs."""
        per_pod = self.usable_pod_rate()
        peak = int(self.placement["replicas"])
        if per_pod <= 0:
            return peak, peak
        low = max(1, math.ceil(float(self.sla["rate"]) / per_pod))
        return min(low, peak), max(peak, math.ceil(float(self.sla["rate"]) * float(self.sla["peak_factor"]) / per_pod))

    def node_selector(self) -> dict[str, str]:
        """Well-known labels every managed Kubernetes sets: instance type, region, and the spot label."""
        p = self.placement
        selector = {
            "node.kubernetes.io/instance-type": p["instance_type"],
            "topology.kubernetes.io/region": p["region"],
        }
        if p.get("spot"):
            key, value = SPOT_SELECTORS[p["provider"]]
            selector[key] = value
        return selector

    def limits(self) -> dict[str, Any]:
        """The pod's planned vCPUs and memory (and its GPU); requests equal these (Guaranteed QoS)."""
        p = self.placement
        out: dict[str, Any] = {
            "cpu": f"{round(p['pod_vcpus'] * 1000)}m",
            "memory": f"{math.ceil(p['pod_memory_gib'] * 1024)}Mi",
        }
        if self.gpu:
            out["nvidia.com/gpu"] = 1
        return out

    def server_args(self, model_path: str) -> list[str]:
        p = self.placement
        args = [
            "serve",
            model_path,
            "--precision",
            p["precision"],
            "--max-batch",
            str(p["max_batch"]),
            "--max-delay-ms",
            f"{p['max_delay_ms']:g}",
            "--instances",
            str(p["instances_per_pod"]),
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
            "--name",
            self.name,
            "--expect-sha256",
            self.served_sha256,
            "--runtime",
            p["runtime"],
        ]
        if self.prebuilt:
            args.append("--prebuilt")  # the variant the profile measured, never rebuilt in the pod
        if p["threads_per_instance"]:
            args[4:4] = ["--threads", str(p["threads_per_instance"])]
        return args + self.layout_args()

    def layout_args(self) -> list[str]:
        """``--shape``/``--batch-axis`` flags that give ``serve`` the profile's resolved shapes."""
        if self.layout is None:
            return []
        out: list[str] = []
        for t in self.layout.inputs:
            item = [d for i, d in enumerate(t.shape) if i != t.batch_axis]
            if item:
                out += ["--shape", f"{t.name}={','.join(map(str, item))}"]
            out += ["--batch-axis", f"{t.name}={'none' if t.batch_axis is None else t.batch_axis}"]
        return out


def deployables(plan: Mapping[str, Any], model_uris: Mapping[str, str]) -> list[Deployable]:
    """Every feasible model of ``plan``; an infeasible plan has nothing to deploy."""
    if not plan.get("feasible"):
        raise UsageError("the plan is infeasible: there is no placement to deploy (see its closest_miss)")
    from optiserve.plan.schema import validate_plan

    validate_plan(plan, "given")  # also when called as a library with a dict: a bad field is one line
    profiles = {p["model"]: p for p in plan.get("inputs", {}).get("profiles", [])}
    out = []
    for m in plan["models"]:
        name = m["model"]
        prof = profiles.get(name, {})
        sha = prof.get("model_sha256")
        if not sha:
            raise UsageError(f"the plan has no model SHA-256 for {name!r}: re-plan with a current optiserve")
        chosen = m["chosen"]
        art = chosen.get("artifact")
        default_file = f"{dns_name(name)}.{chosen['precision']}.onnx" if art and art.get("kind") == "variant" else None
        uri = model_uris.get(name, f"pvc://models/{default_file or f'{name}.onnx'}")
        out.append(
            Deployable(
                model=name,
                placement=m["chosen"],
                sla=m["sla"],
                model_sha256=sha,
                profile_id=str(prof.get("parquet_sha256") or "")[:16],
                plan_id=str(plan.get("plan_id", "")),
                model_uri=uri,
                layout=InputLayout.from_dict(prof["layout"]) if prof.get("layout") else None,
                artifact=art,
            )
        )
    unknown = sorted(set(model_uris) - {d.model for d in out})
    if unknown:
        raise UsageError(f"--model-uri names models not in the plan: {', '.join(unknown)}")
    return out
