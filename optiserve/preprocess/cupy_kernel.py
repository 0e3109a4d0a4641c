"""CuPy kernel: ``kernels/preprocess.cu`` compiled by NVRTC through ``RawModule``.

The CUDA C source ships inside the wheel as ``optiserve.kernels`` package data.
Host staging and output buffers are pinned and reused, device buffers grow and
are reused; copies and the kernel run on one stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

from optiserve._imports import missing_reason, optional_import
from optiserve.preprocess.spec import PreprocessSpec, batch_shape, check_images, copy_into, pack

BLOCK = (32, 8, 1)


def kernel_source() -> str:
    """The CUDA C source, wherever the package was installed from."""
    return resources.files("optiserve.kernels").joinpath("preprocess.cu").read_text()


class CuPyKernel:
    name = "cupy"

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec
        self._a, self._b = spec.normalisation()
        self._och = np.array([2, 1, 0] if spec.bgr_to_rgb else [0, 1, 2], np.int32)
        self._module: Any = None
        self._pinned_in: Any = None
        self._dev_in: Any = None
        self._dev_out: Any = None
        self._pinned_out: Any = None

    @staticmethod  # the same for every spec: the registry asks before one exists
    def available() -> str | None:
        reason = missing_reason("cupy", "gpu")
        if reason:
            return reason
        import cupy

        try:
            return None if cupy.cuda.runtime.getDeviceCount() > 0 else "no CUDA GPU visible to CuPy"
        except Exception as exc:
            return f"CUDA unavailable: {str(exc).splitlines()[0]}"

    def _kernel(self) -> Any:
        cupy = optional_import("cupy", "gpu")
        if self._module is None:
            self._module = cupy.RawModule(code=kernel_source(), options=("-std=c++14",))
        return self._module.get_function("preprocess_f16" if self.spec.dtype == "float16" else "preprocess_f32")

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        check_images(images)
        cupy = optional_import("cupy", "gpu")
        kernel = self._kernel()
        packed = pack(images, self.spec)
        n = len(images)
        shape = batch_shape(n, self.spec)
        if self._pinned_in is None or self._pinned_in.size < packed.total_bytes:
            mem = cupy.cuda.alloc_pinned_memory(packed.total_bytes)
            self._pinned_in = np.frombuffer(mem, np.uint8, packed.total_bytes)
            self._dev_in = cupy.empty(packed.total_bytes, cupy.uint8)
        if self._dev_out is None or self._dev_out.shape != shape:
            self._dev_out = cupy.empty(shape, dtype=self.spec.dtype)
            nbytes = int(np.prod(shape)) * np.dtype(self.spec.dtype).itemsize
            mem = cupy.cuda.alloc_pinned_memory(nbytes)
            self._pinned_out = np.frombuffer(mem, self.spec.dtype, int(np.prod(shape))).reshape(shape)
        copy_into(self._pinned_in, images, packed)
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            self._dev_in[: packed.total_bytes].set(self._pinned_in[: packed.total_bytes], stream=stream)
            tables = [
                cupy.asarray(t)
                for t in (packed.offsets, packed.heights, packed.widths, packed.geom, self._a, self._b, self._och)
            ]
            grid = (math.ceil(self.spec.out_w / BLOCK[0]), math.ceil(self.spec.out_h / BLOCK[1]), n)
            kernel(
                grid,
                BLOCK,
                (
                    self._dev_in,
                    *tables,
                    self._dev_out,
                    np.int32(n),
                    np.int32(self.spec.out_h),
                    np.int32(self.spec.out_w),
                ),
            )
            self._dev_out.get(stream=stream, out=self._pinned_out)
        stream.synchronize()
        return np.array(self._pinned_out, copy=True)  # the pinned buffer is reused next call
