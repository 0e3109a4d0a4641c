"""Input drift on real servers: a shifted feature or channel moves its PSI past 0.2, unshifted ones stay below 0.1,
whichever front end (REST, gRPC) carried the requests; ``optiserve drift`` reads a live URL and a saved dump."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from optiserve._oip_client import free_port
from optiserve.cli.drift import Exported, parse_metrics
from optiserve.models.graph import inspect_model
from optiserve.models.layout import infer_layout
from optiserve.models.zoo import build_zoo
from optiserve.profile.reference import build_reference, load_reference, reference_for
from optiserve.serve.app import ServeConfig, app_for_model
from optiserve.serve.drift import DriftMonitor, DriftSettings
from optiserve.serve.grpc_server import GrpcSettings
from optiserve.types import InputLayout, TensorLayout
from tests.conftest import profile_cli, run_cli
from tests.serve.live_server import live_server

FAST = DriftSettings(rows_per_s=1e6)  # every row observed: the test decides how many


@pytest.fixture(scope="module")
def profile_dir(mlp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("drift") / "prof"
    proc = profile_cli(mlp_path, out, "--batch", "1", cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return out


def _scrape(port: int) -> tuple[str, Exported]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return text, parse_metrics(text, "server")


def _psi(exported: Exported) -> dict[str, float]:
    return {s.group: s.psi for s in exported.scored if s.psi is not None}


def test_shifted_feature_moves_over_rest_and_grpc(mlp_path: Path, profile_dir: Path, tmp_path: Path) -> None:
    grpc_port = free_port()
    app = app_for_model(
        mlp_path,
        "fp32",
        1,
        ServeConfig("mlp", max_batch=8, max_delay_ms=1.0),
        grpc=GrpcSettings(grpc_port),
        drift=DriftMonitor(load_reference(profile_dir), FAST),
    )
    rng = np.random.default_rng(7)  # not the reference's seed: fresh samples of the same distribution
    with live_server(app) as port:
        rest = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        for _ in range(150):  # 1200 unshifted rows over REST
            x = httpclient.InferInput("features", [8, 64], "FP32")
            x.set_data_from_numpy(rng.standard_normal((8, 64)).astype(np.float32), binary_data=True)
            rest.infer("mlp", [x])
        _, before = _scrape(port)
        assert {s.values for s in before.scored} == {1200}
        assert before.synthetic and len(_psi(before)) == 64
        assert max(_psi(before).values()) < 0.1

        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        for _ in range(150):  # 1200 more over gRPC, feature 3 moved by two reference standard deviations
            batch = rng.standard_normal((8, 64)).astype(np.float32)
            batch[:, 3] += 2.0
            x = grpcclient.InferInput("features", [8, 64], "FP32")
            x.set_data_from_numpy(batch)
            grpc.infer("mlp", [x])
        text, after = _scrape(port)
        scores = _psi(after)
        assert scores.pop("f3") > 0.2
        assert max(scores.values()) < 0.1
        shift = next(s.shift for s in after.scored if s.group == "f3")
        assert shift == pytest.approx(1.0, abs=0.2)  # half the window moved by 2 sd

        live = run_cli("drift", f"http://127.0.0.1:{port}", "--profile", str(profile_dir), cwd=tmp_path)
    assert live.returncode == 0, live.stderr
    moved = [line for line in live.stdout.splitlines() if "MOVED" in line]
    assert len(moved) == 1 and " f3 " in moved[0], live.stdout
    assert "SYNTHETIC" in live.stdout and "63 groups" in live.stdout
    assert "scores against reference" not in live.stderr  # the profile named is the server's reference

    dump = tmp_path / "metrics.txt"
    dump.write_text(text)
    saved = run_cli("drift", str(dump), "--profile", str(profile_dir), "--fail-on-drift", cwd=tmp_path)
    assert saved.returncode == 1, saved.stderr
    assert [line for line in saved.stdout.splitlines() if "MOVED" in line] == moved


def test_shifted_channel_moves_on_the_cnn(tmp_path: Path) -> None:
    (cnn,) = build_zoo(tmp_path, ["cnn"])
    info = inspect_model(cnn)
    ref = reference_for(info, infer_layout(info), None, seed=0)
    app = app_for_model(cnn, "fp32", 1, ServeConfig("cnn", max_batch=2), drift=DriftMonitor(ref, FAST))
    rng = np.random.default_rng(8)
    with live_server(app) as port:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        for _ in range(4):  # 8 images: 256 sampled pixels per channel each
            images = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
            images[:, 1] += 2.0
            x = httpclient.InferInput("pixels", list(images.shape), "FP32")
            x.set_data_from_numpy(images, binary_data=True)
            client.infer("cnn", [x])
        _, exported = _scrape(port)
    scores = _psi(exported)
    assert set(scores) == {"c0", "c1", "c2"}
    assert scores["c1"] > 0.2 > 0.1 > max(scores["c0"], scores["c2"])


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def monitor() -> Iterator[tuple[DriftMonitor, Clock]]:
    layout = InputLayout((TensorLayout("x", "float32", (1, 4), 0),))
    ref = build_reference({"x": np.random.default_rng(0).standard_normal((4096, 4))}, layout, "t", synthetic=False)
    clock = Clock()
    yield DriftMonitor(ref, DriftSettings(window_s=60, slices=6, rows_per_s=100), clock), clock


def _state_bytes(m: DriftMonitor) -> int:
    return sum(w.bins.nbytes + w.n.nbytes + w.sum.nbytes + w.sumsq.nbytes for w in m._windows.values())


def test_rows_per_second_budget_and_fixed_memory(monitor: tuple[DriftMonitor, Clock]) -> None:
    m, clock = monitor
    size = _state_bytes(m)
    rng = np.random.default_rng(1)
    m.observe({"x": rng.standard_normal((1000, 4)).astype(np.float32)})  # a burst: 100 rows admitted
    m.observe({"x": rng.standard_normal((1000, 4)).astype(np.float32)})  # nothing left this second
    assert {g.values for g in m.report()} == {100}
    clock.t += 0.5
    m.observe({"x": rng.standard_normal((1000, 4)).astype(np.float32)})  # half a second refills 50
    assert {g.values for g in m.report()} == {150}
    assert _state_bytes(m) == size  # counts, never samples


def test_the_window_slides(monitor: tuple[DriftMonitor, Clock]) -> None:
    m, clock = monitor
    rng = np.random.default_rng(2)
    for _ in range(5):
        m.observe({"x": rng.standard_normal((100, 4)).astype(np.float32) + 3})
        clock.t += 1.0
    assert min(g.psi or 0.0 for g in m.report()) > 0.2
    clock.t += 61.0  # the shifted traffic has left the window
    assert {g.values for g in m.report()} == {0} and all(g.psi is None for g in m.report())
    for _ in range(5):
        m.observe({"x": rng.standard_normal((100, 4)).astype(np.float32)})
        clock.t += 1.0
    assert max(g.psi or 1.0 for g in m.report()) < 0.1


def test_bad_input_is_one_line(mlp_path: Path, profile_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.txt").write_text("this is { not metrics\n")
    (tmp_path / "plain.txt").write_text("# HELP up Up\n# TYPE up gauge\nup 1\n")
    cases = [
        (["serve", str(mlp_path), "--reference", str(tmp_path / "missing")], "no profile in"),
        (["drift", str(tmp_path / "nope.txt")], "no such metrics dump"),
        (["drift", str(tmp_path / "junk.txt")], "not Prometheus metrics text"),
        (["drift", str(tmp_path / "plain.txt")], "--reference PROFILE_DIR"),
        (["drift", f"http://127.0.0.1:{free_port()}"], "cannot read"),
    ]
    for args, message in cases:
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
