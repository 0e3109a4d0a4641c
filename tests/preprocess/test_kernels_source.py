"""The CUDA C sources compile (to PTX, no GPU needed) and ship inside the package."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from optiserve.preprocess.cupy_kernel import kernel_source
from tests.conftest import REPO

KERNELS = sorted((REPO / "kernels").glob("*.cu"))


@pytest.mark.parametrize("source", KERNELS, ids=[k.name for k in KERNELS])
def test_cuda_source_compiles_to_ptx(source: Path, tmp_path: Path) -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not on PATH: cannot check the CUDA sources here")
    ptx = tmp_path / (source.stem + ".ptx")
    proc = subprocess.run([nvcc, "-ptx", "-std=c++14", str(source), "-o", str(ptx)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = ptx.read_text()
    assert ".entry preprocess_f32" in text and ".entry preprocess_f16" in text


def test_packaged_source_is_the_repository_file() -> None:
    assert kernel_source() == (REPO / "kernels" / "preprocess.cu").read_text()


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "optiserve").rglob("__init__.py")}
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert "optiserve.kernels" in listed
