"""Numba CUDA kernel: one thread per output pixel, the spec's arithmetic in float32.

Images are laid end to end in a pinned host buffer, copied once per batch to a
device buffer that is reused while it is large enough; the output comes back
through a pinned buffer too. Runs under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) for tests on machines without a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from optiserve._imports import optional_import
from optiserve.preprocess.spec import PreprocessSpec, batch_shape, check_images, copy_into, pack

_KERNELS: dict[str, Any] = {}
BLOCK = (32, 8, 1)


def _compile() -> Any:
    if "cuda" in _KERNELS:
        return _KERNELS["cuda"]
    optional_import("numba", "preprocess")
    from numba import cuda

    @cuda.jit(device=True, inline=True)
    def taps(o, off, scale, n):  # type: ignore[no-untyped-def]
        f = (np.float32(o) + off + np.float32(0.5)) * scale - np.float32(0.5)
        i = int(math.floor(f))  # noqa: RUF046 (numba: float -> int)
        t = f - np.float32(i)
        if i < 0:
            i = 0
            t = np.float32(0.0)
        if i >= n - 1:
            i = n - 1
            t = np.float32(0.0)
        return i, min(i + 1, n - 1), t

    @cuda.jit
    def kernel(src, offsets, heights, widths, geom, a, b, och, out):  # type: ignore[no-untyped-def]
        x, y, k = cuda.grid(3)
        n, _, out_h, out_w = out.shape
        if x >= out_w or y >= out_h or k >= n:
            return
        h = heights[k]
        w = widths[k]
        y0, y1, wy = taps(y, geom[k, 2], geom[k, 0], h)
        x0, x1, wx = taps(x, geom[k, 3], geom[k, 1], w)
        base = offsets[k]
        r0 = base + y0 * w * 3
        r1 = base + y1 * w * 3
        one = np.float32(1.0)
        w00, w01, w10, w11 = (one - wx) * (one - wy), wx * (one - wy), (one - wx) * wy, wx * wy
        for c in range(3):
            v = (
                np.float32(src[r0 + x0 * 3 + c]) * w00
                + np.float32(src[r0 + x1 * 3 + c]) * w01
                + np.float32(src[r1 + x0 * 3 + c]) * w10
                + np.float32(src[r1 + x1 * 3 + c]) * w11
            )
            out[k, och[c], y, x] = v * a[c] + b[c]

    _KERNELS["cuda"] = kernel
    return kernel


class NumbaCUDA:
    name = "numba-cuda"

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec
        self._a, self._b = spec.normalisation()
        self._och = np.array([2, 1, 0] if spec.bgr_to_rgb else [0, 1, 2], np.int64)
        self._host_in: Any = None
        self._dev_in: Any = None
        self._dev_out: Any = None
        self._host_out: Any = None

    def available(self) -> str | None:
        try:
            from numba import cuda
        except ImportError as exc:
            return f"numba is not installed ({exc}); pip install 'optiserve[preprocess]'"
        try:
            return None if cuda.is_available() else "no CUDA GPU visible to Numba"
        except Exception as exc:  # driver present but broken
            return f"CUDA unavailable: {exc}"

    def _buffers(self, nbytes: int, shape: tuple[int, ...]) -> None:
        from numba import cuda

        if self._host_in is None or self._host_in.size < nbytes:  # grow, never shrink
            self._host_in = cuda.pinned_array(nbytes, dtype=np.uint8)
            self._dev_in = cuda.device_array(nbytes, dtype=np.uint8)
        if self._dev_out is None or self._dev_out.shape != shape:
            self._dev_out = cuda.device_array(shape, dtype=self.spec.dtype)
            self._host_out = cuda.pinned_array(shape, dtype=self.spec.dtype)

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        check_images(images)
        from numba import cuda

        kernel = _compile()
        packed = pack(images, self.spec)
        shape = batch_shape(len(images), self.spec)
        self._buffers(packed.total_bytes, shape)
        copy_into(self._host_in, images, packed)
        stream = cuda.stream()
        self._dev_in[: packed.total_bytes].copy_to_device(self._host_in[: packed.total_bytes], stream=stream)
        tables = [
            cuda.to_device(t, stream=stream)
            for t in (packed.offsets, packed.heights, packed.widths, packed.geom, self._a, self._b, self._och)
        ]
        grid = (
            math.ceil(self.spec.out_w / BLOCK[0]),
            math.ceil(self.spec.out_h / BLOCK[1]),
            len(images),
        )
        kernel[grid, BLOCK, stream](self._dev_in, *tables, self._dev_out)
        self._dev_out.copy_to_host(self._host_out, stream=stream)
        stream.synchronize()
        return np.array(self._host_out, copy=True)
