"""Corrupt or odd profile folders, in every command that reads one: one line, exit 2,
never a traceback, never an empty table with exit 0, and the files left as they were."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import profile_cli, run_cli


@pytest.fixture(scope="module")
def good(mlp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("good") / "prof"
    proc = profile_cli(mlp_path, out, "--batch", "1", cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return out


def _edit_meta(change: Callable[[dict[str, object]], object]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        meta = json.loads((folder / "profile.json").read_text())
        (folder / "profile.json").write_text(json.dumps(change(meta)))

    return apply


SHAPES: dict[str, tuple[Callable[[Path], None], str]] = {
    "not-json": (lambda f: (f / "profile.json").write_text("{not json"), "not readable"),
    "json-list": (lambda f: (f / "profile.json").write_text("[1, 2]"), "expected a JSON object"),
    "model-is-a-string": (_edit_meta(lambda m: {**m, "model": "cnn"}), "field model"),
    "sha-is-a-number": (_edit_meta(lambda m: {**m, "model": {**m["model"], "sha256": 7}}), "model.sha256"),  # type: ignore[dict-item]
    "complete-is-a-string": (_edit_meta(lambda m: {**m, "complete": "yes"}), "field complete"),
    "no-parquet": (lambda f: (f / "profile.parquet").unlink(), "no profile.parquet"),
}

COMMANDS: dict[str, Callable[[Path, Path, Path], list[str]]] = {
    "show": lambda bad, good, tmp: ["show", str(bad)],
    "predict": lambda bad, good, tmp: ["predict", str(bad), "--rate", "10"],
    "compare-new": lambda bad, good, tmp: ["compare", str(good), str(bad)],
    "compare-base": lambda bad, good, tmp: ["compare", str(bad), str(good)],
    "report": lambda bad, good, tmp: ["report", str(bad), "-o", str(tmp / "rep")],
    "plan": lambda bad, good, tmp: ["plan", "--sla", str(_sla(tmp)), "--profile", str(bad), "--trials", "2"],
}


def _sla(tmp: Path) -> Path:
    path = tmp / "sla.yaml"
    path.write_text("models:\n  mlp:\n    rate: 10\n    p99_ms: 100\n")
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_odd_profile_is_one_line_in_every_command(good: Path, tmp_path: Path, shape: str, command: str) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    spoil, needle = SHAPES[shape]
    spoil(bad)
    before = _digest(bad)
    proc = run_cli(*COMMANDS[command](bad, good, tmp_path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0], lines[0]
    assert _digest(bad) == before


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_resume_into_an_odd_profile_is_refused(mlp_path: Path, good: Path, tmp_path: Path, shape: str) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    SHAPES[shape][0](bad)
    before = _digest(bad)
    proc = profile_cli(mlp_path, bad, "--batch", "1,2", "--resume", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert SHAPES[shape][1] in proc.stderr
    assert _digest(bad) == before
