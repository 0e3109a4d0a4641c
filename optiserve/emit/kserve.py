"""A KServe InferenceService for one planned model: Triton serving the ONNX model repository,
or, when the plan's runtime is ``openvino``, the OpenVINO Model Server (``kserve-ovms``).

``storageUri`` is the model's URI as given: for Triton it must be the model
repository ``emit --target triton`` writes, uploaded; for OVMS that repository's
folder of this model (``1/model.onnx``: OVMS wants numbered versions and reads
ONNX itself, ignoring ``config.pbtxt``). KServe's storage initializer fetches
s3://, gs://, https:// and pvc:// URIs. Replicas bound the autoscaler as in the plain Kubernetes
target; ``canaryTrafficPercent`` sends that share to the newest revision.

A NetworkPolicy admits the model's namespace, the namespaces named, and the
Knative and Istio control planes (the activator and gateways that front a
Serverless predictor); its ports are Knative's queue-proxy's, so none are pinned.
Triton has no bearer-token option: under KServe, TLS and authentication belong
to the mesh (Istio mTLS, AuthorizationPolicy), not to the predictor.

OVMS gets the CPU plugin's properties the profile compiled with, one stream and
one infer request per planned instance (``--plugin_config``, ``--nireq``; KServe
appends a predictor's args to its runtime's). OVMS has no dynamic batcher: each
request runs as it came, so a plan batching above 1 says so in an annotation.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from optiserve.emit.common import ANNOTATION, Deployable, EmitOptions
from optiserve.emit.k8s import _container_security, network_policy

KNATIVE_NAMESPACES = ("knative-serving", "istio-system")  # activator, autoscaler, ingress gateway
PRECISION_HINTS = {"bf16": "bf16", "fp16": "f16"}  # as runtimes/openvino.py sets them; the rest computes in f32


def inference_service(d: Deployable, opts: EmitOptions) -> dict[str, Any]:
    low, high = d.replica_bounds()
    limits = d.limits()
    security = _container_security()
    ovms = d.placement["runtime"] == "openvino"
    if not ovms:
        security.pop("readOnlyRootFilesystem")  # Triton writes to its model cache under the container's root
    model: dict[str, Any] = {
        "modelFormat": {"name": "openvino", "version": "1"} if ovms else {"name": "onnx", "version": "1"},
        "runtime": "kserve-ovms" if ovms else "kserve-tritonserver",
        "protocolVersion": "v2",
        "storageUri": d.model_uri,
        **({"args": ovms_args(d)} if ovms else {}),
        "resources": {"requests": dict(limits), "limits": limits},
        "securityContext": security,
    }
    predictor: dict[str, Any] = {
        "minReplicas": low,
        "maxReplicas": high,
        "nodeSelector": d.node_selector(),
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "model": model,
    }
    if d.gpu:
        predictor["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if opts.canary != "none":
        predictor["canaryTrafficPercent"] = opts.canary_weight
    annotations = d.annotations()
    if ovms and int(d.placement["max_batch"]) > 1:
        annotations[f"{ANNOTATION}/batching"] = (
            f"none: OVMS runs each request alone (the plan batches up to {d.placement['max_batch']})"
        )
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": d.name,
            "namespace": opts.namespace,
            "labels": d.labels(),
            # Serverless (KServe's default mode): the one where canaryTrafficPercent splits traffic
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


def ovms_args(d: Deployable) -> list[str]:
    """OVMS flags for the planned instances: as ``serve --runtime openvino`` compiles them
    (``runtimes.openvino.load_instances``): N streams of ``threads`` each, N infer requests."""
    p = d.placement
    n, threads = int(p["instances_per_pod"]), int(p["threads_per_instance"] or 1)
    plugin = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": str(n),
        "INFERENCE_NUM_THREADS": str(n * threads),
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS.get(str(p["precision"]), "f32"),
    }
    return [f"--plugin_config={json.dumps(plugin, separators=(',', ':'))}", f"--nireq={n}"]


def objects(d: Deployable, opts: EmitOptions) -> list[dict[str, Any]]:
    """The InferenceService and the NetworkPolicy around its predictor pods."""
    extra = tuple(ns for ns in KNATIVE_NAMESPACES if ns not in opts.allow_namespaces)
    fenced = replace(opts, allow_namespaces=opts.allow_namespaces + extra)
    pods = {"serving.kserve.io/inferenceservice": d.name}
    return [inference_service(d, opts), network_policy(d, fenced, pods, [], f"{d.name}-kserve")]
