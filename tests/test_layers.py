"""The package's shape: no import runs back up the layers, and light processes stay light.

The layers, lowest first, as DESIGN.md draws them; a module may import its own layer
and any lower one, at module level or inside a function (a lazy import still runs).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "optiserve"
BASE = {
    "_version",
    "_cpuinfo",
    "_rows",
    "_lazy",
    "_registry",
    "_imports",
    "_files",
    "_reasons",
    "_validated_yaml",
    "_oip_client",
    "_socket_driver",
    "_curves",
    "_audit",
    "_signing",
    "_mlflow",
    "types",
    "errors",
}
LAYERS = [
    BASE,
    {"kernels"},
    {"models"},
    {"variants"},
    {"runtimes"},
    {"preprocess"},
    {"profile"},
    {"estimate"},
    {"plan"},
    {"emit", "report", "serve"},
    {"testing", "cli", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "optiserve" and len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return out


def test_no_import_runs_back_up_the_layers() -> None:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        me = rel.parts[0].removesuffix(".py")
        if me == "__init__":
            continue
        assert me in RANK, f"optiserve/{rel}: its layer is not in tests/test_layers.py"
        for module, line in _imports(path):
            if module == "optiserve":
                bad.append(f"optiserve/{rel}:{line} imports the package root")
                continue
            other = _layer(module)
            if other is None:
                continue
            assert other in RANK, f"optiserve/{rel}:{line}: {module}'s layer is not in tests/test_layers.py"
            if RANK[other] > RANK[me]:
                bad.append(f"optiserve/{rel}:{line} ({me}) imports {module} ({other}), a higher layer")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("module", "heavy"),
    [
        ("optiserve.errors", ("numpy", "onnx", "pyarrow", "pydantic", "onnxruntime")),
        ("optiserve", ("numpy", "onnx", "pyarrow", "pydantic", "optuna")),
        ("optiserve.profile.worker", ("onnx", "onnxruntime", "pyarrow", "optuna", "pandas")),
        ("optiserve.serve.app", ("onnxruntime", "pyarrow", "optuna", "pandas")),  # onnx: it reads the graph
    ],
)
def test_light_processes_import_only_what_they_use(module: str, heavy: tuple[str, ...]) -> None:
    """What a worker, server or error import pulls in (timed before/after in the issue note, not asserted here)."""
    code = f"import sys, {module}; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"import {module} loads {loaded}"
