"""Is "p99 < X" true, with a confidence? Counting requests over X as Bernoulli trials
(MLPerf LoadGen's early-stopping idea): the claim passes when even the
pessimistic bound on the over-target fraction is within 1%, fails when even the
optimistic one is above it, and is inconclusive in between."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n up to millions)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


@dataclass(frozen=True)
class Verdict:
    target_ms: float
    quantile: float
    over: int
    n: int
    confidence: float
    outcome: str  # pass, fail, inconclusive

    def line(self) -> str:
        return (
            f"p{self.quantile * 100:g} < {self.target_ms:g} ms: {self.outcome.upper()} "
            f"({self.over} of {self.n} over target, {self.confidence:.0%} confidence)"
        )


def p99_verdict(latency_ms: np.ndarray, target_ms: float, confidence: float = 0.95, quantile: float = 0.99) -> Verdict:
    n = int(latency_ms.size)
    over = int((latency_ms > target_ms).sum())
    p = 1.0 - quantile
    alpha = 1.0 - confidence
    if n == 0:
        outcome = "inconclusive"
    elif binom_cdf(over, n, p) <= alpha:
        outcome = "pass"  # this few exceedances are unlikely if the true fraction were >= 1%
    elif 1.0 - binom_cdf(over - 1, n, p) <= alpha:
        outcome = "fail"  # this many are unlikely if the true fraction were <= 1%
    else:
        outcome = "inconclusive"
    return Verdict(target_ms, quantile, over, n, confidence, outcome)
