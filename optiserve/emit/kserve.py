"""A KServe InferenceService for one planned model: Triton serving the ONNX model repository.

``storageUri`` is the model's URI as given: for Triton it must be the model
repository ``emit --target triton`` writes, uploaded (KServe's storage
initializer fetches s3://, gs://, https:// and pvc:// URIs). Replicas bound the autoscaler as in the plain Kubernetes
target; ``canaryTrafficPercent`` sends that share to the newest revision.
"""

from __future__ import annotations

from typing import Any

from optiserve.emit.common import Deployable, EmitOptions
from optiserve.emit.k8s import _container_security


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
