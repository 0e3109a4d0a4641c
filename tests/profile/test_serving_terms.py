"""What the simulator takes from ``profile --serving``: which fixed term, and the per-row serving cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from optiserve.profile.serving import describe, serving_terms
from optiserve.types import BenchConfig, Measurement, Precision, Profile, Status


def _profile(serving: dict[str, object], b1_ms: float = 2.0) -> Profile:
    row = Measurement(
        BenchConfig("onnxruntime-cpu", Precision.FP32, 1, 1), Status.OK, samples_ns=(int(b1_ms * 1e6),) * 10
    )
    return Profile({"serving": serving}, (row,))


# a light open-loop run's figures (binary): the profiled batch-1 call is 2.0 ms, the served one 2.5 ms
OPEN_LOOP = {
    "encoding": "binary",
    "client_ms": 9.0,
    "server_ms": 4.0,
    "fixed_ms": 5.0,
    "frontend_ms": 0.8,
    "inference_ms": 2.5,
    "model_ms": 3.3,
    "requests": 200,
}
FIG = {"frontend_ms": 0.5, "fixed_ms": 0.3, "round_trip_ms": 3.5, "inference_ms": 2.6, "request_bytes": 10}


def test_the_load_test_clients_fixed_term_wins_for_its_encoding() -> None:
    client = {"encoding": "binary", "fixed_ms": 1.6, "client_ms": 9.0, "server_ms": 7.4, "requests": 200}
    terms = serving_terms(_profile({"threads": 1, "json": FIG, "binary": FIG, "client": client}), "binary")
    # open loop: 9.0 ms light-load latency - (0.5 front end + 2.6 batch-1 call) the simulator charges
    assert terms is not None and terms.fixed_s == pytest.approx(5.9e-3) and "open loop" in terms.fixed_from
    other = serving_terms(_profile({"threads": 1, "json": FIG, "binary": FIG, "client": client}), "json")
    assert other is not None and other.fixed_s == pytest.approx(0.3e-3) and "closed loop" in other.fixed_from
    older = {k: v for k, v in client.items() if k != "client_ms"}  # a profile that kept only the client's share
    kept = serving_terms(_profile({"threads": 1, "json": FIG, "binary": FIG, "client": older}), "binary")
    assert kept is not None and kept.fixed_s == pytest.approx(1.6e-3) and kept.fixed_from == "load-test client"


def test_the_servers_time_per_call_beyond_the_profiled_session_is_a_per_row_cost() -> None:
    terms = serving_terms(_profile({"threads": 1, "json": FIG}, b1_ms=2.0), "json")
    assert terms is not None and terms.per_row_s == pytest.approx(0.6e-3)
    faster = serving_terms(_profile({"threads": 1, "json": FIG}, b1_ms=3.0), "json")
    assert faster is not None and faster.per_row_s == 0.0  # never negative: noise, not a gain
    assert serving_terms(_profile({"error": "did not start"})) is None


def test_the_fixed_terms_measured_spread_is_kept_and_drawn_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mean fixed term hides the client's tail: the MLP's measured p99 was 8.3 ms against 5.4 predicted
    from the mean. The light run's quantiles are drawn per request instead, so the p99 feels them."""
    import numpy as np

    import optiserve.serve.prediction as prediction
    from optiserve.serve.prediction import ServedConfig, forecast, server_model

    spread = [2.0] * 95 + [6.0] * 6  # 101 quantiles: 5% of requests pay 6 ms outside the server
    short = {"encoding": "json", "client_ms": 5.3, "fixed_ms": 1.0, "overhead_quantiles_ms": spread, "requests": 200}
    terms = serving_terms(_profile({"threads": 1, "json": FIG, "client": short}), "json")
    assert terms is not None and terms.fixed_quantiles_s == ()  # 200 requests: too few for a tail, the mean
    client = {**short, "requests": 1000}
    terms = serving_terms(_profile({"threads": 1, "json": FIG, "client": client}), "json")
    assert terms is not None and len(terms.fixed_quantiles_s) == 101 and terms.fixed_quantiles_s[-1] == 6e-3
    assert "p99 6 ms" in terms.describe()
    prof = _profile({"threads": 1, "json": FIG, "client": client})
    monkeypatch.setattr(prediction, "load_profile", lambda path: prof)
    model = server_model(Path("p"), ServedConfig(max_batch=1, max_delay_ms=0.0), encoding="json")
    assert model.policy.fixed_s == 0.0 and model.fixed_quantiles_ms[-1] == 6.0  # drawn, not added as a mean
    schedule = np.arange(2000) * 0.1  # 10 req/s: never queues
    fc = forecast(schedule, Path("p"), ServedConfig(max_batch=1, max_delay_ms=0.0), encoding="json")
    assert fc.record["p99_ms"] > fc.record["p50_ms"] + 3.0  # the tail is in the p99


def test_on_a_shared_core_the_front_end_is_charged_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """The front end (gRPC's C core threads, REST's event loop) is a station of its own when the server
    has a core to spare (the batcher's instances run on threads of their own), charged per row on a
    core shared with inference."""
    import optiserve.serve.prediction as prediction
    from optiserve.serve.prediction import ServedConfig, server_model

    grpc = {**FIG, "frontend_ms": 0.5}
    prof = _profile({"threads": 1, "json": FIG, "grpc": grpc})
    monkeypatch.setattr(prediction, "load_profile", lambda path: prof)
    apart = server_model(Path("p"), ServedConfig(max_batch=1, server_cpus=2), encoding="grpc")
    shared = server_model(Path("p"), ServedConfig(max_batch=1, server_cpus=1), encoding="grpc")
    assert apart.policy.frontend_s == pytest.approx(0.5e-3) and shared.policy.frontend_s == 0.0
    gained = shared.service.capacity(1, 1) ** -1 - apart.service.capacity(1, 1) ** -1
    assert gained == pytest.approx(0.5e-3, rel=1e-3)  # the front end's 0.5 ms now on the inference station
    assert "front end on the inference core" in shared.basis
    rest = server_model(Path("p"), ServedConfig(max_batch=1, server_cpus=2), encoding="json")
    assert rest.policy.frontend_s == pytest.approx(FIG["frontend_ms"] * 1e-3)
    rest_shared = server_model(Path("p"), ServedConfig(max_batch=1, server_cpus=1), encoding="json")
    assert rest_shared.policy.frontend_s == 0.0 and "front end on the inference core" in rest_shared.basis
    assert rest_shared.service.capacity(1, 1) < rest.service.capacity(1, 1)


def test_grpc_has_its_own_terms_and_an_older_profile_falls_back_to_binary() -> None:
    """gRPC's front end is measured apart (its calls cost the server ~3x a REST request); a profile
    from before that measured only REST: a gRPC plan then takes the binary (raw tensor) terms, and says so."""
    grpc = {**FIG, "frontend_ms": 1.5, "server_cpu_ms": 4.1}
    client = {"encoding": "grpc", "fixed_ms": 2.0, "client_ms": 7.0, "server_ms": 5.0, "requests": 200}
    terms = serving_terms(
        _profile({"threads": 1, "json": FIG, "binary": FIG, "grpc": grpc, "client_grpc": client}), "grpc"
    )
    assert terms is not None and terms.encoding == "grpc" and terms.frontend_s == pytest.approx(1.5e-3)
    assert terms.fixed_s == pytest.approx((7.0 - 1.5 - 2.6) * 1e-3) and "open loop" in terms.fixed_from
    older = serving_terms(_profile({"threads": 1, "json": FIG, "binary": FIG}), "grpc")
    assert older is not None and older.encoding == "binary" and "(binary;" in older.describe()
    failed = serving_terms(_profile({"threads": 1, "json": FIG, "binary": FIG, "grpc": {"error": "x"}}), "grpc")
    assert failed is not None and failed.encoding == "binary"


def test_the_servers_own_figures_under_the_light_open_loop_run_set_its_cost_per_call() -> None:
    """Between open-loop requests the session runs slower than back to back (cold caches, the client
    beside it): what the server's batch-1 call in the light run takes beyond the profiled one is paid once
    per batch, the front end is the cheaper of back to back and the light run (its cost per request
    falls with load), and the fixed term is what is left beyond the light run's own figures."""
    client = dict(OPEN_LOOP)
    terms = serving_terms(_profile({"threads": 1, "json": FIG, "binary": FIG, "client": client}), "binary")
    assert terms is not None and terms.per_call_s == pytest.approx(0.5e-3) and terms.per_row_s == 0.0
    assert terms.frontend_s == pytest.approx(0.5e-3) and terms.fixed_s == pytest.approx(5.7e-3)  # 0.5 back to back
    assert "+ 0.5 ms per call" in terms.describe()
    cheaper = {**client, "frontend_ms": 0.3}  # the light run's front end below the closed loop's: that one
    low = serving_terms(_profile({"threads": 1, "json": FIG, "binary": FIG, "client": cheaper}), "binary")
    assert low is not None and low.frontend_s == pytest.approx(0.3e-3)
    stalled = {**client, "inference_ms": 40.0}  # a stall, not the session: capped
    capped = serving_terms(_profile({"threads": 1, "json": FIG, "binary": FIG, "client": stalled}), "binary")
    assert capped is not None and capped.per_call_s == pytest.approx(6e-3)  # 3 profiled calls at most
    older = {k: v for k, v in client.items() if k not in ("inference_ms", "model_ms", "frontend_ms")}
    before = serving_terms(_profile({"threads": 1, "json": FIG, "binary": FIG, "client": older}), "binary")
    assert before is not None and before.per_call_s == 0.0 and before.per_row_s == pytest.approx(0.6e-3)


def test_show_says_what_the_server_took_under_the_light_open_loop_run() -> None:
    from optiserve.profile.serving import describe

    client = {"encoding": "binary", "fixed_ms": 2.0, "inference_ms": 2.5, "frontend_ms": 0.8, "model_ms": 3.3}
    line = describe({"serving": {"json": FIG, "binary": FIG, "client": {**client, "requests": 700}}})
    assert line is not None and "light open-loop load (700 requests)" in line and "batch-1 call 2.5 ms" in line
    older = describe({"serving": {"json": FIG, "client": {"encoding": "json", "fixed_ms": 2.0}}})
    assert older is not None and "open-loop" not in older


def test_the_served_calls_spread_scales_the_simulated_calls_and_the_fixed_term_keeps_the_rest() -> None:
    """With each request's queue wait and call in its Server-Timing, the light run's calls over their mean
    spread the simulated calls (a slow call delays the requests behind it), and
    the fixed term's spread is shifted so the light run's mean latency is what the simulator gives back:
    its latency less the queue wait and the front end + call it charges (counted once, not twice)."""
    import numpy as np

    from optiserve.estimate.served import served_path
    from optiserve.estimate.service import ServiceModel

    factors = [0.8] * 90 + [1.0] * 6 + [3.0] * 5  # 101 quantiles: 5% of requests took 3x the mean
    outside = [1.0] * 101
    client = {
        "encoding": "binary",
        "client_ms": 9.0,
        "server_ms": 4.0,
        "fixed_ms": 5.0,
        "frontend_ms": 0.5,
        "inference_ms": 2.5,
        "model_ms": 3.3,
        "queue_ms": 0.2,
        "overhead_quantiles_ms": outside,
        "call_factors": factors,
        "requests": 1000,
    }
    terms = serving_terms(_profile({"threads": 1, "json": FIG, "binary": FIG, "client": client}), "binary")
    assert terms is not None and terms.call_factors == tuple(factors)
    charged = 0.5 + 2.5  # front end (the cheaper of back to back and the light run) + the light run's call
    want = 9.0 - 0.2 - charged
    assert terms.fixed_s == pytest.approx(want * 1e-3)
    assert np.mean(terms.fixed_quantiles_s) == pytest.approx(want * 1e-3)  # the spread's mean is the fixed term
    assert "calls spread as served (p99 x3" in terms.describe()
    service = ServiceModel({1: np.full(50, 2e-3), 4: np.full(50, 5e-3)})
    served, _ = served_path(service, terms, 4, 0.0, 1)
    for b in (1, 4):
        s = served.samples[b]
        base = service.samples[b][0] + terms.per_call_s
        assert float(np.mean(s)) == pytest.approx(base)  # the mean as measured
        assert float(np.quantile(s, 0.99)) > 2.0 * base  # the served tail is the calls' own now
    older = {k: v for k, v in client.items() if k not in ("call_factors", "queue_ms")}
    kept = serving_terms(_profile({"threads": 1, "json": FIG, "binary": FIG, "client": older}), "binary")
    assert kept is not None and kept.call_factors == () and kept.fixed_quantiles_s[0] == 1e-3  # as recorded


def test_a_loaded_client_run_gives_the_fixed_terms_spread_a_second_load() -> None:
    """``client_loaded`` (the same client at 10% of saturation) is made as the light run's spread is (its
    latency less its queue wait and what the simulator charges it), and the two form the spread's curve."""
    import numpy as np

    light = {
        "encoding": "binary",
        "client_ms": 9.0,
        "frontend_ms": 0.5,
        "inference_ms": 2.5,
        "model_ms": 3.3,
        "queue_ms": 0.2,
        "overhead_quantiles_ms": [1.0] * 101,
        "call_factors": [1.0] * 101,
        "requests": 1000,
        "rate": 100.0,
    }
    loaded = {**light, "client_ms": 7.0, "queue_ms": 0.5, "rate": 800.0, "requests": 2400}
    serving = {"threads": 1, "json": FIG, "binary": FIG, "client": light, "client_loaded": loaded}
    terms = serving_terms(_profile(serving), "binary")
    assert terms is not None and [r for r, _ in terms.fixed_curve] == [100.0, 800.0]
    charged = 0.5 + 2.5  # the front end and the light run's call, charged at every rate
    assert np.mean(terms.fixed_curve[0][1]) == pytest.approx((9.0 - 0.2 - charged) * 1e-3)
    assert np.mean(terms.fixed_curve[1][1]) == pytest.approx((7.0 - 0.5 - charged) * 1e-3)
    assert terms.fixed_curve[0][1] == terms.fixed_quantiles_s and "at 800" in terms.describe()
    from optiserve.estimate import ServiceModel
    from optiserve.estimate.served import served_path

    _, policy = served_path(ServiceModel({1: np.full(10, 2e-3)}), terms, 1, 0.0, 1)
    assert policy.fixed_spread_curve == terms.fixed_curve  # what the planner and verify simulate
    # too short for a tail, or in another encoding: the light run's spread at every rate
    for other in ({**loaded, "requests": 100}, {**loaded, "encoding": "json"}):
        one = serving_terms(_profile({**serving, "client_loaded": other}), "binary")
        assert one is not None and one.fixed_curve == () and one.fixed_quantiles_s == terms.fixed_quantiles_s


def test_jitter_keeps_the_mean_and_no_factors_keep_the_model() -> None:
    import numpy as np

    from optiserve.estimate.service import ServiceModel

    service = ServiceModel({1: np.linspace(1e-3, 2e-3, 30)})
    assert service.jittered(()) is service and service.jittered((float("nan"), 1.0)) is service
    wide = service.jittered((0.5, 1.0, 1.5))
    assert float(np.mean(wide.samples[1])) == pytest.approx(float(np.mean(service.samples[1])))
    assert float(np.std(wide.samples[1])) > float(np.std(service.samples[1]))
    assert np.array_equal(wide.samples[1], service.jittered((0.5, 1.0, 1.5)).samples[1])  # seeded: one plan, one answer
    # quantiles are drawn through their inverse CDF: the top one (a single request's) is not 1 draw in 101
    flat = ServiceModel({1: np.full(10, 1e-3)}).jittered((1.0,) * 100 + (50.0,))
    assert float(np.mean(flat.samples[1] > 40 * np.median(flat.samples[1]))) < 0.005  # 1 in 101 would be 0.0099


def test_the_front_end_costs_what_the_loop_spends_per_request_under_load() -> None:
    """A lone request costs the event loop far more than one among many (the MLP's JSON front end on a
    Sapphire Rapids guest: 0.35 ms of the loop's CPU at 380 req/s, 0.14 ms at 6,750 req/s, where the
    light figure capped the simulated server at 4,246 req/s). The saturating run's figure is the front
    end; the lone request's extra moves into the fixed term, so a light load is predicted as before."""
    client = dict(OPEN_LOOP)
    loaded = {**FIG, "saturated": {"rate": 900.0, "loop_cpu_ms": 0.2}}
    light = serving_terms(_profile({"threads": 1, "json": FIG, "binary": FIG, "client": client}), "binary")
    heavy = serving_terms(_profile({"threads": 1, "json": FIG, "binary": loaded, "client": client}), "binary")
    assert light is not None and heavy is not None
    assert light.frontend_s == pytest.approx(0.5e-3) and heavy.frontend_s == pytest.approx(0.2e-3)
    assert heavy.fixed_s + heavy.frontend_s == pytest.approx(light.fixed_s + light.frontend_s)
    failed = {**FIG, "saturated": {"error": "the saturating run failed: x"}}  # the light figure stands
    kept = serving_terms(_profile({"threads": 1, "json": FIG, "binary": failed, "client": client}), "binary")
    assert kept is not None and kept.frontend_s == pytest.approx(0.5e-3)


def test_the_other_rest_encodings_light_run_is_its_own() -> None:
    """A model whose clients send JSON also gets binary's light run (``client_binary``): a binary load
    (perf_analyzer's) is then predicted from its own open-loop figures, not the closed loop's."""
    json_run = {"encoding": "json", "client_ms": 5.0, "fixed_ms": 1.0, "requests": 200}
    binary_run = {"encoding": "binary", "client_ms": 4.0, "fixed_ms": 0.5, "requests": 200}
    prof = _profile({"threads": 1, "json": FIG, "binary": FIG, "client": json_run, "client_binary": binary_run})
    binary = serving_terms(prof, "binary")
    assert binary is not None and "open loop" in binary.fixed_from
    assert binary.fixed_s == pytest.approx((4.0 - 0.5 - 2.6) * 1e-3)
    js = serving_terms(prof, "json")
    assert js is not None and js.fixed_s == pytest.approx((5.0 - 0.5 - 2.6) * 1e-3)


def test_the_front_end_follows_the_load_on_its_open_loop_curve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured open loop, the loop's CPU per request falls with the rate (the MLP's JSON front end on a
    Sapphire Rapids guest, max batch 1: 0.47 ms at 340 req/s, 0.25 ms at 3,040). The simulator reads
    the curve at each replica's rate; the saturated closed loop (cheaper back to back) is not on it.
    The light run's requests
    are charged the curve at its rate, so its latency is predicted as measured."""
    import optiserve.serve.prediction as prediction
    from optiserve.serve.prediction import ServedConfig, server_model

    points = [
        {"rate": 100.0, "loop_cpu_ms": 0.9, "beyond_calls_ms": 1.0},
        {"rate": 300.0, "loop_cpu_ms": 0.6, "beyond_calls_ms": 0.7},
        {"rate": 500.0, "loop_cpu_ms": 0.4, "beyond_calls_ms": 0.45},
    ]
    # a point the server did not keep up with says why and is on no curve
    gone = {"rate": 700.0, "left_out": "12 of 1400 refused (503 or connection)"}
    sat = {"rate": 900.0, "loop_cpu_ms": 0.2, "beyond_calls_ms": 0.25}
    fig = {**FIG, "open_loop": [*points, gone], "saturated": sat}
    client = {**OPEN_LOOP, "rate": 100.0}
    prof = _profile({"threads": 1, "json": FIG, "binary": fig, "client": client})
    terms = serving_terms(prof, "binary")
    assert terms is not None
    assert terms.frontend_curve == ((100.0, 0.9e-3), (300.0, 0.6e-3), (500.0, 0.4e-3))
    assert terms.shared_curve == ((100.0, 1e-3), (300.0, 0.7e-3), (500.0, 0.45e-3))
    assert terms.frontend_s == pytest.approx(0.4e-3)  # the cheapest: what bounds the station's capacity
    # the light run's model time holds a lone request's front end (0.5 ms, the cheaper of the light run's
    # and the closed loop's); the simulator charges the curve's 0.9 ms there: the fixed term gives it back
    assert terms.fixed_s == pytest.approx((9.0 - (3.3 - 0.5 + 0.9)) * 1e-3)
    assert "0.9 ms at 100 req/s to 0.4 ms at 500" in terms.describe()
    assert "0.9 ms at 100 req/s to 0.4 at 500 open loop" in describe({"serving": {"threads": 1, "binary": fig}})
    monkeypatch.setattr(prediction, "load_profile", lambda path: prof)
    apart = server_model(Path("p"), ServedConfig(max_batch=1, server_cpus=2), encoding="binary").policy
    assert apart.frontend_s == pytest.approx(0.4e-3) and not apart.frontend_per_row
    halfway = (100.0 * 300.0) ** 0.5  # in log rate, between the first two points
    assert apart.frontend_s + apart.frontend_extra_at(halfway) == pytest.approx(0.75e-3)
    shared = server_model(Path("p"), ServedConfig(max_batch=1, server_cpus=1), encoding="binary")
    assert shared.policy.frontend_per_row and shared.policy.frontend_s == 0.0
    assert shared.policy.frontend_extra_at(100.0) == pytest.approx(0.55e-3)  # 1.0 less the 0.45 per row
    # one open-loop point is no curve: the saturated figure stands, as before
    one = _profile({"threads": 1, "binary": {**fig, "open_loop": points[:1]}, "client": client})
    lone = serving_terms(one, "binary")
    assert lone is not None and lone.frontend_curve == () and lone.frontend_s == pytest.approx(0.2e-3)
    # moved to a slower clock, the curve's costs scale with the rest of the server's own work
    slow = terms.scaled(2.0)
    assert slow.frontend_curve[0] == (100.0, pytest.approx(1.8e-3)) and slow.fixed_s == terms.fixed_s
