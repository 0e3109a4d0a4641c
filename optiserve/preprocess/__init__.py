"""Fused image pre-processing: one spec, four implementations, found by name.

``numpy`` is the reference; ``numba-cpu``, ``numba-cuda`` and ``cupy`` must
match it (tests/preprocess). Optional libraries are imported on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from optiserve._registry import Entry, Registry
from optiserve.preprocess.cupy_kernel import CuPyKernel
from optiserve.preprocess.numba_cpu import NumbaCPU
from optiserve.preprocess.numba_cuda import NumbaCUDA
from optiserve.preprocess.reference import NumpyReference
from optiserve.preprocess.spec import PreprocessSpec, check_images, effective_bytes


@runtime_checkable
class Preprocessor(Protocol):
    """Turns a batch of uint8 HWC images into the model's NCHW input (host array)."""

    name: str
    spec: PreprocessSpec

    def available(self) -> str | None: ...

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


PREPROCESSORS: Registry[Preprocessor] = Registry(
    "pre-processor",
    (
        Entry("numpy", NumpyReference, NumpyReference.available, "NumPy reference"),
        Entry("numba-cpu", NumbaCPU, NumbaCPU.available, "Numba, fused, parallel over images"),
        Entry("numba-cuda", NumbaCUDA, NumbaCUDA.available, "Numba CUDA kernel"),
        Entry("cupy", CuPyKernel, CuPyKernel.available, "CuPy raw kernel from kernels/"),
    ),
)


def get_preprocessor(name: str, spec: PreprocessSpec) -> Preprocessor:
    """The implementation ``name`` for ``spec``; an unknown name lists the valid ones."""
    return PREPROCESSORS.create(name, spec)


def best_available(spec: PreprocessSpec) -> Preprocessor:
    """The fastest implementation usable here on the CPU side (numba-cpu, else numpy)."""
    name = "numba-cpu" if PREPROCESSORS.reason("numba-cpu") is None else "numpy"
    return PREPROCESSORS.create(name, spec)


__all__ = [
    "PREPROCESSORS",
    "PreprocessSpec",
    "Preprocessor",
    "best_available",
    "check_images",
    "effective_bytes",
    "get_preprocessor",
]
