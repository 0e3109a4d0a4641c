"""/proc/cpuinfo, parsed once per call: shared by the fingerprint and the variant recipes."""

from __future__ import annotations

from pathlib import Path


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first value of each key in /proc/cpuinfo text (the first processor's block)."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = (s.strip() for s in line.split(":", 1))
            info.setdefault(k, v)
    return info


def read_cpuinfo() -> dict[str, str]:
    """This machine's parsed cpuinfo; empty where there is none (not Linux)."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {}


def flags(info: dict[str, str]) -> set[str]:
    """The CPU flags (x86 ``flags``, ARM ``Features``)."""
    return set((info.get("flags") or info.get("Features") or "").split())
