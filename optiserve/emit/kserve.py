"""A KServe InferenceService for one planned model: Triton serving the ONNX model repository.

``storageUri`` is the model's URI as given: for Triton it must be the model
repository ``emit --target triton`` writes, uploaded (KServe's storage
initializer fetches s3://, gs://, https:// and pvc:// URIs). Replicas bound the autoscaler as in the plain Kubernetes
target; ``canaryTrafficPercent`` sends that share to the newest revision.

A NetworkPolicy admits the model's namespace, the namespaces named, and the
Knative and Istio control planes (the activator and gateways that front a
Serverless predictor); its ports are Knative's queue-proxy's, so none are pinned.
Triton has no bearer-token option: under KServe, TLS and authentication belong
to the mesh (Istio mTLS, AuthorizationPolicy), not to the predictor.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from optiserve.emit.common import Deployable, EmitOptions
from optiserve.emit.k8s import _container_security, network_policy

KNATIVE_NAMESPACES = ("knative-serving", "istio-system")  # activator, autoscaler, ingress gateway


def inference_service(d: Deployable, opts: EmitOptions) -> dict[str, Any]:
    low, high = d.replica_bounds()
    limits = d.limits()
    security = _container_security()
    security.pop("readOnlyRootFilesystem")  # Triton writes to its model cache under the container's root
    predictor: dict[str, Any] = {
        "minReplicas": low,
        "maxReplicas": high,
        "nodeSelector": d.node_selector(),
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "model": {
            "modelFormat": {"name": "onnx", "version": "1"},
            "runtime": "kserve-tritonserver",
            "protocolVersion": "v2",
            "storageUri": d.model_uri,
            "resources": {"requests": dict(limits), "limits": limits},
            "securityContext": security,
        },
    }
    if d.gpu:
        predictor["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if opts.canary != "none":
        predictor["canaryTrafficPercent"] = opts.canary_weight
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": d.name,
            "namespace": opts.namespace,
            "labels": d.labels(),
            # Serverless (KServe's default mode): the one where canaryTrafficPercent splits traffic
            "annotations": d.annotations(),
        },
        "spec": {"predictor": predictor},
    }


def objects(d: Deployable, opts: EmitOptions) -> list[dict[str, Any]]:
    """The InferenceService and the NetworkPolicy around its predictor pods."""
    extra = tuple(ns for ns in KNATIVE_NAMESPACES if ns not in opts.allow_namespaces)
    fenced = replace(opts, allow_namespaces=opts.allow_namespaces + extra)
    pods = {"serving.kserve.io/inferenceservice": d.name}
    return [inference_service(d, opts), network_policy(d, fenced, pods, [], f"{d.name}-kserve")]
