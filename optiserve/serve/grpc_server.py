"""The OIP v2 gRPC side: Triton's ``GRPCInferenceService`` on its own port, same model, same batcher.

The service stubs and messages are the ones ``tritonclient[grpc]`` ships (the
official proto, not a copy). The server is ``grpc.aio`` so it runs on the
event loop the HTTP side and the batcher run on, against the same
``endpoint.ServedModel``: a gRPC request takes a ticket from the same admission
control, joins the same batcher queue and counts in the same statistics. Every
failure is a status code with one line (INVALID_ARGUMENT, NOT_FOUND,
UNAVAILABLE, UNAUTHENTICATED, RESOURCE_EXHAUSTED, INTERNAL), never a traceback.
Access is the REST side's ``AccessPolicy``: the same bearer tokens (metadata
``authorization: Bearer T``; liveness and readiness stay open for probes) and
the same per-client rate limit; TLS (and mTLS) take the same PEM files.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optiserve._imports import optional_import
from optiserve._version import __version__
from optiserve.serve.endpoint import InferenceFailed, Overloaded, ServedModel
from optiserve.serve.grpc_codec import decode_request, encode_response
from optiserve.serve.protocol import RequestError
from optiserve.serve.security import AccessPolicy, RateLimiter, authorized
from optiserve.serve.server_timing import header_value

# HTTP status of a RequestError -> gRPC status name (grpc.StatusCode member)
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED",
          429: "UNAVAILABLE", 503: "UNAVAILABLE"}  # fmt: skip
HTTP_OF = {"UNAUTHENTICATED": 401, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503}
EXTENSIONS = ("model_configuration", "statistics", "binary_tensor_data")
CALL_WAIT_S = 0.1  # gRPC takes the calls in flight its instances get through in this long (see SheddingLimits)


@dataclass(frozen=True)
class GrpcSettings:
    port: int
    host: str = "127.0.0.1"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # mTLS: clients must present a certificate this CA signed
    max_message_bytes: int = 64 * 2**20


@dataclass(frozen=True)
class SheddingLimits:
    """Where the gRPC side refuses under overload: in gRPC's C core, before any Python runs, and
    at the handler's first line, before the message is decoded.

    A gRPC call costs the one Python thread about three times a REST request (grpc.aio's own
    work: ~2,100-2,700 ``ServerLive`` calls/s on a Zen 3 core; the MLP ~1,100 infer/s against
    ~3,400 over REST, both CPU-bound). Left at gRPC's defaults the C core queued up to 1,000
    calls ahead of the handler, where admission cannot see them: goodput fell to 420 req/s at
    1.5x the MLP's capacity and 135 at 3x, the CNN's to 12 req/s at 2.5x (every 200 late).

    - ``pending``/``pending_hard``: the C core refuses calls past ``pending`` waiting for the
      loop to pick them up (with a probability rising to 1 at ``pending_hard``). The loop
      picks calls up at about the same rate whatever the model, so 64 is tens of ms. 8
      refused 10% of 12 closed-loop ``ServerLive`` callers on an idle server; 64 none of 64.
      The refusal reaches the client as CANCELLED (gRPC's own code), never ``/metrics``.
    - ``calls(row_s)``: calls in flight past what the instances get through in
      ``CALL_WAIT_S`` at the measured compute speed per row (two batches' worth at least) are
      refused UNAVAILABLE at the handler's first line and counted, as admission's are. It is
      the REST side's connection gate for a protocol whose calls share connections: 16 calls
      for the CNN at batch 8 (32 let its 200s come 0.6 s late), about 100 for the MLP at batch
      1 and a thousand at batch 8, where the C core's limit binds first. gRPC's own
      ``maximum_concurrent_rpcs`` is a fixed count: at two batches it refused 40 of 48 callers
      sent at once to an idle batch-1 MLP server. So the server starts its gRPC side after the
      warm-up and sets ``maximum_concurrent_rpcs`` to ``calls`` at the warm-up's speed: past
      it gRPC refuses (RESOURCE_EXHAUSTED) before the message is parsed, which for the CNN's
      600 KB calls is what keeps refusals cheap (with the handler's check alone the CNN's
      goodput at 3x fell to 72%). The handler's check follows the speed from then on, but
      never below the C core's limit: a call past that count has been paid for (its
      message received and parsed), and refusing it only adds a second cost. Measured on
      the Zen 5 guest (2026-12-02): under overload the compute the server times grows (the
      front end shares its core), the handler's limit fell below the C core's, and at 5x
      the CNN's capacity 4,274 of 4,321 refusals came after the 600 KB parse (goodput 59%);
      the admission's latency bound still refuses what would wait too long."""

    max_batch: int
    instances: int
    pending: int = 64
    pending_hard: int = 128

    def calls(self, row_s: float) -> int:
        """Calls in flight this server takes at ``row_s`` compute seconds per row (0: not measured yet)."""
        batch = self.max_batch * self.instances
        if row_s <= 0:
            return 2 * batch
        return max(2 * batch, batch + math.ceil(self.instances * CALL_WAIT_S / row_s))


def shedding_limits(max_batch: int, instances: int) -> SheddingLimits:
    return SheddingLimits(max(1, max_batch), max(1, instances))


def _pb() -> tuple[Any, Any, Any, Any]:
    grpc = optional_import("grpc", "serve")
    service = optional_import("tritonclient.grpc.service_pb2", "serve")
    stubs = optional_import("tritonclient.grpc.service_pb2_grpc", "serve")
    json_format = optional_import("google.protobuf.json_format", "serve")
    return grpc, service, stubs, json_format


def _client(peer: str) -> str:
    """The address of ``context.peer()`` (``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``) without its port."""
    return peer.rpartition(":")[0] or peer


class _Abort(Exception):
    """An infer answer other than OK: its HTTP-equivalent status (for the shared metrics) and gRPC code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def make_servicer(model: ServedModel, access: AccessPolicy | None = None, admitted: int = 0) -> Any:
    """A ``GRPCInferenceServiceServicer`` for ``model``; methods it does not override answer UNIMPLEMENTED.
    ``admitted``: the C core's own call limit (``maximum_concurrent_rpcs``), below which the handler
    never refuses on the call count (see ``SheddingLimits``)."""
    grpc, pb, stubs, json_format = _pb()
    from tritonclient.grpc import model_config_pb2

    policy = access or AccessPolicy()
    limiter = RateLimiter(policy.rate, policy.burst)
    limits = shedding_limits(model.config.max_batch, model.config.instances)

    async def abort(context: Any, code: str, message: str) -> None:
        await context.abort(getattr(grpc.StatusCode, code), message)

    async def authorize(context: Any) -> None:
        sent = dict(context.invocation_metadata() or ()).get("authorization")
        if not authorized(policy, "grpc", sent.encode() if isinstance(sent, str) else sent):
            await abort(context, "UNAUTHENTICATED", "missing or wrong bearer token")
        if limiter.rate > 0 and not limiter.allow(_client(context.peer() or "?")):
            await abort(context, "RESOURCE_EXHAUSTED", "rate limit exceeded for this client; retry later")

    async def known(name: str, version: str, context: Any) -> None:
        await authorize(context)
        if name != model.name:
            await abort(context, "NOT_FOUND", f"unknown model {name!r}; this server has {model.name!r}")
        if version not in ("", "1"):
            await abort(context, "NOT_FOUND", f"model {name!r} has version 1 only, not {version!r}")
        if not model.ready:
            await abort(context, "UNAVAILABLE", "model is warming up")

    base: Any = stubs.GRPCInferenceServiceServicer

    class Servicer(base):  # type: ignore[misc]
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=model.ready)

        async def ModelReady(self, request: Any, context: Any) -> Any:
            await authorize(context)
            ok = request.name == model.name and request.version in ("", "1") and model.ready
            return pb.ModelReadyResponse(ready=ok)

        async def ServerMetadata(self, request: Any, context: Any) -> Any:
            await authorize(context)
            return pb.ServerMetadataResponse(name="optiserve", version=__version__, extensions=list(EXTENSIONS))

        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            await known(request.name, request.version, context)
            meta = model.metadata()
            out = pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"])
            for src, dst in ((meta["inputs"], out.inputs), (meta["outputs"], out.outputs)):
                for t in src:
                    dst.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
            return out

        async def ModelConfig(self, request: Any, context: Any) -> Any:
            await known(request.name, request.version, context)
            doc = model.model_config()
            config = json_format.ParseDict(doc, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
            return pb.ModelConfigResponse(config=config)

        async def ModelStatistics(self, request: Any, context: Any) -> Any:
            await authorize(context)
            if request.name not in ("", model.name):
                await abort(context, "NOT_FOUND", f"unknown model {request.name!r}; this server has {model.name!r}")
            stats = model.statistics()
            out = pb.ModelStatisticsResponse()
            return json_format.ParseDict({"model_stats": [stats]}, out, ignore_unknown_fields=True)

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            arrived = time.perf_counter()
            status = 500  # the HTTP status this answer counts as in /metrics, as REST counts it
            try:
                response = await self._infer(request, context, arrived)
                status = 200
                return response
            except _Abort as exc:
                status = exc.status
                await abort(context, exc.code, exc.message)
            except BaseException:  # aborted by the access or name checks
                code = context.code()
                status = HTTP_OF.get(getattr(code, "name", ""), 500)
                raise
            finally:
                model.count(status, time.perf_counter() - arrived, None)

        async def _infer(self, request: Any, context: Any, arrived: float) -> Any:
            await known(request.model_name, request.model_version, context)
            calls, limit = model.admission.requests, max(admitted, limits.calls(model.row_s))
            if calls >= limit:  # before the message is decoded: this refusal is as cheap as gRPC allows
                raise _Abort(503, "UNAVAILABLE", f"overloaded: {calls} calls in flight, limit {limit}; retry later")
            try:
                ticket = model.admit(request.ByteSize())
            except Overloaded as exc:
                raise _Abort(503, "UNAVAILABLE", f"overloaded: {exc}; retry later") from None
            with ticket:
                ticket.queued(arrived)  # the message is whole: from now on it waits for the server
                try:
                    tensors, rows, wanted = decode_request(request, model.inputs, model.config.max_batch, model.layout)
                    parsed = time.perf_counter()
                    outs = await model.infer(tensors, rows, arrived, ticket)
                    done = time.perf_counter()
                    response = encode_response(
                        pb, model.name, request.id, list(zip(model.output_names, outs, strict=True)), wanted
                    )
                except RequestError as exc:
                    raise _Abort(exc.status, STATUS.get(exc.status, "INTERNAL"), str(exc)) from None
                except Overloaded as exc:
                    raise _Abort(503, "UNAVAILABLE", f"overloaded: {exc}; retry later") from None
                except InferenceFailed as exc:  # counted by the model; one line, the server goes on
                    raise _Abort(500, "INTERNAL", str(exc)) from None
                end = time.perf_counter()
                model.stats.request(True, end - arrived, parsed - arrived, end - done)
                timing = header_value(end - arrived, ticket.started_at - parsed, ticket.call_s)  # as REST's
                context.set_trailing_metadata((("server-timing", timing),))
                return response

    return Servicer()


async def _add_health(server: Any, model: ServedModel) -> None:
    """The standard ``grpc.health.v1.Health`` service (what Kubernetes' gRPC probes and grpc_health_probe ask):
    the server (``""``), the inference service and the model answer NOT_SERVING until warm, then SERVING."""
    health_mod = optional_import("grpc_health.v1.health", "serve")
    pb = optional_import("grpc_health.v1.health_pb2", "serve")
    stubs = optional_import("grpc_health.v1.health_pb2_grpc", "serve")
    health = health_mod.aio.HealthServicer()
    names = ("", "inference.GRPCInferenceService", model.name)
    for n in names:
        await health.set(n, pb.HealthCheckResponse.NOT_SERVING)
    stubs.add_HealthServicer_to_server(health, server)

    async def serving_when_warm() -> None:
        await model.warm.wait()
        for n in names:
            await health.set(n, pb.HealthCheckResponse.SERVING)

    health.optiserve_task = asyncio.get_running_loop().create_task(serving_when_warm())  # kept: not collected


async def start_grpc(model: ServedModel, settings: GrpcSettings, access: AccessPolicy | None = None) -> Any:
    """Start a ``grpc.aio`` server for ``model`` (warm: its limits follow the speed the warm-up measured)
    on the running loop; the caller awaits ``stop(grace)``."""
    grpc, _, stubs, _ = _pb()
    limit = settings.max_message_bytes
    cap = shedding_limits(model.config.max_batch, model.config.instances)
    admitted = cap.calls(model.row_s)  # at the warm-up's speed
    server = grpc.aio.server(
        maximum_concurrent_rpcs=admitted,  # refused in Cython, before the message is parsed
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),  # a second server on the same port is an error, not a silent share
            ("grpc.server.max_pending_requests", cap.pending),
            ("grpc.server.max_pending_requests_hard_limit", cap.pending_hard),
        ],
    )
    stubs.add_GRPCInferenceServiceServicer_to_server(make_servicer(model, access, admitted), server)
    await _add_health(server, model)
    address = f"{settings.host}:{settings.port}"
    try:
        if settings.tls_cert is not None and settings.tls_key is not None:
            ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca is not None else None
            pair = [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())]
            creds = grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=ca is not None)
            bound = server.add_secure_port(address, creds)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        from optiserve.errors import UsageError

        raise UsageError(f"cannot bind the gRPC port {address}: in use or not an address here")
    await server.start()
    return server
