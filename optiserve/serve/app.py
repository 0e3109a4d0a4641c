"""The HTTP side: the OIP v2 REST surface with Triton's extensions, and Prometheus metrics.

Routes: server metadata (``GET /v2``), health, model metadata, readiness,
Triton's JSON model config, statistics and repository index, each also under
``/versions/1``; ``infer`` is the raw ASGI handler of ``rest_infer``. Every
answer that is not a 200 is JSON ``{"error": ...}`` (404 and 405 included) and
every status is counted in ``/metrics``. The model itself (batcher, sessions,
admission, statistics) is a ``ServedModel`` (``endpoint.py``), shared with the
gRPC front end. The server is ready only after every batch size up to
``max_batch`` has run once on every instance (warm-up).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from optiserve._version import __version__
from optiserve.models.graph import InputSpec, ModelInfo
from optiserve.models.inputs import make_inputs
from optiserve.serve.batcher import Run
from optiserve.serve.drift import DriftCollector, DriftMonitor
from optiserve.serve.endpoint import ServeConfig, ServedModel
from optiserve.serve.gate import ConnectionGate
from optiserve.serve.grpc_server import GrpcSettings, start_grpc
from optiserve.serve.protocol import dumps
from optiserve.serve.rest_infer import InferHandler, Receive, Scope, Send, send_error, send_json
from optiserve.serve.security import AccessPolicy, RateLimiter, authorized
from optiserve.types import InputLayout

__all__ = ["ServeConfig", "ServedModel", "app_for_model", "create_app"]

EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics", "parameters"]


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


class GateCollector:
    """Prometheus view of the overload gate (``gate.py``), read at scrape time."""

    def __init__(self, gate: ConnectionGate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[Any]:
        g = self.gate
        closed = g.listener is not None and g.listener.paused
        pauses = g.listener.pauses if g.listener is not None else 0
        yield GaugeMetricFamily("optiserve_connection_limit", "The overload gate's limit on open connections", g.limit)
        yield GaugeMetricFamily(
            "optiserve_listener_closed", "1 while the gate has closed the listener (the kernel refuses)", float(closed)
        )
        yield CounterMetricFamily("optiserve_connection_limit_cuts", "Cuts of the overload gate's limit", g.cuts)
        yield CounterMetricFamily("optiserve_listener_pauses", "Times the gate closed the listener", pauses)


class Front:
    """The outermost ASGI app: counts every status, checks access, sends infer to its raw handler."""

    def __init__(
        self, inner: Starlette, model: ServedModel, infer: InferHandler, access: AccessPolicy, responses: Counter
    ) -> None:
        self.inner, self.model, self.infer, self.access = inner, model, infer, access
        self.limiter = RateLimiter(access.rate, access.burst)
        self.responses = responses
        name = model.name
        self.infer_paths = {f"/v2/models/{name}/infer", f"/v2/models/{name}/versions/{model.version}/infer"}
        cfg = model.config  # the overload gate never cuts below two connections per instance
        self.min_connections = 2 * cfg.instances
        self.batch_slots = cfg.max_batch * cfg.instances

    def queued(self) -> bool:
        """More than a batch per instance in flight: a queue, not one slow request (the gate's test)."""
        return self.model.admission.requests > self.batch_slots

    registry: CollectorRegistry | None = None  # /metrics's: the server adds its overload gate here

    def watch_gate(self, gate: ConnectionGate) -> None:
        """The overload gate on ``/metrics`` (its limit, whether the listener is closed, its cuts and
        pauses), told of every answered infer request."""
        if self.registry is not None:
            self.registry.register(GateCollector(gate))
        counted = self.model.counter

        def count(status: int, seconds: float, frontend_s: float | None) -> None:
            if counted is not None:
                counted(status, seconds, frontend_s)
            if status == 200:
                gate.served()  # each answered infer grows the limit (or cuts it under pressure)

        self.model.counter = count

    def pressure(self, now: float) -> bool:
        """The oldest request in flight, upload included, is past the admission's bound (the overload
        gate's delay signal, with ``queued``)."""
        adm = self.model.admission
        return adm.oldest_age(now) > adm.max_wait_s

    def shed(self, scope: Scope) -> tuple[bytes, bool] | None:
        """(a whole 503 response, close after it) for an infer request the model would refuse now, or None.

        Called by the connection protocol from the headers alone (``server.py``): no ASGI task, no
        body parsed. The 503 closes the connection: the client stops sending a large body, and the
        overload gate (``gate.py``) keeps the connections it can serve.
        Requests this cannot judge (unauthorized, malformed length) take the normal path."""
        if scope["method"] != "POST" or scope["path"] not in self.infer_paths or not self.model.ready:
            return None
        length, auth = 0, None
        for k, v in scope["headers"]:
            if k == b"content-length":
                if not v.isdigit():
                    return None
                length = int(v)
            elif k == b"authorization":
                auth = v
        if length > self.model.config.max_body_bytes or not authorized(self.access, scope["path"], auth):
            return None
        reason = self.model.admission.refusal(length)
        if reason is None:
            return None
        self.model.count(503, 0.0, None)
        body = dumps({"error": f"overloaded: {reason}; retry later"})
        head = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        head += b"connection: close\r\n"  # keep-alive off under overload: the gate sheds at the kernel
        return head + b"content-length: %d\r\n\r\n" % len(body) + body, True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        path: str = scope["path"]
        headers = scope["headers"]
        if not authorized(self.access, path, next((v for k, v in headers if k == b"authorization"), None)):
            await send_json(
                send,
                401,
                dumps({"error": "missing or wrong bearer token"}),
                [(b"www-authenticate", b'Bearer realm="optiserve"')],
            )
            self.responses.labels("401").inc()
            return
        client = scope.get("client")
        if self.limiter.rate > 0 and not self.limiter.allow(client[0] if client else "?"):
            await send_error(send, 429, "rate limit exceeded for this client; retry later")
            self.responses.labels("429").inc()
            return
        if path in self.infer_paths and scope["method"] == "POST":
            await self.infer(scope, receive, send)  # counts its own status
            return
        status = 500

        async def counted(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.inner(scope, receive, counted)
        finally:
            self.responses.labels(str(status)).inc()


def create_app(
    run: Run | Sequence[Run],
    inputs: Sequence[InputSpec],
    output_names: Sequence[str],
    config: ServeConfig,
    warmup_feeds: Callable[[int], dict[str, np.ndarray]],
    layout: InputLayout | None = None,
    access: AccessPolicy | None = None,
    grpc: GrpcSettings | None = None,
    drift: DriftMonitor | None = None,
    describe_runtime: Callable[[], dict[str, Any]] | None = None,
) -> Any:
    """The ASGI app; with ``grpc``, also the OIP v2 gRPC server (same loop, model and access).
    ``run``: one callable per instance (one session each) or one shared;
    ``layout`` says where each input's batch axis is (default: axis 0 of every input);
    ``drift``: served inputs are summarised and scored against its reference on ``/metrics``;
    ``describe_runtime``: what the model metadata's parameters say of the runtime."""
    registry = CollectorRegistry()
    requests = Counter("optiserve_requests", "Inference requests by HTTP status", ["status"], registry=registry)
    responses = Counter(
        "optiserve_http_responses", "Responses of every route by HTTP status", ["status"], registry=registry
    )
    latency = Histogram(
        "optiserve_request_latency_seconds",
        "Arrival to response, per request",
        registry=registry,
        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
    )
    batch_rows = Histogram(
        "optiserve_batch_size",
        "Rows per executed batch",
        registry=registry,
        buckets=tuple(float(b) for b in range(1, config.max_batch + 1)),
    )
    infer_time = Histogram(
        "optiserve_batch_seconds",
        "Runtime time per batch",
        registry=registry,
        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    )
    depth = Gauge("optiserve_queue_depth", "Requests waiting for a batch", registry=registry)
    inflight = Gauge("optiserve_inflight_requests", "Requests admitted and not yet answered", registry=registry)
    inflight_bytes = Gauge("optiserve_inflight_body_bytes", "Body bytes held by admitted requests", registry=registry)

    def on_batch(rows: int, seconds: float) -> None:
        batch_rows.observe(rows)
        infer_time.observe(seconds)

    model = ServedModel(run, inputs, output_names, config, warmup_feeds, layout, on_batch, describe_runtime)

    frontend = Histogram(
        "optiserve_frontend_seconds",
        "Event-loop time per request: reading, parsing, encoding the response (the profile's serving stage)",
        registry=registry,
        buckets=(0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
    )

    by_status: dict[int, tuple[Any, Any]] = {}  # label children, looked up once: a 503 must cost little

    def count(status: int, seconds: float, frontend_s: float | None) -> None:
        pair = by_status.get(status)
        if pair is None:
            pair = by_status[status] = (requests.labels(str(status)), responses.labels(str(status)))
        pair[0].inc()
        pair[1].inc()
        if status == 200:
            latency.observe(seconds)
        if frontend_s is not None:
            frontend.observe(frontend_s)

    model.counter = count  # REST and gRPC count the same way
    if drift is not None:
        drift.check(inputs)
        model.observe_inputs = drift.observe
        registry.register(DriftCollector(drift, model.name))
    handler = InferHandler(model)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await model.start()
        # after the warm-up: gRPC's own call limit is sized from the speed it measured (SheddingLimits)
        grpc_server = await start_grpc(model, grpc, access) if grpc is not None else None
        depth.set_function(lambda: model.depth)
        inflight.set_function(lambda: model.admission.requests)
        inflight_bytes.set_function(lambda: model.admission.bytes)
        yield
        if grpc_server is not None:
            await grpc_server.stop(5)
        await model.stop()
        handler.close()

    def known(request: Request) -> None:
        name, version = request.path_params["name"], request.path_params.get("version", model.version)
        if name != model.name:
            raise HTTPException(404, f"unknown model {name!r}; this server has {model.name!r}")
        if version != model.version:
            raise HTTPException(404, f"unknown version {version!r} of {name!r}; it has {model.version!r}")

    async def server_metadata(request: Request) -> Response:
        return JSON({"name": "optiserve", "version": __version__, "extensions": EXTENSIONS})

    async def live(request: Request) -> Response:
        return JSON({"live": True})

    async def ready(request: Request) -> Response:
        return JSON({"ready": model.ready}, status_code=200 if model.ready else 503)

    async def metadata(request: Request) -> Response:
        known(request)
        if not model.ready:
            return JSON({"error": "model is warming up"}, status_code=503)
        return JSON(model.metadata())

    async def model_ready(request: Request) -> Response:
        known(request)
        ok = model.ready
        return JSON({"name": model.name, "ready": ok}, status_code=200 if ok else 503)

    async def model_config(request: Request) -> Response:
        known(request)
        if not model.ready:
            return JSON({"error": "model is warming up"}, status_code=503)
        return JSON(model.model_config())

    async def stats(request: Request) -> Response:
        if "name" in request.path_params:
            known(request)
        return JSON({"model_stats": [model.statistics()]})

    async def repository_index(request: Request) -> Response:
        state = "READY" if model.ready else "LOADING"
        return JSON([{"name": model.name, "version": model.version, "state": state, "reason": ""}])

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSON({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        return JSON({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    routes = [Route("/v2", server_metadata), Route("/v2/health/live", live), Route("/v2/health/ready", ready)]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, metadata),
            Route(prefix + "/ready", model_ready),
            Route(prefix + "/config", model_config),
            Route(prefix + "/stats", stats),
        ]

    async def not_here(request: Request) -> Response:  # infer for another model or version
        known(request)
        raise HTTPException(404, "not found")

    routes.insert(0, Route("/v2/models/stats", stats))
    routes += [
        Route("/v2/models/{name}/infer", not_here, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", not_here, methods=["POST"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/metrics", metrics),
    ]
    inner = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    front = Front(inner, model, handler, access or AccessPolicy(), responses)
    front.registry = registry
    return front


def app_for_model(
    model_path: Any,
    precision: str,
    threads: int,
    config: ServeConfig,
    cache_dir: Any = None,
    layout: InputLayout | None = None,
    calibration: Any = None,
    calibrator: str = "minmax",
    prebuilt: bool = False,
    runtime_name: str = "onnxruntime-cpu",
    info: ModelInfo | None = None,
    access: AccessPolicy | None = None,
    grpc: GrpcSettings | None = None,
    drift: DriftMonitor | None = None,
) -> Any:
    """Load ``model_path`` at ``precision`` on ONNX Runtime CPU and serve it, sized and warmed
    for ``layout`` (inferred from the graph when not given). A precision variant is the one
    ``optiserve profile`` builds for the same settings (``calibration`` file, calibrator):
    same recipe, same batches, same cache key, so the bytes served are the bytes measured.
    ``prebuilt``: ``model_path`` already is that variant (what ``emit`` ships): served as is.
    ``runtime_name``: the plan's runtime (a GPU placement is served on its GPU runtime).
    ``info``: the model already inspected by the caller (inspecting hashes the whole file).
    ``config.instances`` sessions are loaded, one per batcher worker (as Triton's instance group);
    on openvino, one compiled model with an infer request per worker (``runtimes.openvino.load_instances``)."""
    from pathlib import Path

    from optiserve.errors import RuntimeUnavailableError, UsageError
    from optiserve.models.graph import inspect_model
    from optiserve.models.layout import infer_layout
    from optiserve.runtimes.registry import get_runtime
    from optiserve.types import Precision
    from optiserve.variants.calibration import build_from_recipe, recipe_for

    path = Path(model_path)
    info = info or inspect_model(path)
    layout = layout or infer_layout(info)
    if layout.fixed_batch is not None and config.max_batch != layout.fixed_batch:
        # a graph with a fixed batch runs at that batch only: one request per call
        fixed = layout.fixed_batch
        config = replace(config, max_batch=fixed, preferred=tuple(p for p in config.preferred if p <= fixed))
    prec = Precision.parse(precision)
    runtime = get_runtime(runtime_name)
    reason = runtime.available()
    if reason:
        raise RuntimeUnavailableError(f"cannot serve on {runtime_name}: {reason}")
    if not runtime.supports(prec):
        raise UsageError(f"{runtime_name} does not run {prec}")
    run_path = path
    if prec in runtime.variant_precisions and not prebuilt:
        calib = Path(calibration) if calibration is not None else None
        recipe = recipe_for(prec, calib, calibrator, toolkit=runtime.variant_toolkit)  # NNCF's for openvino
        cache = Path(cache_dir) if cache_dir is not None else None
        run_path = build_from_recipe(path, info, layout, recipe, calib, cache).path
    describe: Callable[[], dict[str, Any]] | None = None
    if runtime_name == "openvino":  # one compilation, one infer request per instance
        from optiserve.runtimes.openvino import load_instances

        pool = load_instances(run_path, prec, threads, config.instances, layout=layout)
        runs: list[Run] = list(pool.runs())
        output_names, describe = pool.session.output_names, pool.describe
    else:
        sessions = [runtime.load(run_path, prec, threads, {}, layout=layout) for _ in range(config.instances)]
        runs, output_names = [s.run for s in sessions], sessions[0].output_names
    config = replace(config, threads=threads, runtime=runtime_name)
    served = info if run_path == path else inspect_model(run_path)  # a variant may take other input types
    served_layout = InputLayout(
        tuple(replace(t, dtype=s.dtype) for t, s in zip(layout.inputs, served.inputs, strict=True)),
        layout.fixed_batch,
        layout.output_axes,
    )
    return create_app(
        runs,
        served.inputs,
        output_names,
        config,
        lambda b: make_inputs(served, b, seed=b, layout=served_layout),
        served_layout,
        access,
        grpc,
        drift,
        describe_runtime=describe,
    )
