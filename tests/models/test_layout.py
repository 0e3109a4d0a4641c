"""The input layout: batch axis per input, scalars, resolved dims, overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from optiserve.errors import ModelError, UsageError
from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.models.layout import (
    infer_layout,
    parse_batch_axes,
    parse_shape_overrides,
    probe_output_axes,
    split_items,
)
from optiserve.models.zoo import save_atomic
from optiserve.types import InputLayout


def _model(tmp_path: Path, inputs: list[tuple[str, int, list[object]]], name: str = "m") -> Path:
    """Identity-ish graph over ``inputs`` (the first one is the output)."""
    vis = [helper.make_tensor_value_info(n, t, d) for n, t, d in inputs]  # type: ignore[arg-type]
    out = helper.make_tensor_value_info("out", inputs[0][1], inputs[0][2])  # type: ignore[arg-type]
    graph = helper.make_graph([helper.make_node("Identity", [inputs[0][0]], ["out"])], name, vis, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    save_atomic(model, path)
    return path


def test_state_batch_on_axis_one_and_a_scalar(stateful_model: Path) -> None:
    info = inspect_model(stateful_model)
    lay = infer_layout(info, parse_shape_overrides(["seq=16"]))
    got = {t.name: (t.shape, t.batch_axis) for t in lay.inputs}
    assert got == {"x": ((1, 16), 0), "state": ((2, 1, 4), 1), "sr": ((), None)}
    assert lay.fixed_batch is None and dict(lay.output_axes) == {"y": 0, "stateN": 1}
    feeds = make_inputs(info, 3, layout=lay)
    assert feeds["x"].shape == (3, 16) and feeds["state"].shape == (2, 3, 4) and feeds["sr"].shape == ()
    assert InputLayout.from_dict(lay.to_dict()) == lay


def test_missing_dim_names_how_to_pass_it(stateful_model: Path) -> None:
    with pytest.raises(ModelError, match=r"dynamic dim 'seq'.*--shape seq=N or --shape x=DIMS"):
        infer_layout(inspect_model(stateful_model))


def test_user_npz_scalars_pass_as_given(stateful_model: Path) -> None:
    info = inspect_model(stateful_model)
    lay = infer_layout(info, {"seq": (8,)})
    npz = {"x": np.ones((2, 8), np.float32), "state": np.zeros((2, 2, 4), np.float32), "sr": np.array(16000)}
    feeds = make_inputs(info, 5, npz=npz, layout=lay)
    assert feeds["state"].shape == (2, 5, 4) and int(feeds["sr"]) == 16000
    with pytest.raises(UsageError, match="'sr' has 1 dims, the model wants 0"):
        make_inputs(info, 1, npz={**npz, "sr": np.array([16000])}, layout=lay)


def test_shape_items_keep_their_commas() -> None:
    assert split_items("x=3,48,192,seq=5") == ["x=3,48,192", "seq=5"]
    assert parse_shape_overrides(["x=3,48,192"]) == {"x": (3, 48, 192)}
    assert parse_shape_overrides(["x=3x48x192", "seq=5"]) == {"x": (3, 48, 192), "seq": (5,)}
    assert parse_batch_axes(["state=1,sr=none"]) == {"state": 1, "sr": None}
    with pytest.raises(UsageError, match="malformed --batch-axis"):
        parse_batch_axes(["state=first"])


def test_anonymous_dims_are_never_tied(tmp_path: Path) -> None:
    """PaddleOCR exports write '?' for H and W: one name, two independent dims."""
    path = _model(tmp_path, [("x", TensorProto.FLOAT, [-1, 3, "?", "?"])])
    info = inspect_model(path)
    assert info.inputs[0].dims == (None, 3, None, None)
    with pytest.raises(UsageError, match="--shape names \\?"):
        infer_layout(info, {"?": (48,)})
    lay = infer_layout(info, parse_shape_overrides(["x=3,48,192"]))
    assert lay.inputs[0].shape == (1, 3, 48, 192) and lay.inputs[0].batch_axis == 0
    with pytest.raises(UsageError, match="dim 1 is fixed at 3"):
        infer_layout(info, {"x": (4, 48, 192)})


def test_fixed_batch_and_overrides(tmp_path: Path) -> None:
    det = inspect_model(_model(tmp_path, [("images", TensorProto.FLOAT, [1, 3, 8, 8])], "det"))
    lay = infer_layout(det)
    assert lay.fixed_batch == 1 and not lay.allows(4) and lay.allows(1)
    # all dims fixed, the state's batch is the axis matching the other input's fixed batch
    both = inspect_model(
        _model(tmp_path, [("x", TensorProto.FLOAT, [1, 576]), ("state", TensorProto.FLOAT, [2, 1, 128])], "vad")
    )
    assert {t.name: t.batch_axis for t in infer_layout(both).inputs} == {"x": 0, "state": 1}
    over = infer_layout(both, batch_axes={"state": None})
    assert over.get("state").batch_axis is None
    with pytest.raises(UsageError, match="--batch-axis names nope"):
        infer_layout(both, batch_axes={"nope": 0})
    with pytest.raises(UsageError, match="has 3 dims"):
        infer_layout(both, batch_axes={"state": 3})


def test_probe_output_axes() -> None:
    got = probe_output_axes(["y", "stateN", "pooled"], [(1, 1), (2, 1, 4), (4,)], [(2, 1), (2, 2, 4), (4,)])
    assert got == (("y", 0), ("stateN", 1), ("pooled", None))


def test_external_data_changes_the_digest(tmp_path: Path) -> None:
    from onnx import numpy_helper

    w = numpy_helper.from_array(np.arange(1024, dtype=np.float32).reshape(32, 32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    first = inspect_model(path).sha256
    data = tmp_path / "ext.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert inspect_model(path).sha256 != first
    data.unlink()
    with pytest.raises(ModelError, match=r"ext\.onnx\.data, which is missing"):
        inspect_model(path)
