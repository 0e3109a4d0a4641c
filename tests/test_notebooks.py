"""The notebooks run top to bottom, headless, from the committed reference profiles only."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A python3 kernelspec that starts this interpreter (the installed one says just "python", which may
    not be on PATH or may be another Python), found first through JUPYTER_PATH; and the Agg backend."""
    root = tmp_path / "jupyter"
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return spec_dir


def _run(name: str) -> tuple[Any, float]:
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    t0 = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - t0


def _outputs(nb: Any) -> list[Any]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def _text(nb: Any) -> str:
    parts = []
    for o in _outputs(nb):
        if o.output_type == "stream":
            parts.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            parts.extend(str(o.data.get(k, "")) for k in ("text/plain", "text/html"))
    return "\n".join(parts)


def test_kernelspec_uses_this_interpreter(kernel_env: Path) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.resource_dir) == kernel_env
    assert spec.argv[0] == sys.executable


@pytest.mark.parametrize("name", ["capacity_planning.ipynb", "precision_tradeoffs.ipynb"])
def test_stored_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)  # type: ignore[no-untyped-call]
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_capacity_planning(kernel_env: Path) -> None:
    nb, wall = _run("capacity_planning.ipynb")
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    images = [o for o in _outputs(nb) if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) >= 2, "the cost-vs-traffic plot and the scenario comparison"
    text = _text(nb)
    assert "USD/h (predicted)" in text
    assert any(t in text for t in ("c5.xlarge", "c7g.xlarge", "g4dn.xlarge", "Standard_D16s_v5"))
    assert "what-if plans in" in text
    assert wall < 120, f"capacity_planning.ipynb took {wall:.0f} s"


def test_precision_tradeoffs(kernel_env: Path) -> None:
    nb, wall = _run("precision_tradeoffs.ipynb")
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    images = [o for o in _outputs(nb) if o.output_type == "display_data" and "image/png" in o.data]
    assert images, "the speed-up vs drift scatter"
    text = _text(nb)
    assert "does not support bf16" in text  # the failed precisions, with their reason
    assert "int8-static" in text and "fastest (batch-1 p50)" in text
    assert wall < 120, f"precision_tradeoffs.ipynb took {wall:.0f} s"
