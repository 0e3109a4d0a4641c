from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.models.onnx_zoo import LIGHT_MODELS, light_model_path
from optiserve.models.zoo import build_zoo


def test_every_light_model_ships_with_onnx() -> None:
    for name in LIGHT_MODELS:
        assert light_model_path(name).exists(), name


@pytest.mark.parametrize("name", ["squeezenet", "shufflenet", "densenet121"])
def test_light_model_becomes_runnable_with_dynamic_batch(tmp_path: Path, name: str) -> None:
    (path,) = build_zoo(tmp_path, [name])
    info = inspect_model(path)
    assert info.family == "cnn" and info.opset >= 13
    assert "ConstantOfShape" not in dict(info.op_counts)
    (inp,) = info.inputs
    assert inp.has_dynamic_batch
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = make_inputs(info, 2)
    out = sess.run(None, feeds)[0]
    assert out.shape[0] == 2 and np.isfinite(out).all()
    # seeded weights with calibrated BatchNorm: scores depend on the image, softmax not saturated
    assert np.abs(out[0] - out[1]).max() > 1e-4
    assert out.max() < 0.99
