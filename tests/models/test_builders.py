from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from optiserve.errors import ModelError, UnknownNameError
from optiserve.models.builders import build_cnn, build_encoder, build_mlp
from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.models.zoo import ZOO, build_zoo, resolve_model


@pytest.mark.parametrize("build", [build_mlp, build_cnn, build_encoder])
def test_builds_are_deterministic_and_seeded(build) -> None:  # type: ignore[no-untyped-def]
    assert build(0).SerializeToString() == build(0).SerializeToString()
    assert build(0).SerializeToString() != build(1).SerializeToString()


@pytest.mark.parametrize("name,family", [("mlp", "mlp"), ("cnn", "cnn"), ("encoder", "transformer")])
def test_zoo_models_run_with_dynamic_batch(tmp_path: Path, name: str, family: str) -> None:
    (path,) = build_zoo(tmp_path, [name])
    info = inspect_model(path)
    assert info.family == family
    assert all(i.has_dynamic_batch for i in info.inputs)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = make_inputs(info, 3)
    outs = sess.run(None, feeds)
    assert all(o.shape[0] == 3 and np.isfinite(o).all() for o in outs)
    one = sess.run(None, {k: v[1:2] for k, v in feeds.items()})
    np.testing.assert_allclose(outs[0][1:2], one[0], rtol=1e-3, atol=1e-4)


def test_encoder_has_the_promised_shape(tmp_path: Path) -> None:
    info = inspect_model(build_zoo(tmp_path, ["encoder"])[0])
    assert [(i.name, i.dims) for i in info.inputs] == [
        ("input_ids", ("batch", 128)),
        ("attention_mask", ("batch", 128)),
    ]
    ids = make_inputs(info, 2)["input_ids"]
    assert ids.min() >= 0 and ids.max() < 8192  # bounded by the embedding table


def test_unknown_zoo_name_lists_valid(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError) as exc:
        build_zoo(tmp_path, ["gpt5"])
    assert "resnet50" in str(exc.value)
    with pytest.raises(ModelError, match="neither a file nor a zoo model"):
        resolve_model("gpt5", tmp_path)


def test_resolve_builds_zoo_name_on_demand(tmp_path: Path) -> None:
    path = resolve_model("mlp", tmp_path)
    assert path == tmp_path / "mlp.onnx" and path.exists()
    assert "mlp" in ZOO
