"""Why something failed, in one line a user can read in a table cell or a log.

Back ends (ONNX Runtime above all) raise multi-line messages that start with an
error-code banner, carry C++ stack frames and name files in caches and temporary
folders; a failed row wants the line that says what went wrong, and no path that
will be gone by the time anyone reads it.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from optiserve.errors import OptiserveError

# "[ONNXRuntimeError] : 10 : INVALID_GRAPH : " says again what the exception type says
_ORT_BANNER = re.compile(r"\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
# lines that are never the reason: Python and C++ stack frames, carets, separators
_NOISE = re.compile(
    r"^(Traceback \(most recent call last\)|File \".*\", line \d+|Stacktrace:?|#\d+\s|\^+$|~+$|[-=*_]{3,}$|"
    r"During handling of the above exception|The above exception was the direct cause)"
)
# C++ source positions and signatures in ORT's messages: where, not why
_CPP = re.compile(r"(?:/\S+?\.(?:cc|cpp|cxx|h|hpp|cu|cuh):\d+\s+)(?:[\w:~<>]+::[\w~]+\([^()]*\)(?:\s*const)?\s+)?")
_TELLING = re.compile(
    r"error|fail|invalid|unrecogni[sz]ed|unsupported|not supported|not implemented|could not|cannot|can't|"
    r"mismatch|expected|missing|unknown|exceed|out of memory|no such|denied|illegal|overflow",
    re.IGNORECASE,
)
# ORT nests a failure inside every If/Loop that contains it: the innermost node and its message say why
_ORT_CHAIN = re.compile(
    r"(?:Non-zero status code returned while running (\w+) node\. Name:'([^']*)' Status Message:\s*)+"
)
_SCRATCH = re.compile(r"/\.[0-9a-f]{8,}\.|/variants/[0-9a-f]{24}\.")  # a variant cache: its build folders, entries
_PATH = re.compile(r"(?<![\w.~])(?:/[^\s/:'\"()\[\]{},;]+)+/?")


def _scratch_roots() -> tuple[str, ...]:
    """Folders whose files are transient: temporary folders and caches."""
    roots = {tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm", str(Path.home() / ".cache")}
    for var in ("TMPDIR", "XDG_CACHE_HOME", "OPTISERVE_CACHE"):
        if os.environ.get(var):
            roots.add(os.environ[var])
    return tuple(sorted((r.rstrip("/") for r in roots if r and r != "/"), key=len, reverse=True))


def _shorten_paths(line: str) -> str:
    roots = _scratch_roots()

    def short(m: re.Match[str]) -> str:
        p = m.group(0)
        transient = any(p == r or p.startswith(r + "/") for r in roots) or _SCRATCH.search(p) is not None
        return (Path(p).name or p) if transient else p

    return _PATH.sub(short, line)


def _pick(text: str) -> str:
    """The most telling line: the first that names an error (the last, in a Python traceback),
    else the first that is not noise; with the indented detail lines under it ("index: 1 Got: 4")."""
    raw = text.splitlines()
    idx = [i for i, ln in enumerate(raw) if ln.strip() and not _NOISE.match(ln.strip())]
    if not idx:
        return ""
    telling = [i for i in idx if _TELLING.search(raw[i])]
    pool = telling or idx
    at = pool[-1] if "Traceback (most recent call last)" in text else pool[0]
    parts = [raw[at].strip()]
    for ln in raw[at + 1 : at + 3]:
        if not ln[:1].isspace() or not ln.strip() or ln.strip().startswith("Please"):
            break
        parts.append(ln.strip())
    return "; ".join(parts)


def _clip(line: str, limit: int) -> str:
    """At most ``limit`` characters; a long line keeps its head and the part from its last "Error"."""
    if len(line) <= limit:
        return line
    cut = max(line.rfind(" Error "), line.rfind("Error:"), line.rfind(", Error"))
    if cut > limit // 3:
        head, tail = line[: limit // 3].rstrip(), line[cut:].lstrip(" ,")
        if len(tail) <= limit - len(head) - 5:
            return f"{head} ... {tail}"
    return line[: limit - 3].rstrip() + "..."


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: reason`` for a failure in one line (an ``OptiserveError``'s own message as it is:
    it is written for users already); falls back to the cause when the message is empty."""
    text = str(exc)
    if not text.strip() and exc.__cause__ is not None:
        return one_line(exc.__cause__, limit)
    line = _shorten_paths(_CPP.sub("", _ORT_BANNER.sub("", _pick(text))))
    line = _ORT_CHAIN.sub(lambda m: f"{m.group(1)} node {m.group(2).rsplit('/', 1)[-1]!r}: ", line)
    line = re.sub(r"\s+", " ", line).strip()
    if isinstance(exc, OptiserveError):
        return _clip(line or type(exc).__name__, limit)
    return _clip(f"{type(exc).__name__}: {line}" if line else type(exc).__name__, limit)
