"""A minimal Open Inference Protocol v2 client: wait for readiness, build one request.

Used by the load test and by ``profile --serving`` (which sits below the serving
layer), so it lives at the bottom of the package and imports only NumPy (and, for the gRPC
request, the message classes tritonclient ships, lazily).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from optiserve.errors import UsageError


def wait_until_ready(url: str, timeout_s: float = 60.0) -> bool:
    """Poll ``/v2/health/ready`` until the server has warmed up (True) or time runs out."""
    import urllib.request

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def _synthetic(datatype: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    dtype = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}.get(datatype)
    if dtype is not None:
        return rng.standard_normal(shape).astype(dtype)
    ints = {"INT64": np.int64, "INT32": np.int32, "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}
    return rng.integers(0, 2, shape).astype(ints.get(datatype, np.int64))


def payload_for(
    url: str,
    model: str,
    timeout: float = 10.0,
    seed: int = 0,
    binary: bool | None = None,
    samples: Mapping[str, np.ndarray] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """One-row request (body, headers) built from the server's own model metadata:
    each input at the shape the server was sized for (its advertised layout: batch
    axis per input, dynamic dims resolved; unbatched inputs such as scalars as they
    are), filled from ``samples`` (a user's .npz, first row) when given, else synthetic.
    Large inputs (or ``binary=True``) use the binary tensor extension both ways (outputs
    too, as ``tritonclient`` asks by default): JSON has to print and parse every float,
    which for an image or a detector's output costs more than inference."""
    arrays = request_arrays(url, model, timeout, seed, samples)
    if binary is None:
        binary = sum(a.size for _, _, a in arrays) > 4096
    if not binary:
        inputs = [
            {"name": i["name"], "shape": s, "datatype": i["datatype"], "data": a.reshape(-1).tolist()}
            for i, s, a in arrays
        ]
        return json.dumps({"inputs": inputs}).encode(), {"Content-Type": "application/json"}
    inputs = [
        {"name": i["name"], "shape": s, "datatype": i["datatype"], "parameters": {"binary_data_size": a.nbytes}}
        for i, s, a in arrays
    ]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    body = header + b"".join(_le_bytes(a) for _, _, a in arrays)
    return body, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}


def grpc_request_for(
    url: str,
    model: str,
    timeout: float = 10.0,
    seed: int = 0,
    samples: Mapping[str, np.ndarray] | None = None,
) -> Any:
    """The same one-row request as :func:`payload_for`, as the ``ModelInferRequest`` a
    ``tritonclient.grpc`` client sends (raw tensor contents; outputs raw too)."""
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=model)
    for i, shape, arr in request_arrays(url, model, timeout, seed, samples):
        req.inputs.add(name=i["name"], datatype=i["datatype"], shape=shape)
        req.raw_input_contents.append(_le_bytes(arr))
    return req


def _le_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()


def request_arrays(
    url: str,
    model: str,
    timeout: float = 10.0,
    seed: int = 0,
    samples: Mapping[str, np.ndarray] | None = None,
) -> list[tuple[dict[str, Any], list[int], np.ndarray]]:
    """(input metadata, shape, one row) per input of ``model``, from the server's own metadata."""
    import urllib.request

    with urllib.request.urlopen(f"{url.rstrip('/')}/v2/models/{model}", timeout=timeout) as r:
        meta = json.loads(r.read())
    layout = {t["name"]: t for t in ((meta.get("parameters") or {}).get("layout") or {}).get("inputs", [])}
    rng = np.random.default_rng(seed)
    arrays = []
    for i in meta["inputs"]:
        t = layout.get(i["name"])
        if t is not None:
            shape, axis = list(t["shape"]), t["batch_axis"]
        else:  # a server without a layout: batch on axis 0, open dims at 1
            shape, axis = [1, *[d if d > 0 else 1 for d in i["shape"][1:]]], 0
        if samples is not None and i["name"] in samples:
            given = np.asarray(samples[i["name"]])
            arr = given if axis is None else np.take(given, [0], axis=axis)
            if list(arr.shape) != shape and t is not None and axis is not None:
                shape = list(arr.shape)  # a user sample may take another size on an open dim
            if list(arr.shape) != shape:
                raise UsageError(f"--inputs: {i['name']!r} has shape {list(arr.shape)}; the server takes {shape}")
        elif samples is not None:
            raise UsageError(f"--inputs lacks {i['name']!r}; it has {', '.join(samples) or 'nothing'}")
        else:
            arr = _synthetic(i["datatype"], shape, rng)
        arrays.append((i, shape, arr))
    return arrays


def check_bindable(host: str, port: int, what: str) -> None:
    """One line before anything loads when ``host:port`` cannot be bound (taken, not ours):
    a bind that fails later, inside a server's start-up, is a traceback."""
    from optiserve.errors import UsageError

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise UsageError(f"cannot bind the {what} port {host}:{port}: {exc.strerror}") from None


def free_port() -> int:
    """A loopback port nobody holds right now (for a server this process starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_server(proc: subprocess.Popen[str] | subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM (the server drains and exits), then SIGKILL after ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


SERVER_HISTOGRAMS = (
    "optiserve_frontend_seconds",
    "optiserve_batch_seconds",
    "optiserve_batch_size",
    "optiserve_request_latency_seconds",
)


def server_sums(url: str) -> dict[str, float]:
    """The sums and counts of ``optiserve serve``'s own histograms on ``/metrics`` (empty when another
    server answers or none): read before and after a run, their differences are that run's."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=10) as r:
            text = r.read().decode()
    except (OSError, ValueError):
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in SERVER_HISTOGRAMS:
            for part in ("sum", "count"):
                if line.startswith(f"{name}_{part} "):
                    out[f"{name}_{part}"] = float(line.split()[1])
    return out


def histogram_mean(before: Mapping[str, float], after: Mapping[str, float], name: str) -> float:
    """The mean of histogram ``name`` over the observations made between two ``server_sums`` reads."""
    count = after[f"{name}_count"] - before[f"{name}_count"]
    return (after[f"{name}_sum"] - before[f"{name}_sum"]) / max(count, 1)


def server_means(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float | None]:
    """The server's own figures for a run (ms per call, rows per call, front end per request), or
    None where its metrics did not say."""

    def mean(name: str, scale: float) -> float | None:
        have = f"{name}_count" in before and f"{name}_count" in after
        if not have or after[f"{name}_count"] <= before[f"{name}_count"]:
            return None
        return round(histogram_mean(before, after, name) * scale, 4)

    return {
        "mean_call_ms": mean("optiserve_batch_seconds", 1e3),
        "mean_batch": mean("optiserve_batch_size", 1.0),
        "mean_frontend_ms": mean("optiserve_frontend_seconds", 1e3),
    }
