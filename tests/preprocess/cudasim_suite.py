"""Run by test_implementations.py in a child with NUMBA_ENABLE_CUDASIM=1 (not collected directly)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from optiserve.preprocess import PREPROCESSORS
from optiserve.preprocess.spec import PreprocessSpec
from optiserve.testing.preprocess_conformance import PreprocessConformance


class TestNumbaCUDASimulated(PreprocessConformance):
    out = 6  # the simulator runs every thread in Python: tiny inputs only
    sizes = (3, 17)
    batch = 3

    @pytest.fixture
    def make(self) -> Callable[[PreprocessSpec], object]:
        return PREPROCESSORS["numba-cuda"]
