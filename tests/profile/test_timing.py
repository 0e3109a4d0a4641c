import time

from optiserve.profile.timing import TimingPolicy, measure, warm_up


class Drifting:
    """Slow for the first calls (cold caches), then steady: warm-up must outlast the drift."""

    def __init__(self, cold_calls: int) -> None:
        self.calls = 0
        self.cold_calls = cold_calls

    def __call__(self) -> None:
        self.calls += 1
        time.sleep(0.004 if self.calls <= self.cold_calls else 0.001)


def test_warm_up_outlasts_the_drift() -> None:
    call = Drifting(cold_calls=30)
    res = warm_up(call, TimingPolicy(warmup_max_s=10, stable_tol=0.5))  # sleep() jitters on a busy machine
    assert res.stable
    assert res.iterations > 30
    assert res.per_call_s < 0.003


def test_warm_up_gives_up_at_its_budget() -> None:
    n = {"i": 0}

    def ever_slower() -> None:
        n["i"] += 1
        time.sleep(0.0002 * n["i"])

    res = warm_up(ever_slower, TimingPolicy(warmup_max_s=0.3))
    assert not res.stable


def test_measure_stops_when_ci_is_tight() -> None:
    # a loose target: a no-op's p99 on a busy shared machine can wander by tens of percent between windows,
    # and this test is about the stopping rule, not about how quiet the CI machine is
    samples, reason = measure(lambda: None, TimingPolicy(budget_s=30, min_samples=200, target_ci=0.5), 1e-6)
    assert reason == "ci-reached"
    assert len(samples) >= 200
    assert samples.dtype.kind == "i" and (samples > 0).all()


def test_measure_stops_at_budget() -> None:
    policy = TimingPolicy(budget_s=0.2, target_ci=1e-9, min_samples=10)
    samples, reason = measure(lambda: time.sleep(0.001), policy, 0.001)
    assert reason == "budget"
    assert 10 <= len(samples) < 1000
