"""Kubernetes objects for one planned model: Deployment, Service, HPA, PDB and a canary.

Hardened by default: non-root, read-only root filesystem (the variant cache and
/tmp are emptyDirs), no privilege escalation, every capability dropped,
seccomp RuntimeDefault, no service-account token. Requests equal limits
(Guaranteed QoS) because the plan sized each pod on dedicated vCPUs. The model
comes by URI and is checked against the plan's digest twice: by the init
container that fetches it (https) and by the server itself (``--expect-sha256``).

Reachable only as asked: a NetworkPolicy lets in the model's own namespace and
the namespaces named (an ingress controller's, monitoring) on the serving ports
only; TLS and bearer-token Secrets, when given, are mounted read-only and passed
to the server (``--tls-cert/--tls-key/--token-file``). Probes stay unauthenticated
(the server leaves ``/v2/health/*`` open) and switch to HTTPS with TLS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optiserve.emit.common import Deployable, EmitOptions
from optiserve.errors import UsageError

MODEL_DIR = "/models"
RUN_AS = 10001
TLS_DIR = "/etc/optiserve/tls"
TOKEN_DIR = "/etc/optiserve/token"


def _model_source(d: Deployable, opts: EmitOptions) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """(model volume, init containers, model path in the container) for the model's URI."""
    uri = d.model_uri
    scheme, _, rest = uri.partition("://")
    if scheme == "oci":
        vol = {"name": "model", "image": {"reference": rest, "pullPolicy": "IfNotPresent"}}
        return vol, [], f"{MODEL_DIR}/model.onnx"
    if scheme == "pvc":
        claim, _, sub = rest.partition("/")
        if not claim or not sub:
            raise UsageError(f"model URI {uri!r}: expected pvc://CLAIM/PATH/TO/model.onnx")
        vol = {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        return vol, [], f"{MODEL_DIR}/{sub}"
    if scheme in ("https", "http"):
        path = f"{MODEL_DIR}/model.onnx"
        fetch = {
            "name": "fetch-model",
            "image": opts.fetcher_image,
            "command": ["sh", "-c"],
            "args": [f'curl -fsSL "$MODEL_URI" -o {path} && echo "{d.served_sha256}  {path}" | sha256sum -c -'],
            "env": [{"name": "MODEL_URI", "value": uri}],
            "volumeMounts": [{"name": "model", "mountPath": MODEL_DIR}],
            "securityContext": _container_security(),
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "500m", "memory": "256Mi"},
            },
        }
        return {"name": "model", "emptyDir": {}}, [fetch], path
    raise UsageError(
        f"model URI {uri!r}: Kubernetes manifests take oci://, pvc:// or https:// "
        "(s3:// and gs:// need KServe's storage initializer: --target kserve)"
    )


def _container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def security_args(opts: EmitOptions) -> list[str]:
    """``serve`` flags for the gRPC port and the mounted TLS and token Secrets."""
    args = ["--grpc-port", str(opts.grpc_port)] if opts.grpc_port is not None else []
    if opts.tls_secret:
        args += ["--tls-cert", f"{TLS_DIR}/tls.crt", "--tls-key", f"{TLS_DIR}/tls.key"]
    if opts.token_secret:
        args += ["--token-file", f"{TOKEN_DIR}/token"]
    return args


def _secret_volumes(opts: EmitOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) of the TLS and token Secrets: read-only, readable by the pod's group only."""
    volumes, mounts = [], []
    for name, secret, path in (("tls", opts.tls_secret, TLS_DIR), ("token", opts.token_secret, TOKEN_DIR)):
        if secret:
            volumes.append({"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}})
            mounts.append({"name": name, "mountPath": path, "readOnly": True})
    return volumes, mounts


def serving_ports(opts: EmitOptions) -> list[dict[str, Any]]:
    ports = [{"name": "http", "containerPort": opts.port, "protocol": "TCP"}]
    if opts.grpc_port is not None:
        ports.append({"name": "grpc", "containerPort": opts.grpc_port, "protocol": "TCP"})
    return ports


def pod_template(d: Deployable, opts: EmitOptions, track: str = "stable", image: str | None = None) -> dict[str, Any]:
    volume, init, model_path = _model_source(d, opts)
    limits = d.limits()
    scheme = {"scheme": "HTTPS"} if opts.tls_secret else {}
    # probes on their own listener: under overload the server closes its serving one (serve/gate.py)
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "health", **scheme}}
    secret_volumes, secret_mounts = _secret_volumes(opts)
    container = {
        "name": "server",
        "image": image or opts.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["optiserve"],
        "args": d.server_args(model_path) + security_args(opts) + ["--health-port", str(opts.health_port)],
        "ports": [*serving_ports(opts), {"name": "health", "containerPort": opts.health_port, "protocol": "TCP"}],
        "env": [
            {"name": "OPTISERVE_CACHE", "value": "/cache"},
            {"name": "NUMBA_CACHE_DIR", "value": "/tmp/numba"},
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},  # the root filesystem is read-only
        ],
        "resources": {"requests": dict(limits), "limits": limits},
        "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 120},  # variant build + warm-up
        "readinessProbe": {**probe, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "health", **scheme},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_DIR, "readOnly": True},
            {"name": "cache", "mountPath": "/cache"},
            {"name": "tmp", "mountPath": "/tmp"},
            *secret_mounts,
        ],
    }
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": d.node_selector(),
        "containers": [container],
        "volumes": [
            volume,
            {"name": "cache", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"medium": "Memory"}},
            *secret_volumes,
        ],
        "terminationGracePeriodSeconds": 30,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": d.name}},
            }
        ],
    }
    if init:
        spec["initContainers"] = init
    if d.gpu:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"metadata": {"labels": d.labels(track), "annotations": d.annotations()}, "spec": spec}


def _meta(d: Deployable, opts: EmitOptions, name: str, track: str = "stable") -> dict[str, Any]:
    return {"name": name, "namespace": opts.namespace, "labels": d.labels(track), "annotations": d.annotations()}


def canary_replicas(stable: int, weight: int) -> int:
    """Pods a canary needs for ``weight`` percent of a Service's traffic (split by pod count)."""
    return max(1, round(stable * weight / (100 - weight)))


def objects(d: Deployable, opts: EmitOptions) -> list[dict[str, Any]]:
    replicas = int(d.placement["replicas"])
    low, high = d.replica_bounds()
    selector = {"matchLabels": {"app.kubernetes.io/name": d.name, "optiserve.io/track": "stable"}}
    workload: dict[str, Any]
    if opts.canary == "argo":
        workload = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": _meta(d, opts, d.name),
            "spec": {
                "replicas": replicas,
                "selector": selector,
                "template": pod_template(d, opts),
                "strategy": {
                    "canary": {
                        "steps": [
                            {"setWeight": opts.canary_weight},
                            {"pause": {"duration": "10m"}},
                            {"setWeight": 50},
                            {"pause": {"duration": "10m"}},
                        ]
                    }
                },
            },
        }
    else:
        workload = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(d, opts, d.name),
            "spec": {
                "replicas": replicas,
                "selector": selector,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": pod_template(d, opts),
            },
        }
    out = [
        workload,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(d, opts, d.name),
            "spec": {
                "type": "ClusterIP",
                "selector": {"app.kubernetes.io/name": d.name},  # both tracks: traffic splits by pod count
                "ports": [  # HTTP on 80, gRPC on its own number (clients name it, e.g. 8001)
                    {
                        "name": p["name"],
                        "port": 80 if p["name"] == "http" else p["containerPort"],
                        "targetPort": p["name"],
                        "protocol": "TCP",
                    }
                    for p in serving_ports(opts)
                ],
            },
        },
        network_policy(d, opts, {"app.kubernetes.io/name": d.name}, [p["name"] for p in serving_ports(opts)]),
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": _meta(d, opts, d.name),
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": workload["apiVersion"],
                    "kind": workload["kind"],
                    "name": d.name,
                },
                "minReplicas": low,
                "maxReplicas": high,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            # the utilisation the plan predicts at peak, kept within sane bounds
                            "target": {"type": "Utilization", "averageUtilization": _cpu_target(d)},
                        },
                    }
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(d, opts, d.name),
            "spec": (
                {"minAvailable": low, "selector": selector}
                if low < replicas
                else {"maxUnavailable": 1, "selector": selector}
            ),
        },
    ]
    if opts.canary == "deployment":
        meta = _meta(d, opts, f"{d.name}-canary", "canary")
        meta["annotations"]["optiserve.io/canary-weight-percent"] = str(opts.canary_weight)
        out.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {
                    "replicas": canary_replicas(replicas, opts.canary_weight),
                    "selector": {"matchLabels": {"app.kubernetes.io/name": d.name, "optiserve.io/track": "canary"}},
                    "template": pod_template(d, opts, "canary", opts.canary_image),
                },
            }
        )
    return out


def network_policy(
    d: Deployable, opts: EmitOptions, pods: dict[str, str], ports: Sequence[str | int], name: str | None = None
) -> dict[str, Any]:
    """Ingress to ``pods`` only from the model's namespace and ``opts.allow_namespaces``, on ``ports``
    (container port names or numbers; none: every port). Egress stays open: the model is fetched by URI."""
    sources: list[dict[str, Any]] = [{"podSelector": {}}]  # any pod of this namespace
    sources += [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}} for ns in opts.allow_namespaces
    ]
    rule: dict[str, Any] = {"from": sources}
    if ports:
        rule["ports"] = [{"port": p, "protocol": "TCP"} for p in ports]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(d, opts, name or d.name),
        "spec": {"podSelector": {"matchLabels": pods}, "policyTypes": ["Ingress"], "ingress": [rule]},
    }


def _cpu_target(d: Deployable) -> int:
    util = float(d.placement["at_peak"]["utilisation"]) * 100
    return int(min(85, max(50, round(util))))
