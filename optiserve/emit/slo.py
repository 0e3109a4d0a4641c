"""The plan's SLO as Prometheus Operator alerts and an Argo Rollouts canary gate.

The numbers come from the plan, never typed again: the p99 target of the SLA,
the error budget ``verify`` judges by, and the server's 503 queue bound. The
queries read the metrics ``optiserve serve`` exports (``optiserve_request_latency_seconds``,
``optiserve_requests_total`` by status, ``optiserve_queue_depth``), scraped by a
PodMonitor that copies the pod labels naming the model, its track and Argo's pod
template hash onto every series, so one query can single out the canary.
Prometheus must be let through the NetworkPolicy (``--allow-namespace monitoring``).
These objects watch the optiserve server of the ``k8s`` target; KServe runs Triton,
whose metrics are Triton's own.
"""

from __future__ import annotations

from typing import Any

from optiserve.emit.common import ANNOTATION, Deployable, EmitOptions

ERROR_BUDGET = 0.001  # the failed-request share verify's verdict allows (serve.verify.MAX_ERROR_RATE)
MAX_QUEUE = 256  # `optiserve serve --max-queue` default: a fuller queue answers 503
QUEUE_WARN_FRACTION = 0.8
WINDOW = "5m"
TRACK_LABEL = "optiserve_io_track"  # "optiserve.io/track" as a Prometheus label
HASH_LABEL = "rollouts_pod_template_hash"
_TRACK_VALUE = "{{ $labels.%s }}" % TRACK_LABEL  # noqa: UP031 (a Go template, braces and all)


def error_budget(d: Deployable) -> float:
    return float(d.sla.get("error_budget", ERROR_BUDGET))


def _max_queue(d: Deployable) -> int:
    args = d.server_args("model.onnx")
    return int(args[args.index("--max-queue") + 1]) if "--max-queue" in args else MAX_QUEUE


def _selector(d: Deployable, opts: EmitOptions, extra: str = "") -> str:
    return f'namespace="{opts.namespace}",app_kubernetes_io_name="{d.name}"{extra}'


def p99_query(sel: str, window: str = WINDOW) -> str:
    return f"histogram_quantile(0.99, sum by (le) (rate(optiserve_request_latency_seconds_bucket{{{sel}}}[{window}])))"


def error_ratio_query(sel: str, window: str = WINDOW) -> str:
    failed = f'sum(rate(optiserve_requests_total{{{sel},status!="200"}}[{window}]))'
    return f"({failed} or vector(0)) / sum(rate(optiserve_requests_total{{{sel}}}[{window}]))"


def _meta(d: Deployable, opts: EmitOptions, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": opts.namespace, "labels": d.labels(), "annotations": d.annotations()}


def pod_monitor(d: Deployable, opts: EmitOptions) -> dict[str, Any]:
    """Scrape every pod of the model (both tracks), keeping the labels the rules select on."""
    endpoint: dict[str, Any] = {"port": "http", "path": "/metrics", "interval": "15s"}
    if opts.tls_secret:  # the server's certificate is for clients; in-cluster scrapes skip name checks
        endpoint |= {"scheme": "https", "tlsConfig": {"insecureSkipVerify": True}}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _meta(d, opts, d.name),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": d.name}},
            "namespaceSelector": {"matchNames": [opts.namespace]},
            "podTargetLabels": ["app.kubernetes.io/name", "optiserve.io/track", "rollouts-pod-template-hash"],
            "podMetricsEndpoints": [endpoint],
        },
    }


def prometheus_rule(d: Deployable, opts: EmitOptions) -> dict[str, Any]:
    """p99 above the plan's target, errors above the budget, the queue near its 503 bound; per track."""
    target_s = float(d.sla["p99_ms"]) / 1e3
    budget = error_budget(d)
    bound = _max_queue(d)
    sel = _selector(d, opts)
    by_track = f"sum by ({TRACK_LABEL}, le) (rate(optiserve_request_latency_seconds_bucket{{{sel}}}[{WINDOW}]))"
    failed = f'sum by ({TRACK_LABEL}) (rate(optiserve_requests_total{{{sel},status!="200"}}[{WINDOW}]))'
    total = f"sum by ({TRACK_LABEL}) (rate(optiserve_requests_total{{{sel}}}[{WINDOW}]))"
    plan = f"plan {d.plan_id}, {d.placement['provider']}:{d.placement['instance_type']}"
    labels = {"optiserve_model": d.name}
    rules = [
        {
            "alert": "OptiserveP99AboveTarget",
            "expr": f"histogram_quantile(0.99, {by_track}) > {target_s:g}",
            "for": "10m",
            "labels": {**labels, "severity": "page"},
            "annotations": {
                "summary": f"{d.name}: p99 above the plan's {d.sla['p99_ms']:g} ms target",
                "description": f"predicted p99 {d.placement['at_target']['p99_ms']:.1f} ms ({plan}); "
                "measured {{ $value | humanizeDuration }} on track " + _TRACK_VALUE,
            },
        },
        {
            "alert": "OptiserveErrorRatioAboveBudget",
            "expr": f"({failed} or {total} * 0) / {total} > {budget:g}",
            "for": "5m",
            "labels": {**labels, "severity": "page"},
            "annotations": {
                "summary": f"{d.name}: failed requests above the {budget:.2%} error budget",
                "description": "{{ $value | humanizePercentage }} of requests failed on track " + _TRACK_VALUE,
            },
        },
        {
            "alert": "OptiserveQueueNear503",
            "expr": f"max by (pod) (optiserve_queue_depth{{{sel}}}) > {QUEUE_WARN_FRACTION * bound:g}",
            "for": "2m",
            "labels": {**labels, "severity": "warning"},
            "annotations": {
                "summary": f"{d.name}: queue above {QUEUE_WARN_FRACTION:.0%} of the {bound}-request 503 bound",
                "description": "{{ $labels.pod }} has {{ $value }} requests waiting; more replicas than planned "
                "are needed or the traffic exceeds the plan's peak",
            },
        },
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _meta(d, opts, f"{d.name}-slo"),
        "spec": {"groups": [{"name": f"optiserve-{d.name}-slo", "interval": "30s", "rules": rules}]},
    }


def analysis_template(d: Deployable, opts: EmitOptions) -> dict[str, Any]:
    """The canary's p99 and error ratio against the plan: a slower or failing canary aborts the Rollout."""
    target_s = float(d.sla["p99_ms"]) / 1e3
    canary = _selector(d, opts, f',{HASH_LABEL}="{{{{args.canary-hash}}}}"')

    def metric(name: str, query: str, bound: float) -> dict[str, Any]:
        return {
            "name": name,
            "interval": "1m",
            "count": 5,
            "failureLimit": 1,
            "successCondition": f"len(result) > 0 && !isNaN(result[0]) && result[0] <= {bound:g}",
            "provider": {"prometheus": {"address": opts.prometheus_url, "query": query}},
        }

    meta = _meta(d, opts, f"{d.name}-slo")
    meta["annotations"][f"{ANNOTATION}/error-budget"] = f"{error_budget(d):g}"
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": meta,
        "spec": {
            "args": [{"name": "canary-hash"}],
            "metrics": [
                metric("p99-latency", p99_query(canary, "2m"), target_s),
                metric("error-ratio", error_ratio_query(canary, "2m"), error_budget(d)),
            ],
        },
    }


def gate_rollout(rollout: dict[str, Any], d: Deployable) -> dict[str, Any]:
    """The Rollout runs the analysis in the background from its first step; a failed run rolls it back."""
    canary = rollout["spec"]["strategy"]["canary"]
    canary["analysis"] = {
        "templates": [{"templateName": f"{d.name}-slo"}],
        "startingStep": 1,
        "args": [{"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}],
    }
    return rollout
