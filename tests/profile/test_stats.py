import math

import numpy as np

from optiserve.profile.stats import p99_ci_rel, quantile_ci, samples_for_target, stability_warnings, summarize


def test_quantile_ci_covers_the_true_p99_about_95_percent() -> None:
    rng = np.random.default_rng(0)
    true_p99 = float(np.exp(0.5 * 2.3263478740408408))  # lognormal(0, 0.5)
    hits = 0
    trials = 400
    for _ in range(trials):
        x = np.sort(rng.lognormal(0, 0.5, 2000))
        lo, hi = quantile_ci(x, 0.99)
        hits += lo <= true_p99 <= hi
    assert 0.90 <= hits / trials <= 0.99


def test_ci_narrows_with_more_samples() -> None:
    rng = np.random.default_rng(1)
    assert p99_ci_rel(rng.lognormal(0, 0.3, 20000)) < p99_ci_rel(rng.lognormal(0, 0.3, 500))
    assert math.isinf(p99_ci_rel([5]))


def test_summarize_in_ms() -> None:
    s = summarize(np.arange(1, 1001) * 1_000_000)  # 1..1000 ms
    assert s.n == 1000 and s.min == 1 and s.max == 1000
    assert abs(s.p50 - 500.5) < 1e-6 and abs(s.p99 - 990.01) < 1e-6
    assert s.p99_ci_low <= s.p99 <= s.p99_ci_high


def test_samples_for_target_scales_with_inverse_square() -> None:
    assert samples_for_target(100, 0.10, 0.05) == 400
    assert samples_for_target(100, 0.01, 0.05) == 100


def test_warnings_for_noise_and_few_samples() -> None:
    rng = np.random.default_rng(2)
    steady = summarize((1e6 + rng.normal(0, 1e3, 5000)).astype(np.int64))
    assert stability_warnings(steady, target_ci=0.05, warmup_stable=True, stop_reason="ci-reached") == []
    noisy = summarize((rng.lognormal(0, 1.0, 900) * 1e6).astype(np.int64))
    w = " ".join(stability_warnings(noisy, target_ci=0.05, warmup_stable=False, stop_reason="budget"))
    assert "noisy" in w and "never stabilised" in w and "samples would reach it" in w and "p99.9" in w
    few = summarize((rng.lognormal(0, 0.1, 100) * 1e6).astype(np.int64))
    assert few.p99_ci_high == float("inf")
    w = " ".join(stability_warnings(few, target_ci=0.05, warmup_stable=True, stop_reason="budget"))
    assert "no upper confidence bound" in w
    busy = stability_warnings(steady, target_ci=0.05, warmup_stable=True, stop_reason="x", foreign_cpu=0.4)
    assert any("busy" in m and "40%" in m for m in busy)


def test_foreign_load_ignores_our_own_work() -> None:
    import time

    from optiserve.profile.hardware import ForeignLoad

    probe = ForeignLoad()
    end = time.process_time() + 0.3
    while time.process_time() < end:  # we burn one CPU ourselves
        pass
    assert probe.fraction() < 0.5  # not counted as someone else's load


def test_eval_items_do_not_depend_on_the_batch_size(mlp_path) -> None:  # type: ignore[no-untyped-def]
    from optiserve.models.graph import inspect_model
    from optiserve.models.layout import infer_layout
    from optiserve.profile.evaluation import eval_batches

    info = inspect_model(mlp_path)
    layout = infer_layout(info)
    one, _ = eval_batches(info, 1, 8, layout, None, None, seed=0)
    four, _ = eval_batches(info, 4, 8, layout, None, None, seed=0)
    np.testing.assert_array_equal(
        np.concatenate([f["features"] for f in one]), np.concatenate([f["features"] for f in four])
    )


def test_the_block_bootstrap_widens_the_p99_interval_when_slow_requests_come_in_runs() -> None:
    """Stalls slow many consecutive requests: the same values in runs of 50 carry less information
    about the p99 than scattered ones, and only the block interval says so."""
    import numpy as np

    from optiserve.profile.stats import block_quantile_ci, quantile_ci

    rng = np.random.default_rng(0)
    fast = rng.gamma(4.0, 1.0, 9500)
    runs = np.concatenate([fast[:4750], rng.gamma(4.0, 5.0, 500), fast[4750:]])  # one 500-request stall
    scattered = rng.permutation(runs)
    o_lo, o_hi = quantile_ci(np.sort(runs), 0.99)
    r_lo, r_hi = block_quantile_ci(runs, 0.99, block=100)
    s_lo, s_hi = block_quantile_ci(scattered, 0.99, block=100)
    assert (r_hi - r_lo) > 3 * (o_hi - o_lo)  # the stall's runs: far wider than the iid interval
    assert (s_hi - s_lo) < 2 * (o_hi - o_lo)  # scattered, the two agree
    assert s_lo <= np.quantile(scattered, 0.99) <= s_hi
    assert block_quantile_ci(runs, 0.99, block=100) == (r_lo, r_hi)  # seeded
