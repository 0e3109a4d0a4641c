"""Fused image pre-processing: one spec, four implementations, found by name.

``numpy`` is the reference; ``numba-cpu``, ``numba-cuda`` and ``cupy`` must
match it (tests/preprocess). Optional libraries are imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from optiserve.errors import UnknownNameError
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


PREPROCESSORS: dict[str, Callable[[PreprocessSpec], Preprocessor]] = {
    "numpy": NumpyReference,
    "numba-cpu": NumbaCPU,
    "numba-cuda": NumbaCUDA,
    "cupy": CuPyKernel,
}


def get_preprocessor(name: str, spec: PreprocessSpec) -> Preprocessor:
    if name not in PREPROCESSORS:
        raise UnknownNameError("pre-processor", name, list(PREPROCESSORS))
    return PREPROCESSORS[name](spec)


def best_available(spec: PreprocessSpec) -> Preprocessor:
    """The fastest implementation usable here on the CPU side (numba-cpu, else numpy)."""
    fast = NumbaCPU(spec)
    return fast if fast.available() is None else NumpyReference(spec)


__all__ = [
    "PREPROCESSORS",
    "PreprocessSpec",
    "Preprocessor",
    "best_available",
    "check_images",
    "effective_bytes",
    "get_preprocessor",
]
