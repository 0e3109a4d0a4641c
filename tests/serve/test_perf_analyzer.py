"""Triton's own load generator, ``perf_analyzer``, drives ``optiserve serve`` over HTTP and gRPC.

perf_analyzer reads the model's config (``/v2/models/{m}/config``, gRPC
``ModelConfig``), fills every input with its default random data (which can
make the CNN's outputs NaN), checks the server's statistics add up, and exits
non-zero when a request fails. Provisioned by ``make perf_analyzer``
(``scripts/perf_analyzer.sh``); skipped, saying so, where it is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from optiserve._oip_client import free_port, stop_server, wait_until_ready
from optiserve.models.zoo import build_zoo

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("OPTISERVE_PERF_ANALYZER", REPO / ".venv" / "perf_analyzer" / "perf_analyzer"))

pytestmark = pytest.mark.skipif(
    not os.access(BINARY, os.X_OK),
    reason=f"perf_analyzer is not provisioned at {BINARY}: run `make perf_analyzer` (scripts/perf_analyzer.sh)",
)


@dataclass(frozen=True)
class Server:
    http: int
    grpc: int


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    (cnn,) = build_zoo(tmp_path_factory.mktemp("pa"), ["cnn"])
    http, grpc = free_port(), free_port()
    args = ["serve", str(cnn), "--port", str(http), "--grpc-port", str(grpc), "--max-batch", "4", "--max-delay-ms", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "optiserve", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        if not wait_until_ready(f"http://127.0.0.1:{http}", timeout_s=180):
            proc.kill()
            pytest.fail(f"optiserve serve did not get ready: {proc.communicate()[0][-2000:]}")
        yield Server(http, grpc)
    finally:
        stop_server(proc)


def _stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/cnn/stats", timeout=10) as r:
        (entry,) = json.loads(r.read())["model_stats"]
    return {k: int(v["count"]) for k, v in entry["inference_stats"].items()}


@pytest.mark.parametrize(
    "mode", [["--concurrency-range", "2"], ["--request-rate-range", "30"]], ids=["concurrency", "rate"]
)
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_runs_without_errors(server: Server, protocol: str, mode: list[str], tmp_path: Path) -> None:
    port = server.http if protocol == "http" else server.grpc
    before = _stats(server.http)
    report = tmp_path / "pa.csv"
    window = ["--measurement-interval", "1500", "--stability-percentage", "100", "--max-trials", "3"]
    cmd = [str(BINARY), "-m", "cnn", "-i", protocol, "-u", f"127.0.0.1:{port}", *mode, *window, "-f", str(report)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "error" not in output.lower(), output[-3000:]
    header, row = report.read_text().splitlines()[:2]
    throughput = float(dict(zip(header.split(","), row.split(","), strict=False))["Inferences/Second"])
    assert throughput > 0, report.read_text()
    after = _stats(server.http)  # gRPC and HTTP requests count in the one model's statistics
    assert after["fail"] == before["fail"], (before, after)
    assert after["success"] > before["success"]
    assert len({after[s] for s in ("success", "queue", "compute_input", "compute_infer", "compute_output")}) == 1
