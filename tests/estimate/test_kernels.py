from __future__ import annotations

from optiserve.estimate.kernels import FLOP_EQUIVALENTS, flop_equivalents


def test_gemm_and_view_ops_do_no_vector_work() -> None:
    for op in ("Conv", "MatMul", "Gemm", "QLinearConv", "Reshape", "Flatten", "Identity"):
        assert flop_equivalents(op, False) == flop_equivalents(op, True) == 0.0


def test_unmeasured_ops_cost_the_cheapest_kernel_and_quantised_softmax_is_dear() -> None:
    assert flop_equivalents("HardSwish", False) == FLOP_EQUIVALENTS["Add"][0]
    assert flop_equivalents("Softmax", True) > 5 * flop_equivalents("Softmax", False)  # QLinearSoftmax
    assert all(a > 0 and b > 0 for a, b in FLOP_EQUIVALENTS.values())
