import numpy as np

from optiserve.serve.verdict import binom_cdf, p99_verdict


def test_binomial_cdf() -> None:
    assert binom_cdf(0, 10, 0.5) == 0.5**10
    assert abs(binom_cdf(5, 10, 0.5) - 0.623046875) < 1e-12
    assert binom_cdf(-1, 5, 0.1) == 0 and binom_cdf(5, 5, 0.1) == 1


def test_verdicts() -> None:
    fast = np.full(2000, 5.0)
    assert p99_verdict(fast, 10).outcome == "pass"  # 0 of 2000 over: < 1% with 95% confidence
    assert p99_verdict(np.full(100, 5.0), 10).outcome == "inconclusive"  # 100 samples cannot show < 1%
    slow = np.r_[np.full(1900, 5.0), np.full(100, 50.0)]  # 5% over target
    assert p99_verdict(slow, 10).outcome == "fail"
    edge = np.r_[np.full(990, 5.0), np.full(10, 50.0)]  # exactly 1%: cannot tell
    assert p99_verdict(edge, 10).outcome == "inconclusive"
    assert "PASS" in p99_verdict(fast, 10).line()
