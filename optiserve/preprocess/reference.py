"""The NumPy reference: the spec in array form, float64, one image at a time."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optiserve.preprocess.spec import PreprocessSpec, batch_shape, check_images, source_coords


class NumpyReference:
    name = "numpy"

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec

    @staticmethod  # the same for every spec: the registry asks before one exists
    def available() -> str | None:
        return None

    def resized(self, img: np.ndarray) -> np.ndarray:
        """Bilinear-resized (and cropped) HWC image in float64, in source channel order."""
        h, w = img.shape[:2]
        sy, sx, oy, ox = self.spec.geometry(h, w)
        y0, y1, wy = source_coords(self.spec.out_h, oy, sy, h)
        x0, x1, wx = source_coords(self.spec.out_w, ox, sx, w)
        f = img.astype(np.float64)
        wx3, wy3 = wx[None, :, None], wy[:, None, None]
        top = f[y0][:, x0] * (1 - wx3) + f[y0][:, x1] * wx3
        bottom = f[y1][:, x0] * (1 - wx3) + f[y1][:, x1] * wx3
        return np.asarray(top * (1 - wy3) + bottom * wy3)

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        check_images(images)
        s = self.spec
        out = np.empty(batch_shape(len(images), s), dtype=s.dtype)
        a, b = s.normalisation()
        for i, img in enumerate(images):
            r = self.resized(img) * a.astype(np.float64) + b.astype(np.float64)
            if s.bgr_to_rgb:
                r = r[:, :, ::-1]
            out[i] = r.transpose(2, 0, 1)
        return out
