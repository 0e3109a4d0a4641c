"""Reference input summaries: grouping, bin edges whose shares PSI reads, and the profile that keeps them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from optiserve.errors import UsageError
from optiserve.profile.reference import (
    BINS,
    Reference,
    bin_index,
    build_reference,
    load_reference,
    psi,
)
from optiserve.types import InputLayout, TensorLayout
from tests.conftest import profile_cli


def _layout(*tensors: TensorLayout) -> InputLayout:
    return InputLayout(tuple(tensors))


def test_groups_follow_the_input_shape() -> None:
    rng = np.random.default_rng(0)
    layout = _layout(
        TensorLayout("image", "float32", (1, 3, 8, 8), 0),
        TensorLayout("vec", "float32", (1, 16), 0),
        TensorLayout("wide", "float32", (1, 500), 0),
        TensorLayout("state", "float32", (2, 1, 4), 1),
        TensorLayout("sr", "int64", (), None),
    )
    feeds = {
        "image": rng.standard_normal((40, 3, 8, 8)).astype(np.float32) + np.array([0, 5, -5])[None, :, None, None],
        "vec": rng.standard_normal((400, 16)).astype(np.float32),
        "wide": rng.standard_normal((40, 500)).astype(np.float32),
        "state": rng.standard_normal((2, 40, 4)).astype(np.float32),
        "sr": np.array(16000),
    }
    ref = build_reference(feeds, layout, "test", synthetic=False)
    got = {i.name: (i.mode, i.groups) for i in ref.inputs}
    assert got == {"image": ("channel", 3), "vec": ("feature", 16), "wide": ("tensor", 1), "state": ("tensor", 1)}
    image = next(i for i in ref.inputs if i.name == "image")
    assert image.mean == pytest.approx((0, 5, -5), abs=0.1)  # per channel, axis 1, not mixed
    assert [image.label(g) for g in range(3)] == ["c0", "c1", "c2"]
    for i in ref.inputs:  # deciles: every bin holds its tenth of the reference
        assert i.fraction_array() == pytest.approx(np.full((i.groups, BINS), 0.1), abs=0.01)


def test_tied_quantiles_of_discrete_inputs_keep_distinct_edges() -> None:
    layout = _layout(TensorLayout("mask", "int64", (1, 4), 0), TensorLayout("ids", "int64", (1, 4), 0))
    rng = np.random.default_rng(1)
    feeds = {"mask": np.ones((100, 4), np.int64), "ids": rng.integers(0, 3, (100, 4))}
    ref = build_reference(feeds, layout, "test", synthetic=False)
    mask, ids = ref.inputs
    assert all(len(e) == 1 for e in mask.edges)  # all ones: one edge, every value in one bin
    assert mask.fraction_array().max(axis=1) == pytest.approx(1.0)
    assert all(set(e) <= {0.0, 1.0, 2.0} for e in ids.edges)
    same = np.stack([np.bincount(b, minlength=BINS) for b in bin_index(ids_values(feeds["ids"]), ids.edge_array())])
    assert psi(same / same.sum(axis=1, keepdims=True), ids.fraction_array()) == pytest.approx(0.0, abs=1e-9)


def ids_values(arr: np.ndarray) -> np.ndarray:
    return arr.T.astype(np.float64)  # (features, rows)


def test_psi_separates_a_shifted_sample_from_a_fresh_one() -> None:
    rng = np.random.default_rng(2)
    layout = _layout(TensorLayout("x", "float32", (1, 2), 0))
    ref = build_reference({"x": rng.standard_normal((4096, 2))}, layout, "test", synthetic=False).inputs[0]
    fresh = rng.standard_normal((2, 2000))
    fresh[1] += 2.0  # feature 1 moved by two reference standard deviations
    counts = np.stack([np.bincount(b, minlength=BINS) for b in bin_index(fresh, ref.edge_array())])
    scores = psi(counts / counts.sum(axis=1, keepdims=True), ref.fraction_array())
    assert scores[0] < 0.1 < 0.2 < scores[1]


def test_round_trip_through_json() -> None:
    layout = _layout(TensorLayout("x", "float32", (1, 3), 0))
    ref = build_reference({"x": np.random.default_rng(3).standard_normal((50, 3))}, layout, "s", synthetic=True)
    again = Reference.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert again == ref and again.digest == ref.digest


def test_profile_keeps_a_labelled_reference(mlp_path: Path, tmp_path: Path) -> None:
    """Synthetic by default (and says so); the user's --inputs when given, summarising those samples."""
    synth, real = tmp_path / "synth", tmp_path / "real"
    assert profile_cli(mlp_path, synth, "--batch", "1", cwd=tmp_path).returncode == 0
    ref = load_reference(synth)
    assert ref.synthetic and "synthetic" in ref.source
    assert [(i.name, i.mode, i.groups) for i in ref.inputs] == [("features", "feature", 64)]

    samples = np.random.default_rng(4).standard_normal((300, 64)).astype(np.float32) * 3 + 1
    np.savez(tmp_path / "x.npz", features=samples)
    proc = profile_cli(mlp_path, real, "--batch", "1", "--inputs", str(tmp_path / "x.npz"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ref = load_reference(real)
    assert not ref.synthetic and ref.source == "inputs x.npz" and ref.rows == 300
    assert ref.inputs[0].mean == pytest.approx(samples.mean(axis=0), abs=1e-4)
    assert ref.inputs[0].std == pytest.approx(samples.std(axis=0), rel=1e-4)

    meta = json.loads((synth / "profile.json").read_text())  # a profile from before references were kept
    del meta["reference"]
    (synth / "profile.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="no reference input summaries"):
        load_reference(synth)
