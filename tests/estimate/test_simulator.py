import math
from pathlib import Path

import numpy as np
import pytest

from optiserve.errors import UsageError
from optiserve.estimate import (
    BatchingPolicy,
    ServiceModel,
    gamma_arrivals,
    max_rate_for_p99,
    poisson_arrivals,
    simulate,
    trace_arrivals,
)

MU = 1000.0  # service rate, per second


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_mm1_mean_wait(rho: float) -> None:
    svc = ServiceModel({1: np.random.default_rng(0).exponential(1 / MU, 400_000)})
    r = simulate(poisson_arrivals(rho * MU, 1_000_000, seed=1), svc, BatchingPolicy())
    want = rho / (MU * (1 - rho))
    assert r.wait_s.mean() == pytest.approx(want, rel=0.02)
    assert r.utilisation == pytest.approx(rho, rel=0.02)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_mean_wait(rho: float) -> None:
    svc = ServiceModel({1: np.full(4, 1 / MU)})
    r = simulate(poisson_arrivals(rho * MU, 1_000_000, seed=2), svc, BatchingPolicy())
    assert r.wait_s.mean() == pytest.approx(rho / (2 * MU * (1 - rho)), rel=0.02)


def test_mmc_mean_wait_erlang_c() -> None:
    c, rho = 3, 0.7
    lam = rho * c * MU
    a = lam / MU
    tail = a**c / math.factorial(c) / (1 - rho)
    p_wait = tail / (sum(a**k / math.factorial(k) for k in range(c)) + tail)
    svc = ServiceModel({1: np.random.default_rng(3).exponential(1 / MU, 400_000)})
    r = simulate(poisson_arrivals(lam, 1_000_000, seed=4), svc, BatchingPolicy(instances=c))
    assert r.wait_s.mean() == pytest.approx(p_wait / (c * MU - lam), rel=0.03)


def test_deterministic_under_a_seed() -> None:
    svc = ServiceModel({1: np.random.default_rng(0).exponential(1e-3, 1000)})
    arr = poisson_arrivals(500, 10_000, seed=6)
    a = simulate(arr, svc, BatchingPolicy(), seed=9)
    b = simulate(arr, svc, BatchingPolicy(), seed=9)
    c = simulate(arr, svc, BatchingPolicy(), seed=10)
    np.testing.assert_array_equal(a.latency_s, b.latency_s)
    assert not np.array_equal(a.latency_s, c.latency_s)


CONST = ServiceModel({1: np.full(2, 0.010), 4: np.full(2, 0.016)})


def test_lone_request_waits_exactly_the_max_delay() -> None:
    r = simulate(np.array([0.0]), CONST, BatchingPolicy(max_batch=4, max_delay_s=0.005))
    assert r.wait_s[0] == pytest.approx(0.005) and r.latency_s[0] == pytest.approx(0.015)


def test_reaching_the_target_dispatches_before_the_deadline() -> None:
    arr = np.array([0.0, 0.001, 0.002, 0.003])
    r = simulate(arr, CONST, BatchingPolicy(max_batch=4, max_delay_s=0.050))
    assert list(r.batch_sizes) == [4]
    np.testing.assert_allclose(r.wait_s, [0.003, 0.002, 0.001, 0.0], atol=1e-12)


def test_no_delay_dispatches_whatever_is_waiting() -> None:
    arr = np.array([0.0, 0.001, 0.002, 0.003, 0.004])
    r = simulate(arr, CONST, BatchingPolicy(max_batch=4, max_delay_s=0.0))
    assert list(r.batch_sizes) == [1, 4]  # first alone; the next four queued behind it
    assert r.wait_s[0] == 0 and r.latency_s[1] == pytest.approx(0.010 - 0.001 + 0.016)


def test_max_batch_caps_a_burst_and_preferred_size_is_the_target() -> None:
    burst = np.zeros(10)
    r = simulate(burst, CONST, BatchingPolicy(max_batch=4, max_delay_s=0.01))
    assert list(r.batch_sizes) == [4, 4, 2]
    arr = np.array([0.0, 0.001, 0.002, 0.009])
    r = simulate(arr, CONST, BatchingPolicy(max_batch=4, max_delay_s=0.05, preferred=(2,)))
    assert r.batch_sizes[0] == 2 and r.wait_s[0] == pytest.approx(0.001)


def test_replicas_split_the_traffic() -> None:
    arr = np.zeros(4)
    one = simulate(arr, CONST, BatchingPolicy(max_batch=1))
    two = simulate(arr, CONST, BatchingPolicy(max_batch=1, replicas=2))
    assert one.latency_s.max() == pytest.approx(0.040) and two.latency_s.max() == pytest.approx(0.020)


def test_unprofiled_sizes_are_interpolated() -> None:
    assert CONST.mean(2) == pytest.approx(0.012) and CONST.mean(8) == pytest.approx(0.024)
    assert CONST.predicted_sizes(4) == [2, 3]
    r = simulate(np.zeros(2), CONST, BatchingPolicy(max_batch=2, max_delay_s=0.0))
    assert r.latency_s[0] == pytest.approx(0.012)


def test_bursty_arrivals_hurt_the_tail() -> None:
    svc = ServiceModel({1: np.full(2, 1e-3)})
    smooth = simulate(poisson_arrivals(600, 200_000, seed=7), svc, BatchingPolicy()).percentile_ms(0.99)
    bursty = simulate(gamma_arrivals(600, 200_000, cv=3.0, seed=7), svc, BatchingPolicy()).percentile_ms(0.99)
    assert bursty > 2 * smooth
    np.testing.assert_allclose(trace_arrivals([5.0, 3.0, 4.0]), [0.0, 1.0, 2.0])


def test_max_rate_for_p99() -> None:
    svc = ServiceModel({1: np.full(2, 1e-3)})
    rate = max_rate_for_p99(svc, BatchingPolicy(), p99_ms=5.0, n=20_000)
    assert 500 < rate < 1000  # below capacity, above half of it (M/D/1 p99 5 ms near 550/s)

    # judged on a stream the search never saw (the default seed's would agree by construction):
    # the rate meets the target, and 10 % more does not, so it is the highest, not merely a safe one
    def p99(r: float) -> float:
        return simulate(poisson_arrivals(r, 200_000, seed=11), svc, BatchingPolicy()).percentile_ms(0.99)

    assert 4.5 <= p99(rate) <= 5.25 and p99(1.1 * rate) > 5.0
    assert max_rate_for_p99(svc, BatchingPolicy(), p99_ms=0.5) == 0.0  # below the service time itself


@pytest.mark.parametrize(
    "kw", [{"max_batch": 0}, {"instances": 0}, {"max_delay_s": -1}, {"max_batch": 4, "preferred": (8,)}]
)
def test_bad_policies(kw: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        BatchingPolicy(**kw)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        poisson_arrivals(0, 10)


def test_frontend_station_and_fixed_overhead() -> None:
    svc = ServiceModel({1: np.full(2, 1e-3)})
    base = simulate(np.array([0.0, 0.0]), svc, BatchingPolicy())
    fe = simulate(np.array([0.0, 0.0]), svc, BatchingPolicy(frontend_s=0.002, fixed_s=0.0005))
    # front end serialises the two requests (2 ms each), then the model (1 ms each)
    np.testing.assert_allclose(fe.latency_s, [0.0035, 0.0055], atol=1e-12)
    assert base.latency_s.max() == pytest.approx(0.002)
    # an M/D/1 front end alone: mean wait rho / (2 mu (1 - rho))
    fast = ServiceModel({1: np.full(2, 1e-9)})
    r = simulate(poisson_arrivals(500, 500_000, seed=3), fast, BatchingPolicy(frontend_s=1e-3))
    assert (r.latency_s.mean() - 1e-3) == pytest.approx(0.5 / (2 * 1000 * 0.5), rel=0.03)


def test_predict_command_on_the_reference_profile(tmp_path: Path) -> None:
    from tests.conftest import REPO, run_cli

    ref = REPO / "profiles" / "reference" / "cnn-default"
    proc = run_cli(
        "predict", str(ref), "--rate", "40", "--threads", "2", "--requests", "20000", "--p99-ms", "60", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "PREDICTED at 40 req/s" in proc.stdout and "highest Poisson rate" in proc.stdout
    assert "[3, 5, 6, 7] were not profiled" in proc.stdout  # 1, 2, 4, 8 measured
    bad = run_cli("predict", str(ref), "--rate", "40", cwd=tmp_path)  # two thread counts profiled: ambiguous
    assert bad.returncode == 2 and "choose runtime, precision and threads" in bad.stderr


def test_a_fixed_terms_spread_is_drawn_per_request_and_reaches_the_p99() -> None:
    """The same mean outside the server, once as a constant and once as its measured spread (5% of
    requests pay 4 ms, the rest 1 ms): the spread's p99 carries the slow 5%, the constant's cannot."""
    spread = tuple([1e-3] * 95 + [4e-3] * 6)  # 101 quantiles
    mean = float(np.mean(np.interp(np.linspace(0, 1, 100_001), np.linspace(0, 1, 101), spread)))
    arr = np.arange(20_000) * 0.1  # never queues: latency is service + what is outside
    flat = simulate(arr, CONST, BatchingPolicy(fixed_s=mean))
    drawn = simulate(arr, CONST, BatchingPolicy(fixed_spread_s=spread))
    assert drawn.latency_s.mean() == pytest.approx(flat.latency_s.mean(), rel=0.01)
    assert flat.percentile_ms(0.99) == pytest.approx(10.0 + mean * 1e3)
    assert drawn.percentile_ms(0.99) == pytest.approx(14.0, abs=0.05) and drawn.percentile_ms(0.5) == pytest.approx(
        11.0
    )
    again = simulate(arr, CONST, BatchingPolicy(fixed_spread_s=spread))
    np.testing.assert_array_equal(drawn.latency_s, again.latency_s)  # seeded: common random numbers per rate


def test_a_fixed_terms_spread_measured_at_two_loads_is_read_at_each_replicas_rate() -> None:
    """What a request pays outside the server falls with load (the MLP's light Locust run on a Zen 5
    guest: 1.99 ms mean at 100 req/s, 1.24 at 603): each replica draws from the spread at its rate,
    quantile by quantile in log rate between the measured loads, flat beyond them."""
    light, loaded = (2e-3, 2e-3, 6e-3), (1e-3, 1e-3, 3e-3)
    curve = ((100.0, light), (1000.0, loaded))
    policy = BatchingPolicy(fixed_spread_s=light, fixed_spread_curve=curve)
    assert policy.fixed_spread_at(50.0) == light and policy.fixed_spread_at(5000.0) == loaded
    assert policy.fixed_spread_at(float(np.sqrt(1e5))) == pytest.approx((1.5e-3, 1.5e-3, 4.5e-3))
    for rate, spread in ((100.0, light), (1000.0, loaded)):
        arr = np.arange(4000) / rate
        got = simulate(arr, CONST, policy).latency_s - 10e-3  # never queues: what is left is outside
        want = simulate(arr, CONST, BatchingPolicy(fixed_spread_s=spread)).latency_s - 10e-3
        np.testing.assert_allclose(got, want)
    # two replicas: each sees half the rate, so 2,000 req/s in all is read at 1,000
    two = simulate(np.arange(8000) / 2000.0, CONST, BatchingPolicy(replicas=2, fixed_spread_curve=curve))
    assert float(np.mean(two.latency_s - two.service_s - two.wait_s)) == pytest.approx(
        float(np.mean(np.interp(np.linspace(0, 1, 100_001), np.linspace(0, 1, 3), loaded))), rel=0.05
    )
    for bad in (((100.0, light), (50.0, loaded)), ((100.0, light), (1000.0, (1e-3, 2e-3)))):
        with pytest.raises(UsageError, match="spread curve"):
            BatchingPolicy(fixed_spread_curve=bad)


@pytest.mark.parametrize("bad", [(1e-3,), (-1e-3, 1e-3), (2e-3, 1e-3)])
def test_a_spread_that_is_not_quantiles_is_refused(bad: tuple[float, ...]) -> None:
    with pytest.raises(UsageError, match="spread"):
        BatchingPolicy(fixed_spread_s=bad)


def test_a_cost_per_call_is_paid_once_per_batch_and_one_per_row_by_every_row() -> None:
    per_call, per_row = CONST.plus_per_call(0.002), CONST.plus_per_item(0.002)
    assert per_call.mean(1) == pytest.approx(0.012) and per_call.mean(4) == pytest.approx(0.018)
    assert per_row.mean(1) == pytest.approx(0.012) and per_row.mean(4) == pytest.approx(0.024)


def test_a_front_end_holding_the_gil_stretches_each_call_by_its_busy_share() -> None:
    """REST's event loop holds the GIL the call needs: each call is longer by the front-end work that
    lands during it, on average the front end's busy share (its rate x its cost), and more in the tail."""
    svc = ServiceModel({1: np.full(4, 2e-3)})
    arrivals = poisson_arrivals(200, 100_000, seed=5)  # 200 req/s, front end 1 ms: busy share 0.2
    plain = simulate(arrivals, svc, BatchingPolicy(frontend_s=1e-3))
    held = simulate(arrivals, svc, BatchingPolicy(frontend_s=1e-3, frontend_slows_inference=True))
    assert plain.service_s.mean() == pytest.approx(2e-3)
    assert held.service_s.mean() == pytest.approx(2e-3 * 1.2, rel=0.02)
    assert np.quantile(held.service_s, 0.99) >= 2e-3 + 2e-3  # two or more requests' front end in a call
    assert held.percentile_ms(0.99) > plain.percentile_ms(0.99)
    lone = simulate(np.array([0.0]), svc, BatchingPolicy(frontend_s=1e-3, frontend_slows_inference=True))
    assert lone.service_s[0] == pytest.approx(2e-3)  # no rate, no stretch


def test_the_front_ends_cost_follows_each_replicas_rate_on_its_measured_curve() -> None:
    svc = ServiceModel({1: np.full(4, 1e-3)})
    curve = ((100.0, 1e-3), (1000.0, 0.0))  # 1 ms more per request at 100 req/s, none at 1,000
    slow = np.arange(200) / 100.0  # 100 req/s
    at_100 = simulate(slow, svc, BatchingPolicy(frontend_s=2e-4, frontend_extra=curve))
    same = simulate(slow, svc, BatchingPolicy(frontend_s=1.2e-3))
    np.testing.assert_allclose(at_100.latency_s, same.latency_s)
    # halfway in log rate (316 req/s), half the extra: the cost falls per factor of load, not per req/s
    halfway = float(np.sqrt(100.0 * 1000.0))
    mid = simulate(np.arange(200) / halfway, svc, BatchingPolicy(frontend_s=2e-4, frontend_extra=curve))
    np.testing.assert_allclose(mid.latency_s.min(), 2e-4 + 5e-4 + 1e-3, rtol=1e-9)
    linear = simulate(np.arange(200) / 550.0, svc, BatchingPolicy(frontend_s=2e-4, frontend_extra=curve))
    assert linear.latency_s.min() < 2e-4 + 5e-4 + 1e-3  # past halfway in log rate: less than half
    # two replicas each see half the rate: 100 req/s in all is 50 per replica, flat below the curve
    two = simulate(slow, svc, BatchingPolicy(replicas=2, frontend_extra=curve))
    assert two.latency_s.min() == pytest.approx(2e-3)
    # on a core shared with inference the extra lands on each call, per row
    shared = simulate(slow, svc, BatchingPolicy(frontend_extra=curve, frontend_per_row=True))
    np.testing.assert_allclose(shared.service_s, 2e-3)
    assert shared.wait_s.max() == 0.0


def test_a_front_end_curve_is_points_at_increasing_rates() -> None:
    for bad in (((100.0, 1e-3), (50.0, 0.0)), ((0.0, 1e-3),), ((10.0, -1e-3),)):
        with pytest.raises(UsageError, match="front-end curve"):
            BatchingPolicy(frontend_extra=bad)
