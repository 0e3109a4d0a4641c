import pytest

from optiserve.errors import UsageError
from optiserve.estimate.graph_cost import GraphCost
from optiserve.estimate.transfer import Ceiling, fit_transfer


def _costs() -> list[GraphCost]:
    # two nodes per batch: a compute-heavy one, and a memory-heavy one that reads 1 MB of weights each time
    return [
        GraphCost(b, 2e9 * b + 1e6 * b, 1e5 * b + 1e6 + 4e6 * b, nodes=((2e9 * b, 1e5 * b), (1e6 * b, 1e6 + 4e6 * b)))
        for b in (1, 2, 4, 8, 16)
    ]


def test_recovers_a_known_efficiency_and_moves_it_to_new_ceilings() -> None:
    a = Ceiling("A", flops_per_s=100e9, bytes_per_s=10e9)
    b = Ceiling("B", flops_per_s=400e9, bytes_per_s=20e9)
    e, d = 0.6, 1e-4  # the synthetic truth
    truth = [c.roofline_s(a.flops_per_s, a.bytes_per_s) / e + d for c in _costs()]
    fit = fit_transfer(_costs(), truth, a)
    assert fit.efficiency == pytest.approx(e, rel=1e-9) and fit.overhead_s == pytest.approx(d, rel=1e-6)
    assert fit.rel_rms < 1e-9
    for c in _costs():
        got, band = fit.predict(c, b)
        assert band < 1e-9
        assert got == pytest.approx(c.roofline_s(b.flops_per_s, b.bytes_per_s) / e + d, rel=1e-9)


def test_fit_needs_two_points() -> None:
    with pytest.raises(UsageError):
        fit_transfer(_costs()[:1], [0.01], Ceiling("A", 1e9, 1e9))


def test_a_call_reads_its_weights_no_faster_than_dram_allows() -> None:
    cost = GraphCost(1, 1e6, 1e6, nodes=((1e6, 1e6),), weight_bytes=8e9)  # 8 GB of weights, tiny nodes
    cached = Ceiling("cached", 1e12, 1e11)
    assert cached.roofline_s(cost) == pytest.approx(1e-5)  # no DRAM bound given: the nodes alone
    dram = Ceiling("dram", 1e12, 1e11, dram_bytes_per_s=10e9)
    assert dram.roofline_s(cost) == pytest.approx(0.8)  # streaming the weights once binds
