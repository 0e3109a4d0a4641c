"""What every result store must do, as pytest tests. Subclass and provide a
``store`` fixture returning a fresh, empty store."""

from __future__ import annotations

import pytest

from optiserve.profile.store import ResultStore
from optiserve.types import BenchConfig, LatencyStats, Measurement, Precision, Status

META = {"model": {"name": "m", "sha256": "0" * 64}, "hardware": {"id": "x"}, "planned_configs": 2}


def sample_measurement(batch: int = 1, status: Status = Status.OK) -> Measurement:
    cfg = BenchConfig("onnxruntime-cpu", Precision.FP32, batch, 1, (("graph_optimization", "all"),))
    if status is Status.FAILED:
        return Measurement(cfg, status, error="boom")
    stats = LatencyStats(3, 2.0, 0.5, 1.5, 2.5, 2.0, 2.4, 2.45, 2.49, 2.5, 1.5, 2.5)
    return Measurement(
        cfg,
        status,
        stats=stats,
        throughput=500.0 * batch,
        load_time_s=0.1,
        warmup_iterations=7,
        warmup_stable=True,
        peak_rss_mb=100.0,
        model_rss_mb=20.0,
        wall_time_s=1.0,
        stop_reason="budget",
        warnings=("noisy",),
        samples_ns=(1_500_000, 2_000_000, 2_500_000),
        extra={"note": "x"},
    )


class StoreConformance:
    @pytest.fixture
    def store(self) -> ResultStore:
        raise NotImplementedError("provide a `store` fixture")

    def test_create_then_load_is_empty(self, store: ResultStore) -> None:
        assert not store.exists()
        store.create(META)
        assert store.exists()
        prof = store.load()
        assert prof.measurements == ()
        assert prof.meta["model"]["sha256"] == META["model"]["sha256"]  # type: ignore[index]
        assert isinstance(prof.meta["schema_version"], int)

    def test_create_twice_fails(self, store: ResultStore) -> None:
        from optiserve.errors import OptiserveError

        store.create(META)
        with pytest.raises(OptiserveError):
            store.create(META)

    def test_append_round_trips_every_field(self, store: ResultStore) -> None:
        store.create(META)
        m = sample_measurement()
        store.append(m)
        (back,) = store.load().measurements
        assert back == m

    def test_failed_rows_keep_their_reason(self, store: ResultStore) -> None:
        store.create(META)
        store.append(sample_measurement(2, Status.FAILED))
        (back,) = store.load().measurements
        assert back.status is Status.FAILED and back.error == "boom" and back.stats is None

    def test_append_same_key_replaces(self, store: ResultStore) -> None:
        store.create(META)
        store.append(sample_measurement(1, Status.FAILED))
        store.append(sample_measurement(1))
        (back,) = store.load().measurements
        assert back.status is Status.OK

    def test_rows_accumulate_in_order(self, store: ResultStore) -> None:
        store.create(META)
        for b in (1, 2, 4):
            store.append(sample_measurement(b))
        assert [m.config.batch_size for m in store.load().measurements] == [1, 2, 4]

    def test_update_meta(self, store: ResultStore) -> None:
        store.create(META)
        store.update_meta(complete=True)
        assert store.load().meta["complete"] is True

    def test_to_pandas_has_one_row_per_config(self, store: ResultStore) -> None:
        store.create(META)
        store.append(sample_measurement(1))
        store.append(sample_measurement(2, Status.FAILED))
        df = store.load().to_pandas()
        assert list(df["batch_size"]) == [1, 2]
        assert {"p50_ms", "p99_ms", "p999_ms", "throughput", "samples_ns", "warnings"} <= set(df.columns)
