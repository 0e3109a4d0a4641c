"""The HTTP side: Open Inference Protocol v2 endpoints and Prometheus metrics.

Bad requests are 4xx with ``{"error": ...}``; a full queue is 503; the server is
ready only after every batch size up to ``max_batch`` has run once (warm-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from optiserve.models.graph import InputSpec, ModelInfo
from optiserve.models.inputs import make_inputs
from optiserve.models.layout import probe_output_axes
from optiserve.serve.batcher import DynamicBatcher, QueueFull
from optiserve.serve.protocol import RequestError, infer_response, model_metadata, parse_infer_request
from optiserve.types import InputLayout


@dataclass(frozen=True)
class ServeConfig:
    name: str
    max_batch: int = 8
    max_delay_ms: float = 2.0
    instances: int = 1
    max_queue: int = 256
    max_body_bytes: int = 64 * 2**20
    preferred: tuple[int, ...] = ()


def create_app(
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    inputs: Sequence[InputSpec],
    output_names: Sequence[str],
    config: ServeConfig,
    warmup_feeds: Callable[[int], dict[str, np.ndarray]],
    layout: InputLayout | None = None,
) -> Starlette:
    """``layout`` says where each input's batch axis is (default: axis 0 of every input)."""
    registry = CollectorRegistry()
    requests = Counter("optiserve_requests", "Inference requests by HTTP status", ["status"], registry=registry)
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
    frontend = Histogram(
        "optiserve_frontend_seconds",
        "Event-loop time per request: reading, parsing, encoding the response",
        registry=registry,
        buckets=(0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
    )
    state: dict[str, Any] = {"ready": False, "batcher": None, "outputs": None}

    def on_batch(rows: int, seconds: float) -> None:
        batch_rows.observe(rows)
        infer_time.observe(seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batcher = DynamicBatcher(
            run,
            [i.name for i in inputs],
            config.max_batch,
            config.max_delay_ms / 1e3,
            config.instances,
            config.max_queue,
            config.preferred,
            on_batch,
            input_axes={t.name: t.batch_axis for t in layout.inputs} if layout is not None else None,
        )
        loop = asyncio.get_running_loop()
        shapes: dict[int, list[tuple[int, ...]]] = {}
        outs: list[np.ndarray] = []
        sizes = [layout.fixed_batch] if layout is not None and layout.fixed_batch else range(1, config.max_batch + 1)
        for b in sizes:  # warm every batch size before saying ready
            for _ in range(2):
                outs = await loop.run_in_executor(None, run, warmup_feeds(b))
            shapes[b] = [tuple(o.shape) for o in outs]
        if 1 in shapes and 2 in shapes:  # the axis each output grows along, seen for real
            axes = [a for _, a in probe_output_axes(output_names, shapes[1], shapes[2])]
        elif layout is not None:
            axes = [layout.output_axis(n) for n in output_names]
        else:
            axes = [0] * len(output_names)
        batcher.set_output_axes(axes)
        state["outputs"] = [
            (n, o.dtype.name, [-1 if i == a else d for i, d in enumerate(o.shape)])
            for n, o, a in zip(output_names, outs, axes, strict=True)
        ]
        batcher.start()
        gc.collect()
        gc.freeze()  # model and runtime objects out of the collector's way: shorter pauses under load
        depth.set_function(lambda: batcher.depth)
        state["batcher"], state["ready"] = batcher, True
        yield
        state["ready"] = False
        await batcher.stop()

    def error(status: int, message: str) -> JSONResponse:
        requests.labels(str(status)).inc()
        return JSONResponse({"error": message}, status_code=status)

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    async def metadata(request: Request) -> Response:
        if request.path_params["name"] != config.name:
            return JSONResponse({"error": f"unknown model {request.path_params['name']!r}"}, status_code=404)
        if not state["ready"]:
            return JSONResponse({"error": "model is warming up"}, status_code=503)
        meta = model_metadata(config.name, inputs, state["outputs"], layout)
        meta.setdefault("parameters", {}).update(state["batcher"].describe())
        return JSONResponse(meta)

    async def model_ready(request: Request) -> Response:
        ok = request.path_params["name"] == config.name and state["ready"]
        return JSONResponse({"name": request.path_params["name"], "ready": ok}, status_code=200 if ok else 503)

    async def infer(request: Request) -> Response:
        arrived = time.perf_counter()
        if request.path_params["name"] != config.name:
            return error(404, f"unknown model {request.path_params['name']!r}; this server has {config.name!r}")
        if not state["ready"]:
            return error(503, "model is warming up")
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > config.max_body_bytes:
            return error(413, f"body of {size} bytes exceeds the limit of {config.max_body_bytes}")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > config.max_body_bytes:
                return error(413, f"body exceeds the limit of {config.max_body_bytes} bytes")
        header = request.headers.get("inference-header-content-length")
        try:
            if header is not None and not header.isdigit():
                raise RequestError(400, f"Inference-Header-Content-Length must be a byte count, got {header!r}")
            length = int(header) if header is not None else None
            rid, tensors, rows = parse_infer_request(body, inputs, config.max_batch, length, layout)
        except RequestError as exc:
            return error(exc.status, str(exc))
        parsed = time.perf_counter()
        try:
            outs = await state["batcher"].submit({t.name: t.array for t in tensors}, rows)
        except QueueFull as exc:
            return error(503, f"overloaded: {exc}; retry later")
        except Exception as exc:
            return error(500, f"inference failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        done = time.perf_counter()
        response = JSONResponse(infer_response(config.name, rid, list(zip(output_names, outs, strict=True))))
        end = time.perf_counter()
        requests.labels("200").inc()
        latency.observe(end - arrived)
        frontend.observe((parsed - arrived) + (end - done))
        return response

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/v2/health/live", live),
            Route("/v2/health/ready", ready),
            Route("/v2/models/{name}", metadata),
            Route("/v2/models/{name}/ready", model_ready),
            Route("/v2/models/{name}/infer", infer, methods=["POST"]),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )


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
) -> Starlette:
    """Load ``model_path`` at ``precision`` on ONNX Runtime CPU and serve it, sized and warmed
    for ``layout`` (inferred from the graph when not given). A precision variant is the one
    ``optiserve profile`` builds for the same settings (``calibration`` file, calibrator):
    same recipe, same batches, same cache key, so the bytes served are the bytes measured.
    ``prebuilt``: ``model_path`` already is that variant (what ``emit`` ships): served as is.
    ``runtime_name``: the plan's runtime (a GPU placement is served on its GPU runtime).
    ``info``: the model already inspected by the caller (inspecting hashes the whole file)."""
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
        recipe = recipe_for(prec, calib, calibrator)
        cache = Path(cache_dir) if cache_dir is not None else None
        run_path = build_from_recipe(path, info, layout, recipe, calib, cache).path
    session = runtime.load(run_path, prec, threads, {}, layout=layout)
    served = info if run_path == path else inspect_model(run_path)  # a variant may take other input types
    served_layout = InputLayout(
        tuple(replace(t, dtype=s.dtype) for t, s in zip(layout.inputs, served.inputs, strict=True)),
        layout.fixed_batch,
        layout.output_axes,
    )
    return create_app(
        session.run,
        served.inputs,
        session.output_names,
        config,
        lambda b: make_inputs(served, b, seed=b, layout=served_layout),
        served_layout,
    )
