from pathlib import Path

import numpy as np
import pytest

from optiserve.errors import ModelError, UsageError
from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs, parse_shape_overrides


def test_parse_shape_overrides() -> None:
    assert parse_shape_overrides(["seq=128", "pixels=3x224x224"]) == {"seq": (128,), "pixels": (3, 224, 224)}
    for bad in ("seq", "seq=", "seq=abc", "=3", "seq=0"):
        with pytest.raises(UsageError, match="malformed --shape"):
            parse_shape_overrides([bad])


def test_missing_dynamic_dim_names_the_dim(seq_model: Path) -> None:
    info = inspect_model(seq_model)
    with pytest.raises(ModelError) as exc:
        make_inputs(info, 2)
    msg = str(exc.value)
    assert "'seq'" in msg and "--shape seq=N" in msg and "'ids'" in msg


def test_dynamic_dim_by_dim_name_or_input_name(seq_model: Path) -> None:
    info = inspect_model(seq_model)
    assert make_inputs(info, 2, {"seq": (7,)})["ids"].shape == (2, 7)
    assert make_inputs(info, 3, {"ids": (5,)})["ids"].shape == (3, 5)
    ids = make_inputs(info, 4, {"seq": (9,)})["ids"]
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 50


def test_npz_inputs_are_cycled_to_the_batch(mlp_path: Path, tmp_path: Path) -> None:
    info = inspect_model(mlp_path)
    data = np.arange(2 * 64, dtype=np.float32).reshape(2, 64)
    np.savez(tmp_path / "x.npz", features=data)
    from optiserve.models.inputs import load_npz

    feeds = make_inputs(info, 5, npz=load_npz(tmp_path / "x.npz"))
    assert feeds["features"].shape == (5, 64)
    np.testing.assert_array_equal(feeds["features"][2], data[0])


def test_npz_with_wrong_keys_or_shapes(mlp_path: Path, tmp_path: Path) -> None:
    info = inspect_model(mlp_path)
    with pytest.raises(UsageError, match="lacks features"):
        make_inputs(info, 1, npz={"other": np.zeros((1, 64), np.float32)})
    with pytest.raises(UsageError, match="item shape"):
        make_inputs(info, 1, npz={"features": np.zeros((1, 63), np.float32)})


def test_synthetic_inputs_are_seeded(mlp_path: Path) -> None:
    info = inspect_model(mlp_path)
    a, b = make_inputs(info, 2, seed=1), make_inputs(info, 2, seed=1)
    np.testing.assert_array_equal(a["features"], b["features"])
