from pathlib import Path

import pytest

from optiserve.errors import StoreError
from optiserve.profile.store import ParquetStore, load_profile
from optiserve.testing.store_conformance import META, StoreConformance, sample_measurement


class TestParquetStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> ParquetStore:
        return ParquetStore(tmp_path / "prof")


def test_load_accepts_either_file(tmp_path: Path) -> None:
    s = ParquetStore(tmp_path / "p")
    s.create(META)
    s.append(sample_measurement())
    for p in (tmp_path / "p", tmp_path / "p" / "profile.parquet", tmp_path / "p" / "profile.json"):
        assert len(load_profile(p).measurements) == 1


def test_missing_or_future_profile_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no profile"):
        load_profile(tmp_path / "nothing")
    s = ParquetStore(tmp_path / "p")
    s.create(META)
    s.update_meta(schema_version=99)
    with pytest.raises(StoreError, match="schema version 99"):
        load_profile(tmp_path / "p")


def test_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot write profile"):
        ParquetStore(blocker / "sub").create(META)


def test_no_temp_files_left_behind(tmp_path: Path) -> None:
    s = ParquetStore(tmp_path / "p")
    s.create(META)
    for b in (1, 2):
        s.append(sample_measurement(b))
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["profile.json", "profile.parquet"]


def test_reference_profile_of_schema_1_still_reads() -> None:
    from tests.conftest import REPO

    prof = load_profile(REPO / "profiles" / "reference" / "cnn-default")
    assert prof.meta["schema_version"] == 1 and prof.meta["complete"] is True
    assert len(prof.measurements) == 10 and all(m.stats is not None for m in prof.measurements)
    assert {m.config.batch_size for m in prof.measurements} == {1, 2, 4, 8, 16}
    assert all(m.accuracy is None and m.config.variant == () for m in prof.measurements)
