from pathlib import Path

import numpy as np
import pytest

from optiserve.errors import UsageError
from optiserve.models.graph import inspect_model
from optiserve.models.zoo import build_zoo
from optiserve.profile.pipeline import STAGES, Pipeline, StageSpec
from optiserve.profile.store import load_profile
from optiserve.types import Status
from tests.conftest import FAST, profile_cli, run_cli


def test_stage_spec_parsing() -> None:
    s = StageSpec.parse("image:resize=256,crop=224,src=300x400,impl=numpy")
    assert (s.src_h, s.src_w, s.impl, s.spec.out_h) == (300, 400, "numpy", 224)
    with pytest.raises(UsageError, match="unknown pre-processor 'opencl'"):
        StageSpec.parse("image:resize=224,impl=opencl")
    with pytest.raises(UsageError, match="malformed src"):
        StageSpec.parse("image:resize=224,src=big")


def test_stage_must_fit_the_model(mlp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"makes \[batch, 3, 224, 224\] but the model takes features"):
        StageSpec.parse("image:resize=224").image_input(inspect_model(mlp_path))


def test_pipeline_records_stages(tmp_path: Path) -> None:
    import onnxruntime as ort

    (cnn,) = build_zoo(tmp_path, ["cnn"])
    stage = StageSpec.parse("image:resize=224,src=120x160,impl=numpy")
    sess = ort.InferenceSession(str(cnn))
    feeds = {"pixels": np.zeros((2, 3, 224, 224), np.float32)}
    pipe = Pipeline(lambda f: sess.run(None, f), feeds, stage, "pixels")
    for _ in range(3):
        pipe()
    b = pipe.breakdown(np.array([1_000_000] * 3))
    assert set(STAGES) <= set(b) and b["host_to_device"] is None and b["postprocess"] is None
    assert b["preprocess"]["p50_ms"] > 0 and b["inference"]["p50_ms"] > 0  # type: ignore[index]
    assert feeds["pixels"].std() > 0  # the pre-processed images, not the zeros, were fed
    assert pipe.preprocessor_name == "numpy"


def test_profile_with_preprocess_stage(tmp_path: Path) -> None:
    (cnn,) = build_zoo(tmp_path / "m", ["cnn"])
    proc = profile_cli(
        cnn, tmp_path / "p", "--preprocess", "image:resize=256,crop=224,src=240x320", "--batch", "2", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    (m,) = load_profile(tmp_path / "p").measurements
    assert m.status is Status.OK and m.config.preprocess.startswith("image:")
    assert m.stages["preprocess"]["p50_ms"] > 0 and m.stages["inference"]["p50_ms"] > 0
    assert m.stats is not None and m.stats.p50 >= m.stages["inference"]["p50_ms"]  # end to end
    assert m.extra["preprocessor"] in ("numba-cpu", "numpy")
    assert "stage breakdown" in proc.stdout


def test_inference_only_rows_still_have_a_breakdown(mlp_path: Path, tmp_path: Path) -> None:
    proc = profile_cli(mlp_path, tmp_path / "p", "--batch", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (m,) = load_profile(tmp_path / "p").measurements
    assert m.stages["preprocess"] is None and m.stages["inference"]["p50_ms"] > 0


def test_bad_preprocess_flag_is_one_line(mlp_path: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "profile", str(mlp_path), "--preprocess", "image:resize=224", *FAST, "-o", str(tmp_path / "p"), cwd=tmp_path
    )
    assert proc.returncode == 2 and "the model takes features" in proc.stderr and "Traceback" not in proc.stderr
