"""``optiserve verify``: the plan's serving configuration run here, predicted against measured."""

from __future__ import annotations

import json
from pathlib import Path

from optiserve.profile.store import load_profile
from tests.conftest import profile_cli, run_cli


def test_verify_runs_the_plans_server_at_its_rates(mlp_path: Path, tmp_path: Path) -> None:
    prof = tmp_path / "prof"
    assert profile_cli(mlp_path, prof, "--batch", "1,4", "--serving", cwd=tmp_path).returncode == 0
    serving = load_profile(prof).meta["serving"]  # the server's own cost, measured through optiserve serve
    for enc in ("json", "binary"):
        assert serving[enc]["frontend_ms"] > 0 and serving[enc]["fixed_ms"] >= 0, serving
        assert serving[enc]["round_trip_ms"] >= serving[enc]["frontend_ms"] + serving[enc]["inference_ms"]
    grpc = serving["grpc"]  # tritonclient.grpc: the front end is the server's CPU per call beyond the batch-1 call
    assert grpc["frontend_ms"] > 0 and grpc["server_cpu_ms"] > grpc["frontend_ms"], grpc
    assert serving["client_grpc"]["encoding"] == "grpc" and serving["client_grpc"]["requests"] > 0
    client = serving["client"]  # the load test's own client, measured at light load
    # and again under load (10% of saturation, at most 10 light rates): the fixed term's second point
    loaded = serving["client_loaded"]
    assert loaded["encoding"] == client["encoding"] and loaded["rate"] >= 2 * client["rate"], loaded
    assert loaded["requests"] >= client["requests"] and len(loaded["overhead_quantiles_ms"]) == 101, loaded
    assert client["encoding"] == "json" and client["requests"] > 0 and client["fixed_ms"] >= 0, client
    assert client["client_ms"] >= client["server_ms"] > 0
    # the spread is each request's latency less its own wait in the batcher queue and its batch's call
    # (Server-Timing): the queueing is the simulator's to add, and the calls' spread becomes the simulated
    # calls' own (a slow call delays the requests behind it)
    # the other REST encoding's light run too (perf_analyzer sends binary), and each REST encoding's
    # saturating closed loop: the event loop's CPU per request under load, far below a lone request's
    assert serving["client_binary"]["encoding"] == "binary" and serving["client_binary"]["requests"] > 0
    for enc in ("json", "binary"):
        sat = serving[enc]["saturated"]
        assert sat["rate"] > 0 and 0 < sat["loop_cpu_ms"] < serving[enc]["server_cpu_ms"], sat
        assert 0 < sat["beyond_calls_ms"] <= sat["cpu_ms"], sat
        # open loop at the light run's rate and shares of the saturated one: the front end's cost per load
        points = [p for p in serving[enc]["open_loop"] if "left_out" not in p]  # the rest say why they are not
        assert all(p["left_out"] for p in serving[enc]["open_loop"] if "left_out" in p)
        assert len(points) >= 2 and [p["rate"] for p in points] == sorted(p["rate"] for p in points), points
        assert all(p["requests"] > 0 and p["loop_cpu_ms"] > 0 and p["beyond_calls_ms"] > 0 for p in points), points
    for c in (client, serving["client_binary"], serving["client_grpc"]):
        assert c["outside_from"].startswith("server-timing (less each request's queue wait and call"), c
        assert c["overhead_quantiles_ms"][0] >= 0 and c["model_ms"] > 0 and c["queue_ms"] >= 0, c
        f = c["call_factors"]
        assert len(f) == 101 and f[0] <= 1.0 <= f[-1] and f == sorted(f), c
    (tmp_path / "sla.yaml").write_text(
        "defaults:\n  regions: [EU]\nmodels:\n  mlp:\n    rate: 60\n    peak_factor: 1.5\n    p99_ms: 200\n"
        "    encoding: binary\n"  # the clients send binary tensors: the plan charges that encoding's cost
    )
    plan = tmp_path / "plan.json"
    args = ["plan", "--sla", "sla.yaml", "--profile", f"mlp={prof}", "-o", str(plan), "--trials", "20"]
    assert run_cli(*args, "--requests", "2000", cwd=tmp_path).returncode == 0
    basis = json.loads(plan.read_text())["models"][0]["chosen"]["provenance"]["latency_basis"]
    assert "server front end" in basis and "(binary;" in basis, basis  # the server that gets deployed, binary
    assert json.loads(plan.read_text())["models"][0]["chosen"]["client_encoding"] == "binary"
    missing = run_cli("verify", str(plan), cwd=tmp_path)
    assert missing.returncode == 2 and "give --model mlp=FILE" in missing.stderr and "Traceback" not in missing.stderr
    other = run_cli("verify", str(plan), "--model", f"mlp={plan}", cwd=tmp_path)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    out = tmp_path / "v"
    proc = run_cli("verify", str(plan), "--model", f"mlp={mlp_path}", "--duration", "2", "-o", str(out), cwd=tmp_path)
    doc = json.loads((out / "verify.json").read_text())
    assert proc.returncode == (1 if doc["verdict"] == "fail" else 0), proc.stdout + proc.stderr
    (m,) = doc["models"]
    chosen = json.loads(plan.read_text())["models"][0]["chosen"]
    assert m["planned_on"].endswith(chosen["instance_type"]) and "--expect-sha256" in m["server_args"]
    assert m["warm_up"].startswith("2 s at the first rate")  # a server in steady state is what the plan promises
    assert [r["load"] for r in m["rates"]] == ["target", "peak"]
    for r in m["rates"]:
        assert r["requests"] == round(r["rate"] * 2) or abs(r["requests"] - r["rate"] * 2) <= 1
        assert r["error_rate"] == 0.0 and r["measured"]["p99_ms"] > 0 and r["predicted"]["p99_ms"] > 0
        assert 0 < r["measured"]["client_busy"] < 1.5  # the client says how busy it was: a tail it caused is named
        assert r["p99_error"] is not None and r["verdict"] in ("pass", "fail", "inconclusive")
        lo, hi = r["measured"]["p99_ci_ms"]  # a short run cannot bound the p99 from above: None, not a number
        assert lo is not None and lo <= r["measured"]["p99_ms"] and (hi is None or hi >= r["measured"]["p99_ms"])
        assert "block bootstrap" in r["measured"]["p99_ci_method"]  # stalls widen it: latencies are not iid
        want = r["predicted"]["p99_ms"]
        assert r["prediction_within_ci"] is (lo <= want and (hi is None or want <= hi))
        # the server's own mean call and rows per call beside the simulator's: which side moved
        own, pred = r["server"], r["predicted"]
        assert own["mean_call_ms"] > 0 and own["mean_batch"] >= 1 and own["mean_frontend_ms"] > 0, own
        assert pred["mean_call_ms"] > 0 and 1 <= pred["mean_batch"] <= chosen["max_batch"], pred
    raw = json.loads((out / "mlp-target.json").read_text())
    assert raw["predicted"]["serving_terms"] == "measured by profile --serving"
    assert "(binary;" in raw["predicted"]["serving_basis"]  # verify loads with the plan's encoding
    assert "p99 measured" in proc.stdout and "predicted" in proc.stdout and "the server's mean call" in proc.stdout

    # clients that speak gRPC: the plan charges gRPC's measured front end, verify loads over gRPC
    (tmp_path / "sla.yaml").write_text((tmp_path / "sla.yaml").read_text().replace("binary", "grpc"))
    assert run_cli(*args, "--requests", "2000", cwd=tmp_path).returncode == 0
    chosen = json.loads(plan.read_text())["models"][0]["chosen"]
    assert chosen["client_encoding"] == "grpc" and "(grpc;" in chosen["provenance"]["latency_basis"]
    out = tmp_path / "vg"
    proc = run_cli("verify", str(plan), "--model", f"mlp={mlp_path}", "--duration", "2", "-o", str(out), cwd=tmp_path)
    doc = json.loads((out / "verify.json").read_text())
    assert proc.returncode == (1 if doc["verdict"] == "fail" else 0), proc.stdout + proc.stderr
    (m,) = doc["models"]
    assert "--grpc-port" in m["server_args"]
    for r in m["rates"]:
        assert r["error_rate"] == 0.0 and r["measured"]["p99_ms"] > 0 and r["predicted"]["p99_ms"] > 0
    assert "(grpc;" in json.loads((out / "mlp-target.json").read_text())["predicted"]["serving_basis"]
