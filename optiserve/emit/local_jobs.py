"""Run fanout Jobs on this machine: the same script, the same environment, the same layout.

A stand-in for the cluster, so the fanout -> gather -> plan loop runs end to end
where there is none. Each Job file is read back; its ``profile`` container's
command runs in a subprocess with the container's environment, with only the
two paths that differ mapped: the model (the file given here, checked by the
script against the plan's SHA-256 exactly as in the pod) and the results folder
(``STORE_ROOT/<plan>/<model>/<entry>``: what a PVC or a bucket holds after the
real Job). Nothing here pretends to be the instance type: the profile records
this machine, and ``gather`` says so when its vCPUs differ from the entry's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from optiserve._files import read_json
from optiserve.emit.fanout import INDEX
from optiserve.errors import UsageError


@dataclass(frozen=True)
class LocalRun:
    job: str
    entry: str
    out: Path
    returncode: int
    log: str  # the last lines of its output


def _profile_container(obj: Mapping[str, Any], where: Path) -> Mapping[str, Any]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        if c.get("name") == "profile":
            return dict(c)
    raise UsageError(f"{where}: not an optiserve fanout Job (no 'profile' container)")


def run_local(
    jobs_dir: Path, store_root: Path, models: Mapping[str, Path] | None = None, timeout_s: float | None = None
) -> list[LocalRun]:
    """Run every Job of ``jobs_dir`` (written by ``fanout``) one after another, as its pod would."""
    jobs_dir, store_root = Path(jobs_dir), Path(store_root)
    index = read_json(jobs_dir / INDEX, "fanout index")
    if not isinstance(index, dict) or not isinstance(index.get("jobs"), list):
        raise UsageError(f"{jobs_dir / INDEX}: not a fanout index")
    models = dict(models or {})
    runs = []
    for j in index["jobs"]:
        path = jobs_dir / str(j["file"])
        try:
            obj = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"cannot read Job {path}: {exc}") from None
        c = _profile_container(obj, path)
        model = models.get(j["model"]) or (Path(j["model_file"]) if j.get("model_file") else None)
        if model is None or not Path(model).is_file():
            raise UsageError(f"Job {j['name']}: no local file for model {j['model']!r}: pass --model NAME=PATH")
        out = store_root / str(j["out"])
        out.mkdir(parents=True, exist_ok=True)
        env = {e["name"]: str(e.get("value", "")) for e in c.get("env", [])}
        cache = os.environ.get("OPTISERVE_CACHE") or tempfile.mkdtemp(prefix="optiserve-cache-")
        env |= {"OPTISERVE_MODEL": str(Path(model).resolve()), "OPTISERVE_OUT": str(out), "OPTISERVE_CACHE": cache}
        env |= {"HOME": os.environ.get("HOME", "/tmp"), "NUMBA_CACHE_DIR": str(Path(cache) / "numba")}
        # `optiserve` of this interpreter first on PATH: the pod's image has it as its console script
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        limit = timeout_s or float(obj["spec"].get("activeDeadlineSeconds", 3600))
        try:
            done = subprocess.run(
                list(c["command"]) + list(c.get("args", [])),
                env=env,
                capture_output=True,
                text=True,
                timeout=limit,
            )
            code, log = done.returncode, (done.stdout + done.stderr)
        except subprocess.TimeoutExpired:
            code, log = 124, f"past the Job's deadline ({limit:g} s)"
        runs.append(LocalRun(str(j["name"]), str(j["entry"]), out, code, "\n".join(log.splitlines()[-5:])))
    return runs
