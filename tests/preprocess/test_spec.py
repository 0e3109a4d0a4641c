import numpy as np
import pytest

from optiserve.errors import UnknownNameError, UsageError
from optiserve.preprocess import best_available, get_preprocessor
from optiserve.preprocess.spec import IMAGENET_MEAN, PreprocessSpec, effective_bytes, source_coords


def test_parse_full_and_minimal() -> None:
    s = PreprocessSpec.parse("image:resize=256,crop=224,mean=0.5/0.5/0.5,std=0.25/0.25/0.25,bgr,fp16")
    assert (s.out_h, s.out_w, s.crop, s.resize_short) == (224, 224, True, 256)
    assert s.mean == (0.5, 0.5, 0.5) and s.bgr_to_rgb and s.dtype == "float16"
    m = PreprocessSpec.parse("image:resize=224x320")
    assert (m.out_h, m.out_w, m.crop) == (224, 320, False) and m.mean == IMAGENET_MEAN


@pytest.mark.parametrize(
    "text,message",
    [
        ("audio:resize=1", "unknown pre-processing 'audio'"),
        ("image:crop=224", "needs resize"),
        ("image:resize=abc", "malformed resize"),
        ("image:resize=224,mean=1/2", "three numbers"),
        ("image:resize=224,std=0/1/1", "std non-zero"),
        ("image:resize=200,crop=224", "smaller than the crop"),
        ("image:resize=224,tint=1", "unknown pre-processing key 'tint'"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        PreprocessSpec.parse(text)


def test_crop_geometry_matches_torchvision_rounding() -> None:
    s = PreprocessSpec(224, 224, crop=True, resize_short=256)
    sy, sx, oy, ox = s.geometry(480, 640)  # shorter side 480 -> 256, long 640 -> 341
    assert (oy, ox) == (16, 58) and sy == pytest.approx(480 / 256) and sx == pytest.approx(640 / 341)


def test_opencv_border_rules() -> None:
    i0, i1, w = source_coords(4, 0, 2.0, 8)  # 2x down: centres at 0.5, 2.5, 4.5, 6.5
    assert list(i0) == [0, 2, 4, 6] and list(i1) == [1, 3, 5, 7] and np.allclose(w, 0.5)
    i0, i1, w = source_coords(8, 0, 0.5, 4)  # 2x up: first tap clamps to 0, last to n-1
    assert i0[0] == 0 and w[0] == 0 and i0[-1] == 3 and w[-1] == 0 and i1[-1] == 3


def test_registry_and_fallback() -> None:
    spec = PreprocessSpec(8, 8)
    with pytest.raises(UnknownNameError, match="numba-cpu"):
        get_preprocessor("opencl", spec)
    assert best_available(spec).name in ("numba-cpu", "numpy")
    assert effective_bytes([np.zeros((4, 4, 3), np.uint8)], spec) == 48 + 3 * 64 * 4
