"""``serve``: the OIP v2 server for one model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from optiserve.cli._common import Instances, MaxBatch, MaxDelayMs, Precision, Threads, err, one_line_errors

if TYPE_CHECKING:
    from optiserve.serve.drift import DriftMonitor
    from optiserve.serve.grpc_server import GrpcSettings
    from optiserve.serve.server import ServerOptions


@one_line_errors
def serve(
    model: Annotated[str, typer.Argument(help="ONNX file, or a zoo name")],
    precision: Precision = "fp32",
    threads: Threads = 1,
    max_batch: MaxBatch = 8,
    max_delay_ms: MaxDelayMs = 2.0,
    preferred: Annotated[str, typer.Option(help="preferred batch sizes, comma list (largest is the target)")] = "",
    instances: Instances = 1,
    max_queue: Annotated[int, typer.Option(help="requests waiting before 503")] = 256,
    max_body_mb: Annotated[float, typer.Option(help="largest request body")] = 64.0,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind")] = 8000,
    name: Annotated[Optional[str], typer.Option(help="model name in URLs (default: file stem)")] = None,  # noqa: UP045
    expect_sha256: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="refuse to start unless the model file has this SHA-256 (what emitted manifests pass)"),
    ] = None,
    shape: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="dims the graph leaves open, as for profile: NAME=N or INPUT=D1,D2,.. (repeatable)"),
    ] = None,
    batch_axis: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="batch axis of an input, INPUT=AXIS or INPUT=none (default: inferred; repeatable)"),
    ] = None,
    custom_ops: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(help="custom-op shared library registered in the session (repeatable)"),
    ] = None,
    calibration: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="int8-static: the .npz the profile calibrated on, so the profiled variant is served"),
    ] = None,
    calibrator: Annotated[
        str, typer.Option(help="int8-static: minmax, entropy or percentile (as profiled)")
    ] = "minmax",
    prebuilt: Annotated[
        bool, typer.Option(help="MODEL already is the --precision variant (what emit ships): serve it as is")
    ] = False,
    runtime: Annotated[
        str, typer.Option(help="runtime to serve on (the plan's): onnxruntime-cpu, onnxruntime-cuda, ...")
    ] = "onnxruntime-cpu",
    tls_cert: Annotated[Optional[Path], typer.Option(help="serve HTTPS with this PEM certificate")] = None,  # noqa: UP045
    tls_key: Annotated[Optional[Path], typer.Option(help="the certificate's PEM private key")] = None,  # noqa: UP045
    tls_client_ca: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="mTLS: require client certificates signed by this CA (PEM)"),
    ] = None,
    token_file: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="require 'Authorization: Bearer T' with a T from this file (one a line; health stays open)"),
    ] = None,
    rate_limit: Annotated[float, typer.Option(help="requests per second per client address (0: none)")] = 0.0,
    rate_burst: Annotated[int, typer.Option(help="requests a client may send at once (0: the rate)")] = 0,
    max_connections: Annotated[int, typer.Option(help="open connections; more are closed at once")] = 1024,
    health_port: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="also serve on this port, never closed under overload (for liveness/readiness probes)"),
    ] = None,
    keep_alive_s: Annotated[float, typer.Option(help="idle keep-alive connections close after this")] = 5.0,
    header_timeout_s: Annotated[float, typer.Option(help="a request's line and headers must arrive within")] = 10.0,
    body_timeout_s: Annotated[float, typer.Option(help="a request's body must arrive within (else 408)")] = 30.0,
    max_inflight_mb: Annotated[float, typer.Option(help="request bodies held at once before 503")] = 256.0,
    grpc_port: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="also serve OIP v2 gRPC (Triton's GRPCInferenceService) on this port, same --host and TLS"),
    ] = None,
    reference: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="profile folder whose reference inputs /metrics scores input drift against"),
    ] = None,
    drift_window_s: Annotated[float, typer.Option(help="input drift: sliding window length")] = 300.0,
    drift_rows_per_s: Annotated[float, typer.Option(help="input drift: rows summarised per second at most")] = 50.0,
) -> None:
    """Serve a model over the Open Inference Protocol v2 with dynamic batching and /metrics."""
    from dataclasses import replace

    from optiserve.errors import UsageError
    from optiserve.models.zoo import resolve_model
    from optiserve.serve.app import ServeConfig, app_for_model

    if min(threads, max_batch, instances, max_queue) < 1 or max_delay_ms < 0 or max_body_mb <= 0:
        raise UsageError("threads, max-batch, instances and max-queue must be >= 1, max-delay-ms >= 0")
    try:
        pref = tuple(int(p) for p in preferred.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"malformed --preferred {preferred!r}: expected a comma list of sizes") from None
    if any(p < 1 or p > max_batch for p in pref):
        raise UsageError(f"preferred batch sizes must lie in 1..{max_batch}")
    path = resolve_model(model)
    from optiserve.models.graph import inspect_model, require_sha256
    from optiserve.models.layout import infer_layout, parse_batch_axes, parse_shape_overrides
    from optiserve.runtimes import custom_ops as ops

    ops.use(custom_ops or ())

    info = inspect_model(path)
    layout = infer_layout(info, parse_shape_overrides(shape or []), parse_batch_axes(batch_axis or []))
    if layout.fixed_batch is not None and max_batch != layout.fixed_batch:  # app_for_model serves it at that batch
        err.print(f"the model fixes its batch at {layout.fixed_batch}: serving with --max-batch {layout.fixed_batch}")
    if expect_sha256:
        require_sha256(path, expect_sha256, "the expected model", " to serve", got=info.sha256)
    config = ServeConfig(
        name or path.stem, max_batch, max_delay_ms, instances, max_queue, int(max_body_mb * 2**20), pref
    )
    if calibration is not None and not calibration.is_file():
        raise UsageError(f"calibration file not found: {calibration}")
    from optiserve.serve.security import AccessPolicy
    from optiserve.serve.server import ServerOptions, serve_forever

    opts = ServerOptions(host, port, tls_cert, tls_key, tls_client_ca, keep_alive_s, header_timeout_s, max_connections)
    opts = replace(opts, health_port=health_port)
    opts.check()
    from optiserve._oip_client import check_bindable

    check_bindable(host, port, "HTTP")  # before the model loads: a bind error later is a traceback
    if health_port is not None:
        check_bindable(host, health_port, "health")
    grpc_settings = _grpc_settings(grpc_port, opts, int(max_body_mb * 2**20))  # before the model loads
    if body_timeout_s <= 0 or max_inflight_mb <= 0:
        raise UsageError("--body-timeout-s and --max-inflight-mb must be > 0")
    config = replace(config, body_timeout_s=body_timeout_s, max_inflight_bytes=int(max_inflight_mb * 2**20))
    access = AccessPolicy.from_token_file(token_file, rate_limit, rate_burst)
    drift = _drift_monitor(reference, drift_window_s, drift_rows_per_s)
    web = app_for_model(
        path,
        precision,
        threads,
        config,
        layout=layout,
        calibration=calibration,
        calibrator=calibrator,
        prebuilt=prebuilt,
        runtime_name=runtime,
        info=info,  # inspected (and hashed) once
        access=access,
        grpc=grpc_settings,
        drift=drift,
    )
    scheme = "https" if tls_cert else "http"
    err.print(f"serving {config.name} on {scheme}://{host}:{port}/v2/models/{config.name} (ready after warm-up)")
    serve_forever(web, opts)


def _drift_monitor(reference: Path | None, window_s: float, rows_per_s: float) -> DriftMonitor | None:
    """The input drift monitor of ``--reference``; synthetic reference data is said out loud."""
    if reference is None:
        return None
    from optiserve.profile.reference import load_reference
    from optiserve.serve.drift import DriftMonitor, DriftSettings

    ref = load_reference(reference)
    if ref.synthetic:
        err.print(f"input drift is scored against {ref.source} inputs: meaningless for real traffic")
    return DriftMonitor(ref, DriftSettings(window_s=window_s, rows_per_s=rows_per_s))


def _grpc_settings(port: int | None, opts: ServerOptions, max_message: int) -> GrpcSettings | None:
    """The gRPC server's settings from ``--grpc-port`` and the HTTP server's address, TLS files and body limit;
    a taken port is one line before the model loads."""
    from optiserve._oip_client import check_bindable
    from optiserve.errors import UsageError
    from optiserve.serve.grpc_server import GrpcSettings

    if port is None:
        return None
    if not 0 < port < 65536 or port == opts.port:
        raise UsageError(f"--grpc-port {port}: a port in 1..65535 other than --port")
    check_bindable(opts.host, port, "gRPC")  # the bind itself is in the lifespan: a traceback there
    return GrpcSettings(port, opts.host, opts.tls_cert, opts.tls_key, opts.tls_client_ca, max_message)
