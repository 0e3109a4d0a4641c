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

BLOCK = (32, 8, 1)


def _compile() -> Any:
    optional_import("numba", "preprocess")
    from optiserve.preprocess import _numba_cuda_kernels

    return _numba_cuda_kernels.kernel


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

    @staticmethod  # the same for every spec: the registry asks before one exists
    def available() -> str | None:
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
