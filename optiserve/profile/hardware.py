"""Who measured: the hardware fingerprint and library versions stored with every profile."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import psutil

from optiserve._cpuinfo import flags as cpu_flags
from optiserve._cpuinfo import read_cpuinfo

_FLAGS_OF_INTEREST = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "amx_fp16",
    "avx512ifma",
    "avx512vbmi",
    "vaes",
    "clwb",
    "neon",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
)
# cpuinfo keys that identify the part (estimate/cpu_id.py): x86 vendor/family/model/stepping, ARM implementer/part.
_ID_KEYS = {
    "cpu_vendor": "vendor_id",
    "cpu_family": "cpu family",
    "cpu_model_number": "model",
    "cpu_stepping": "stepping",
    "cpu_implementer": "CPU implementer",
    "cpu_part": "CPU part",
}


_NUMERIC = {"cpu_family", "cpu_model_number", "cpu_stepping"}


def cpu_fields(ci: dict[str, str]) -> dict[str, Any]:
    """The identifying fields of a parsed cpuinfo; a key the kernel did not print is left out.
    Older profiles lack them all: cpu_id falls back to the model name, then the flags."""
    out: dict[str, Any] = {}
    for field, key in _ID_KEYS.items():
        if key in ci:
            value = ci[key]
            out[field] = int(value) if field in _NUMERIC and value.isdigit() else value
    return out


def cpu_fingerprint(ci: dict[str, str]) -> dict[str, Any]:
    """The CPU part of the fingerprint from a parsed cpuinfo: model name, flags of
    interest, and the identifying fields (vendor, family/model/stepping, ARM part)."""
    flags = cpu_flags(ci)
    return {
        "cpu_model": ci.get("model name") or platform.processor() or platform.machine(),
        "cpu_flags": sorted(f for f in _FLAGS_OF_INTEREST if f in flags),
        **cpu_fields(ci),
    }


def gpus() -> list[dict[str, str]]:
    """GPUs as nvidia-smi reports them; empty where there is none."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            rows.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
    return rows


def fingerprint() -> dict[str, Any]:
    """The machine as the numbers depend on it. ``id`` hashes what makes two
    machines measure alike (CPU model, core counts, memory, GPUs), not the host name."""
    ci = read_cpuinfo()
    mem = psutil.virtual_memory().total
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 1
    fp: dict[str, Any] = {
        **cpu_fingerprint(ci),
        "arch": platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False) or 0,
        "logical_cpus": psutil.cpu_count(logical=True) or 0,
        "usable_cpus": affinity,
        "memory_gb": round(mem / 2**30, 1),
        "gpus": gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "hostname": platform.node(),
    }
    fp["id"] = machine_id(fp)
    return fp


# What makes two machines measure alike. The identifying cpuinfo fields and the flags count
# because guests mask the model name: a Zen 4 and a Zen 5 2-vCPU guest both say "AMD EPYC"
# and hashed alike on the name alone, so a shared cache would have given one the other's ceilings.
_ID_FIELDS = ("cpu_model", "arch", "logical_cpus", "usable_cpus", "memory_gb", "gpus", "cpu_flags", *_ID_KEYS)


def machine_id(fp: dict[str, Any]) -> str:
    """The fingerprint's ``id``: a hash of the fields that make two machines measure alike
    (CPU identity and flags, core counts, memory, GPUs), never the host name."""
    key = {k: fp[k] for k in _ID_FIELDS if k in fp}
    return hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:12]


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("optiserve", "onnx", "onnxruntime", "numpy", "pandas", "pyarrow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


class ForeignLoad:
    """CPU time that *other* processes took while we measured, as a fraction of
    all CPUs: the machine-wide busy time minus our own. A load average would
    count the measured process itself and cry wolf on every multi-threaded run."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._t0 = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        sys_t = psutil.cpu_times()
        busy = sum(sys_t) - sys_t.idle - getattr(sys_t, "iowait", 0.0)
        own = self._proc.cpu_times()
        return busy, own.user + own.system, time.monotonic()

    def fraction(self) -> float:
        busy1, own1, t1 = self._sample()
        busy0, own0, t0 = self._t0
        cpus = psutil.cpu_count() or 1
        wall = max(t1 - t0, 1e-9)
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall * cpus)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
