"""``emit``: a plan becomes validated deployment files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from optiserve.cli._common import err, one_line_errors, out, pairs

DEFAULT_GRPC_PORT = 8001  # Triton's, where tritonclient.grpc users look first


@one_line_errors
def emit(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="plan JSON written by optiserve plan")],
    target: Annotated[str, typer.Option(help="k8s, kserve, triton, alerts or all (comma list)")] = "all",
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for the files")] = Path("deploy"),
    model: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="NAME=FILE: the model file, checked against the plan's digest (triton copies it)"),
    ] = None,
    model_uri: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            help="NAME=URI where the cluster fetches the model (oci://, pvc://, https://; s3:// gs:// for kserve)"
        ),
    ] = None,
    image: Annotated[
        str, typer.Option(help="server image (runs `optiserve serve`)")
    ] = "ghcr.io/optiserve/optiserve:0.1.0",
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace")] = "default",
    k8s_version: Annotated[str, typer.Option(help="cluster version whose schemas validate the objects")] = "1.35",
    canary: Annotated[
        str, typer.Option(help="deployment (second Deployment), argo (Rollout gated by the SLO's analysis) or none")
    ] = "deployment",
    prometheus_url: Annotated[
        str, typer.Option(help="Prometheus the argo canary analysis queries")
    ] = "http://prometheus-operated.monitoring.svc:9090",
    canary_weight: Annotated[int, typer.Option(help="percent of traffic for the canary")] = 10,
    canary_image: Annotated[Optional[str], typer.Option(help="image of the canary (default: --image)")] = None,  # noqa: UP045
    grpc_port: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="also serve OIP v2 gRPC on this port (k8s; default 8001 when the plan is for gRPC clients)"),
    ] = None,
    tls_secret: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="kubernetes.io/tls Secret the server serves HTTPS and gRPC TLS with (k8s)"),
    ] = None,
    token_secret: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Secret whose key 'token' holds the bearer tokens clients must send (k8s)"),
    ] = None,
    allow_namespace: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="namespace let through the NetworkPolicy besides the model's own, e.g. ingress (repeatable)"),
    ] = None,
    plan_public_key: Annotated[
        Optional[Path], typer.Option(help="refuse a plan whose signature this Ed25519 public key does not verify")  # noqa: UP045
    ] = None,
    sign_key: Annotated[
        Optional[Path], typer.Option(help="Ed25519 private key: sign the written folder (optiserve.sig)")  # noqa: UP045
    ] = None,
) -> None:
    """Write validated Kubernetes, KServe and Triton files for a plan (nothing is written if any is invalid)."""
    from optiserve.emit import TARGETS, EmitOptions
    from optiserve.emit import emit as emit_files
    from optiserve.plan.result import read_plan

    targets = list(TARGETS) if target == "all" else [t.strip() for t in target.split(",") if t.strip()]
    if plan_public_key is not None:
        from optiserve._signing import check

        check(plan_file, plan_public_key)
    plan_doc = read_plan(plan_file)
    from optiserve._audit import record_for_plan

    record = record_for_plan("emit", plan_doc, plan_file)  # its time, user and inputs go on every object
    grpc_clients = [
        m["model"] for m in plan_doc.get("models", []) if (m.get("chosen") or {}).get("client_encoding") == "grpc"
    ]
    if grpc_clients and grpc_port is None:  # planned for gRPC clients: deployed with the gRPC port they will call
        grpc_port = DEFAULT_GRPC_PORT
        err.print(f"note: {', '.join(grpc_clients)} planned for gRPC clients: serving gRPC on port {grpc_port}")
    opts = EmitOptions(
        image=image,
        namespace=namespace,
        k8s_version=k8s_version,
        model_uris=pairs(model_uri, "--model-uri"),
        canary=canary,
        canary_weight=canary_weight,
        canary_image=canary_image,
        grpc_port=grpc_port,
        tls_secret=tls_secret,
        token_secret=token_secret,
        allow_namespaces=tuple(allow_namespace or ()),
        prometheus_url=prometheus_url,
        annotations=record.annotations(),
    )
    files = {k: Path(v) for k, v in pairs(model, "--model").items()}
    for m in plan_doc.get("models", []):
        c = m.get("chosen") or {}
        if c and c.get("precision") != "fp32" and "artifact" not in c:
            err.print(
                f"warning: the plan predates artifacts: {m['model']}'s {c['precision']} variant is rebuilt here with "
                "synthetic calibration, not the one measured; re-plan to ship the measured file"
            )
    written = emit_files(plan_doc, targets, output, opts, files)
    if sign_key is not None:
        from optiserve._signing import sign

        written.append(sign(output, sign_key))
    from optiserve.cli.trust import audit

    audit("emit", plan_doc, plan_file, written, time=record.time)  # the time the objects carry
    for w in written:
        out.print(f"wrote {escape(str(w))}")
    from optiserve.emit.crd_schemas import versions

    crds = ", ".join(f"{k}@{v}" for k, v in versions().items()) if "alerts" in targets or canary == "argo" else ""
    out.print(
        f"{len(written)} files, validated: Kubernetes {k8s_version} schemas (strict), KServe SDK types, "
        f"Triton ModelConfig protobuf{f', CRD schemas of {crds}' if crds else ''}"
    )
