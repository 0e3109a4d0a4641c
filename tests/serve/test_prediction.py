"""What a load test is judged against: overheads measured, drawn and fitted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from optiserve.errors import UsageError
from optiserve.estimate import BatchingPolicy, ServiceModel
from optiserve.serve.prediction import (
    measured_overheads,
    overheads_from,
    per_item_cost_for_capacity,
    simulated_ms,
    with_overheads,
)

SERVICE = ServiceModel({1: np.full(50, 0.002), 4: np.full(50, 0.004)})
POLICY = BatchingPolicy(max_batch=4, max_delay_s=0.001)


def test_overheads_are_measured_minus_simulated_for_the_completed_requests() -> None:
    sim = np.array([1.0, 2.0, 3.0])
    assert measured_overheads([5.0, 4.0], [0, 2], sim).tolist() == [4.0, 1.0]


def test_overheads_are_drawn_from_the_measured_ones_with_the_seed() -> None:
    lat = np.zeros(1000)
    assert with_overheads(lat, None) is lat and with_overheads(lat, np.array([])) is lat
    drawn = with_overheads(lat, np.array([1.0, 3.0]), seed=7)
    assert set(drawn.tolist()) == {1.0, 3.0} and np.array_equal(drawn, with_overheads(lat, np.array([1.0, 3.0]), 7))


def test_overheads_come_from_a_predict_from_result(tmp_path: Path) -> None:
    good = tmp_path / "light.json"
    good.write_text(json.dumps({"latency_ms": [3.0, 5.0], "index": [1, 0], "predicted_service_ms": [2.0, 1.0]}))
    assert overheads_from(good).tolist() == [2.0, 3.0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"latency_ms": [1.0]}))
    with pytest.raises(UsageError, match="not a loadtest --json result made with --predict-from"):
        overheads_from(bad)
    bad.write_text(json.dumps({"latency_ms": [1.0], "index": [5], "predicted_service_ms": [1.0]}))
    with pytest.raises(UsageError, match="no usable latencies"):
        overheads_from(bad)


def test_the_fitted_cpu_per_row_brings_the_capacity_down_to_the_measured_one() -> None:
    capacity = SERVICE.capacity(POLICY.max_batch) / 2
    per_row = per_item_cost_for_capacity(SERVICE, POLICY, capacity)
    assert SERVICE.plus_per_item(per_row).capacity(POLICY.max_batch) == pytest.approx(capacity, rel=1e-6)


def test_every_scheduled_request_gets_a_simulated_latency() -> None:
    schedule = np.arange(200) * 0.01
    lat = simulated_ms(schedule, SERVICE, POLICY, seed=1)
    assert lat.shape == (200,) and (lat >= 2.0).all()
