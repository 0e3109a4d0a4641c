from __future__ import annotations

import pytest

from optiserve.estimate.reach import blend, measured_compute
from optiserve.profile.ceilings import Ceilings, ThreadCeilings


def _at(gemm: float, conv: float) -> ThreadCeilings:
    return ThreadCeilings(gemm, conv, 4 * gemm, 4 * conv, 10e9)


def test_a_measured_ceiling_is_the_best_per_vcpu_rate_times_the_vcpus() -> None:
    # the 2-thread run scaled badly (a busy sibling vCPU): its own rate is not what 2 threads reach
    ceilings = Ceilings({1: _at(160e9, 140e9), 2: _at(240e9, 280e9)}, "onnxruntime", "2026-12-02", "test")
    one, two = (measured_compute(ceilings, t, "fp32", 0.0) for t in (1, 2))
    assert one == pytest.approx(160e9) and two == pytest.approx(320e9)  # gemm: 1 thread's rate, twice
    conv_two = measured_compute(ceilings, 2, "fp32", 1.0)
    assert conv_two == pytest.approx(280e9)  # conv: 2 threads' 140 per vCPU equals 1 thread's
    assert measured_compute(ceilings, 2, "int8", 0.5) == pytest.approx(2 * blend(640e9, 560e9, 0.5))
    assert measured_compute(ceilings, 4, "fp32", 0.0) is None  # not measured there: the catalog's turn
    assert measured_compute(None, 1, "fp32", 0.0) is None
    assert measured_compute(ceilings, 1, "bf16", 0.0) is None
