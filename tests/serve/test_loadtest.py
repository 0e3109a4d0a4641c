"""A short real load test on loopback: `optiserve serve` and `optiserve loadtest` as processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from optiserve.serve.loadtest import wait_until_ready
from tests.conftest import run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


GRPC_PORT = _free_port()


@pytest.fixture(scope="module")
def server(zoo_dir: Path) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "optiserve",
            "serve",
            str(zoo_dir / "mlp.onnx"),
            "--port",
            str(port),
            "--max-batch",
            "8",
            "--max-delay-ms",
            "2",
            "--grpc-port",
            str(GRPC_PORT),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_until_ready(url, 60):
        proc.kill()
        pytest.fail(f"server did not become ready: {proc.stderr.read() if proc.stderr else ''}")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_short_open_loop_load_test(server: str, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = run_cli(
        "loadtest",
        server,
        "--model",
        "mlp",
        "--rate",
        "60",
        "--duration",
        "3",
        "--p99-target-ms",
        "500",
        "--json",
        str(out),
        cwd=tmp_path,
        timeout=120,
    )
    assert out.is_file(), proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    # a busy CI machine may push a few sends late: then the run must say INVALID and exit 1, not pass silently
    assert proc.returncode == (0 if r["valid"] else 1), proc.stdout + proc.stderr
    assert r["valid"] == (r["late_fraction"] <= 0.01) and ("INVALID" in proc.stdout) != r["valid"]
    assert r["scheduled"] == 180 and r["completed"] == 180 and r["errors"] == {}
    assert len(r["latency_ms"]) == 180 and sorted(r["index"]) == list(range(180))
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["p999_ms"]
    # the server's own time per request (its Server-Timing header), inside the latency from the send
    own = r["server_ms"]
    assert len(own) == 180 and all(0 < s < lat for s, lat in zip(own, r["latency_ms"], strict=True))
    queue = r["server_queue_ms"]  # of which its wait in the batcher queue (Server-Timing's queue metric)
    assert len(queue) == 180 and all(0 <= q <= s for q, s in zip(queue, own, strict=True))
    call = r["server_call_ms"]  # and its batch's runtime call
    assert len(call) == 180 and all(0 < c <= s - q for c, q, s in zip(call, queue, own, strict=True))
    # the slowest 1% split into the server's part and the rest (180 requests: the slowest one's figures)
    slow = sorted(range(180), key=lambda i: r["latency_ms"][i])[-1:]
    assert r["tail_server_ms"] == pytest.approx(sum(own[i] for i in slow) / len(slow), abs=1e-3)
    assert r["tail_outside_ms"] == pytest.approx(sum(r["latency_ms"][i] - own[i] for i in slow), abs=1e-3)
    assert "slowest 1%:" in proc.stdout
    # the client's own CPU is measured (this process's CPU over the run), so a tail it caused can be named
    assert r["client_cpu_ms"] > 0 and 0 < r["client_busy"] < 1.5 and "client CPU" in proc.stdout
    assert r["verdict"] == "inconclusive"  # 180 requests cannot show p99 < 500 ms at 95%: honest, not lucky
    with urllib.request.urlopen(f"{server}/metrics", timeout=5) as m:
        assert 'optiserve_requests_total{status="200"}' in m.read().decode()


def test_gamma_arrivals_and_a_failing_verdict_exit_1(server: str, tmp_path: Path) -> None:
    proc = run_cli(
        "loadtest",
        server,
        "--model",
        "mlp",
        "--rate",
        "100",
        "--duration",
        "2",
        "--arrival",
        "gamma",
        "--cv",
        "3",
        "--p99-target-ms",
        "0.01",
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 1 and "FAIL" in proc.stdout and "Traceback" not in proc.stderr


def test_the_same_schedule_over_grpc(server: str, tmp_path: Path) -> None:
    """``--encoding grpc``: ``ModelInfer`` on Triton's stubs to the gRPC port, the same schedule and verdict."""
    out = tmp_path / "grpc.json"
    args = ["--model", "mlp", "--rate", "60", "--duration", "3", "--encoding", "grpc", "--grpc-port", str(GRPC_PORT)]
    proc = run_cli("loadtest", server, *args, "--json", str(out), cwd=tmp_path, timeout=120)
    assert out.is_file(), proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert proc.returncode == (0 if r["valid"] else 1), proc.stdout + proc.stderr
    assert r["scheduled"] == 180 and r["completed"] == 180 and r["errors"] == {}, r["errors"]
    assert 0 < r["p50_ms"] <= r["p99_ms"]
    own = r["server_ms"]  # the server's own time per call, from its server-timing trailer
    assert len(own) == 180 and all(0 < s < lat for s, lat in zip(own, r["latency_ms"], strict=True))
    assert all(0 <= q <= s for q, s in zip(r["server_queue_ms"], own, strict=True))  # the trailer's queue wait
    assert all(0 < c < s for c, s in zip(r["server_call_ms"], own, strict=True))  # and its batch's call
    with urllib.request.urlopen(f"{server}/v2/models/mlp/stats", timeout=5) as m:
        assert json.loads(m.read())["model_stats"][0]["inference_stats"]["success"]["count"] >= 180


def test_grpc_refusals_and_a_dead_grpc_port_are_counted_not_hidden(server: str, tmp_path: Path) -> None:
    """Every call to a port nothing listens on fails: counted by its gRPC code, error rate 100%, exit 1."""
    out = tmp_path / "dead.json"
    args = ["--model", "mlp", "--rate", "20", "--duration", "1", "--encoding", "grpc", "--grpc-port", str(_free_port())]
    proc = run_cli("loadtest", server, *args, "--json", str(out), cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["completed"] == 0 and r["error_rate"] == 1.0 and set(r["errors"]) <= {"UNAVAILABLE", "not sent"}


def test_bad_loadtest_input(tmp_path: Path) -> None:
    for args, message in [
        (("ftp://x", "--model", "m"), "not an http(s) URL"),
        (("http://127.0.0.1:9", "--model", "m", "--duration", "1"), "cannot reach"),
        (("http://127.0.0.1:9", "--model", "m", "--rate", "0"), "must be positive"),
        (("http://127.0.0.1:9", "--model", "m", "--arrival", "uniform"), "valid arrivals"),
        (("http://127.0.0.1:9", "--model", "m", "--arrival", "trace"), "--trace FILE"),
        (("http://127.0.0.1:9", "--model", "m", "--encoding", "grpc"), "--encoding grpc and --grpc-port"),
        (("http://127.0.0.1:9", "--model", "m", "--grpc-port", "8001"), "--encoding grpc and --grpc-port"),
        (("http://127.0.0.1:9", "--model", "m", "--encoding", "protobuf"), "valid: auto, json, binary, grpc"),
    ]:
        proc = run_cli("loadtest", *args, cwd=tmp_path, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_bad_serve_input(mlp_path: Path, tmp_path: Path) -> None:
    for args, message in [
        ((str(tmp_path / "none.onnx"),), "not found"),
        ((str(mlp_path), "--max-batch", "0"), "must be >= 1"),
        ((str(mlp_path), "--preferred", "2,x"), "malformed --preferred"),
        ((str(mlp_path), "--precision", "fp64"), "unknown precision"),
    ]:
        proc = run_cli("serve", *args, cwd=tmp_path, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def _tiny_profile(folder: Path) -> Path:
    """A two-row MLP profile written as optiserve writes one: enough for --predict-from."""
    from optiserve.profile.stats import summarize
    from optiserve.profile.store import ParquetStore
    from optiserve.types import BenchConfig, Measurement, Precision, Status

    store = ParquetStore(folder)
    store.create({"model": {"name": "mlp", "sha256": "0" * 64}, "hardware": {"id": "x"}})
    for b in (1, 8):
        ns = tuple(int(200_000 + 50_000 * b + i % 7 * 1000) for i in range(300))
        cfg = BenchConfig("onnxruntime-cpu", Precision.FP32, b, 1)
        store.append(Measurement(cfg, Status.OK, stats=summarize(ns), samples_ns=ns))
    return folder


def test_loadtest_records_the_prediction_for_its_own_schedule(server: str, tmp_path: Path) -> None:
    """--predict-from simulates the very schedule sent; --overhead-from adds a light run's measured overheads."""
    prof = _tiny_profile(tmp_path / "prof")
    bad = run_cli("loadtest", server, "--model", "mlp", "--predict-from", str(tmp_path / "nope"), cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    common = (
        "--model",
        "mlp",
        "--duration",
        "2",
        "--predict-from",
        str(prof),
        "--max-batch",
        "8",
        "--max-delay-ms",
        "2",
    )
    light = tmp_path / "light.json"
    proc = run_cli("loadtest", server, *common, "--rate", "20", "--json", str(light), cwd=tmp_path, timeout=120)
    r = json.loads(light.read_text())
    assert proc.returncode == (0 if r["valid"] else 1), proc.stdout + proc.stderr  # exit 1 only for a late client
    p = r["predicted"]
    assert 0 < p["p50_ms"] <= p["p99_ms"] and p["policy"]["max_batch"] == 8 and "same schedule" in p["source"]
    assert len(r["predicted_service_ms"]) == r["scheduled"]
    out = tmp_path / "r.json"
    proc = run_cli("loadtest", server, *common, "--rate", "40", "--json", str(out), "--overhead-from", str(light),
                   cwd=tmp_path, timeout=120)  # fmt: skip
    doc = json.loads(out.read_text())
    assert proc.returncode == (0 if doc["valid"] else 1), proc.stdout + proc.stderr
    calibrated = doc["predicted"]
    assert calibrated["calibrated"] and calibrated["p50_ms"] > 0
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"latency_ms": [1.0], "index": [0]}))
    proc = run_cli("loadtest", server, *common, "--rate", "40", "--overhead-from", str(plain), cwd=tmp_path)
    assert proc.returncode == 2 and "made with --predict-from" in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("header", "metric", "ms"),
    [
        ("infer;dur=1.25", "infer", 1.25),
        ("infer;desc=x;dur=0.5", "infer", 0.5),
        ("infer", "infer", None),
        ("infer;dur=abc", "infer", None),
        (None, "infer", None),
        ("app;dur=2.5", "infer", 2.5),  # another server's one metric is its time, whatever its name
        ("app;dur=2.5", "queue", None),
        ("infer;dur=1.25, queue;dur=0.25", "infer", 1.25),
        ("infer;dur=1.25, queue;dur=0.25", "queue", 0.25),
        ("infer;dur=1.25,queue;dur=x", "queue", None),
        ("db;dur=3, cache;dur=1", "infer", None),  # several metrics, none ours: unknown, not a guess
    ],
)
def test_server_timing_is_read_or_nan_never_an_error(header: str | None, metric: str, ms: float | None) -> None:
    """Another server's header, or none, leaves the request's server time unknown (NaN), not the run failed."""
    import math

    from optiserve.serve.loadtest import server_timing_ms

    got = server_timing_ms(header, metric)
    assert (math.isnan(got) and ms is None) or got == ms


def test_server_timing_header_round_trips() -> None:
    """What the server writes, the load test reads: its time and its queue wait (ms); an unknown wait is left out."""
    import math

    from optiserve.serve.server_timing import header_value, metric_ms

    value = header_value(0.0125, 0.002, 0.004)
    assert metric_ms(value) == 12.5 and metric_ms(value, "queue") == 2.0 and metric_ms(value, "call") == 4.0
    assert math.isnan(metric_ms(header_value(0.0125, math.nan), "queue"))
    assert metric_ms(header_value(0.001, -1e-6), "queue") == 0.0  # clocks a hair apart never give a negative wait
