"""What every pre-processing implementation must do, as pytest tests.

Subclass and provide ``make`` (a ``PreprocessSpec -> Preprocessor`` factory);
``sizes`` may be overridden with tiny sizes for slow back ends (the CUDA
simulator). An unavailable implementation skips with its own reason.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from optiserve.errors import UsageError
from optiserve.preprocess.reference import NumpyReference
from optiserve.preprocess.spec import PreprocessSpec

IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "scale": 1.0}  # output = resized pixel


def random_images(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[np.ndarray]:
    return [
        rng.integers(0, 256, (int(rng.integers(lo, hi)), int(rng.integers(lo, hi)), 3), dtype=np.uint8)
        for _ in range(n)
    ]


class PreprocessConformance:
    out = 24  # output side; kept small so simulators stay fast
    sizes = (8, 90)  # random source sides, both up- and down-scaling
    batch = 5

    @pytest.fixture
    def make(self) -> Callable[[PreprocessSpec], object]:
        raise NotImplementedError("provide a `make` fixture")

    def _impl(self, make: Callable[[PreprocessSpec], object], **kw: object) -> object:
        spec = PreprocessSpec(self.out, self.out + 4, **kw)  # type: ignore[arg-type]
        impl = make(spec)
        reason = impl.available()  # type: ignore[attr-defined]
        if reason:
            pytest.skip(f"{impl.name} unavailable here: {reason}")  # type: ignore[attr-defined]
        return impl

    def test_matches_reference_within_one_lsb(self, make: Callable[[PreprocessSpec], object]) -> None:
        impl = self._impl(make, **IDENTITY)
        rng = np.random.default_rng(1)
        images = random_images(rng, self.batch, *self.sizes)
        got = impl(images)  # type: ignore[operator]
        want = NumpyReference(impl.spec)(images)  # type: ignore[attr-defined]
        assert got.shape == want.shape == (self.batch, 3, self.out, self.out + 4)
        assert np.abs(got.astype(np.float64) - want).max() <= 1.0

    def test_matches_opencv_within_one_lsb(self, make: Callable[[PreprocessSpec], object]) -> None:
        cv2 = pytest.importorskip("cv2", reason="opencv-python-headless not installed")
        impl = self._impl(make, **IDENTITY)
        rng = np.random.default_rng(2)
        images = random_images(rng, self.batch, *self.sizes)
        got = impl(images)  # type: ignore[operator]
        for i, img in enumerate(images):
            ref = cv2.resize(img, (self.out + 4, self.out), interpolation=cv2.INTER_LINEAR)
            if img.shape[0] == 2 * self.out or img.shape[1] == 2 * (self.out + 4):
                continue  # OpenCV switches exact 2x down-scaling to INTER_AREA
            assert np.abs(got[i].transpose(1, 2, 0).astype(np.float64) - ref).max() <= 1.0

    def test_normalisation_crop_and_channel_swap(self, make: Callable[[PreprocessSpec], object]) -> None:
        rng = np.random.default_rng(3)
        images = random_images(rng, self.batch, self.out + 10, self.sizes[1])
        spec = PreprocessSpec(self.out, self.out, crop=True, resize_short=self.out + 6, bgr_to_rgb=True)
        impl = make(spec)
        reason = impl.available()  # type: ignore[attr-defined]
        if reason:
            pytest.skip(reason)
        got = impl(images)  # type: ignore[operator]
        want = NumpyReference(spec)(images)
        np.testing.assert_allclose(got, want, atol=1.0 / 255 / 0.224 + 1e-4)  # 1 LSB after normalising
        # channel swap really happened: output channel 0 comes from source channel 2
        plain = NumpyReference(PreprocessSpec(self.out, self.out, crop=True, resize_short=self.out + 6))(images)
        assert not np.allclose(plain[:, 0], want[:, 0])

    def test_float16_output(self, make: Callable[[PreprocessSpec], object]) -> None:
        impl = self._impl(make, dtype="float16")
        images = random_images(np.random.default_rng(4), 2, *self.sizes)
        got = impl(images)  # type: ignore[operator]
        assert got.dtype == np.float16
        want = NumpyReference(PreprocessSpec(self.out, self.out + 4))(images)
        np.testing.assert_allclose(got.astype(np.float32), want, atol=0.05)

    def test_buffers_are_reused_across_calls(self, make: Callable[[PreprocessSpec], object]) -> None:
        impl = self._impl(make)
        rng = np.random.default_rng(5)
        a = impl(random_images(rng, 3, *self.sizes))  # type: ignore[operator]
        b_images = random_images(rng, 3, *self.sizes)
        b = impl(b_images)  # type: ignore[operator]
        assert not np.shares_memory(a, b)  # results are the caller's, not a reused buffer
        np.testing.assert_allclose(b, NumpyReference(impl.spec)(b_images), atol=0.02)  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        "images,message",
        [
            ([], "empty batch"),
            ([np.zeros((8, 8, 3), np.float32)], "dtype float32"),
            ([np.zeros((8, 8, 4), np.uint8)], "HxWx3"),
            ([np.zeros((8, 8), np.uint8)], "HxWx3"),
            ([np.zeros((0, 8, 3), np.uint8)], r"empty \(0x8\)"),
            ([np.zeros((8, 8, 3), np.uint8), "img.png"], "not a NumPy array"),
        ],
    )
    def test_bad_input_is_a_clear_error(
        self, make: Callable[[PreprocessSpec], object], images: list[object], message: str
    ) -> None:
        impl = self._impl(make)
        with pytest.raises(UsageError, match=message):
            impl(images)  # type: ignore[operator]

    def test_one_pixel_sides(self, make: Callable[[PreprocessSpec], object]) -> None:
        impl = self._impl(make, **IDENTITY)
        rng = np.random.default_rng(6)
        images = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((1, 7, 3), (9, 1, 3), (1, 1, 3))]
        np.testing.assert_allclose(impl(images), NumpyReference(impl.spec)(images), atol=1.0)  # type: ignore[operator, attr-defined]
