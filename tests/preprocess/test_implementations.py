"""Every implementation against the shared suite. The Numba CUDA kernel runs under
Numba's CUDA simulator in a child interpreter (the simulator must be switched on
before Numba is imported); CuPy needs a real GPU and skips with a reason."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from optiserve.preprocess import PREPROCESSORS
from optiserve.preprocess.spec import PreprocessSpec
from optiserve.testing.preprocess_conformance import PreprocessConformance
from tests.conftest import REPO


class TestNumpyReference(PreprocessConformance):
    @pytest.fixture
    def make(self) -> Callable[[PreprocessSpec], object]:
        return PREPROCESSORS["numpy"]


class TestNumbaCPU(PreprocessConformance):
    out = 64
    sizes = (20, 300)

    @pytest.fixture
    def make(self) -> Callable[[PreprocessSpec], object]:
        return PREPROCESSORS["numba-cpu"]


@pytest.mark.gpu
class TestCuPy(PreprocessConformance):
    out = 64
    sizes = (20, 300)

    @pytest.fixture
    def make(self) -> Callable[[PreprocessSpec], object]:
        return PREPROCESSORS["cupy"]


@pytest.mark.gpu
class TestNumbaCUDAOnDevice(PreprocessConformance):
    out = 64
    sizes = (20, 300)

    @pytest.fixture
    def make(self) -> Callable[[PreprocessSpec], object]:
        return PREPROCESSORS["numba-cuda"]


def test_numba_cuda_kernel_under_the_simulator() -> None:
    pytest.importorskip("numba", reason="numba not installed")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/preprocess/cudasim_suite.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " skipped" not in proc.stdout, proc.stdout[-500:]
