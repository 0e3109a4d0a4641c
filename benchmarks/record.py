"""One JSON record per benchmark run: what was measured, where, when and at which commit.

The README's benchmark tables are generated from these files (``scripts/bench_tables.py``),
never typed by hand, so every figure there names the run it came from. A record is
written by ``benchmarks/conftest.py`` at the end of each pytest session over
``benchmarks/`` (``make bench`` or a single file) into ``benchmarks/results/``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
REPORT = "report"  # the target of a ratio that is printed and recorded, never asserted
RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Ratio:
    """One measured ratio. ``passed`` is None for a report-only ratio (target ``report``)."""

    name: str
    value: float
    target: str
    passed: bool | None
    detail: str = ""
    test: str = ""  # the pytest node id that measured it

    @property
    def asserts(self) -> bool:
        return self.target != REPORT


@dataclass(frozen=True)
class Outcome:
    """How one benchmark test ended: a skipped GPU benchmark says so instead of vanishing."""

    test: str
    outcome: str  # passed, failed, skipped
    reason: str = ""


@dataclass(frozen=True)
class Benchmark:
    """One benchmark module's share of a run: ratios, richer tables (rows), test outcomes."""

    module: str  # file stem, e.g. test_precision_speedup
    summary: str  # first line of the module docstring
    ratios: tuple[Ratio, ...] = ()
    tables: Mapping[str, tuple[Row, ...]] = field(default_factory=dict)
    outcomes: tuple[Outcome, ...] = ()
    partial: bool = False  # some of its tests were deselected (-k): its tables may lack rows

    @property
    def asserts(self) -> bool:
        """True when at least one ratio is a target that fails the test when missed."""
        return any(r.asserts for r in self.ratios)

    @property
    def measured(self) -> bool:
        return bool(self.ratios) or any(self.tables.values())


@dataclass(frozen=True)
class Machine:
    """What the figures depend on; ``fingerprint`` is ``optiserve.profile.hardware``'s id."""

    fingerprint: str | None
    cpu_model: str
    usable_cpus: int
    logical_cpus: int
    memory_gb: float | None
    os: str
    python: str


@dataclass(frozen=True)
class RunRecord:
    """A whole run (one pytest session): schema-versioned, read back by the table generator."""

    schema_version: int
    created_utc: str  # ISO 8601, seconds, with +00:00
    machine: Machine
    git_commit: str | None
    git_dirty: bool | None
    command: str
    benchmarks: tuple[Benchmark, ...]
    note: str = ""

    def benchmark(self, module: str) -> Benchmark | None:
        return next((b for b in self.benchmarks if b.module == module), None)

    @property
    def date(self) -> str:
        return self.created_utc[:10]

    def to_json(self) -> str:
        d = asdict(self)
        for b, src in zip(d["benchmarks"], self.benchmarks, strict=True):
            b["asserts"] = src.asserts  # derived, written for readers of the file
            for r, ratio in zip(b["ratios"], src.ratios, strict=True):
                r["asserts"] = ratio.asserts
        return json.dumps(_clean(d), indent=2, allow_nan=False) + "\n"

    @staticmethod
    def from_json(text: str) -> RunRecord:
        d = json.loads(text)
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"benchmark record schema {version!r}, this reader knows {SCHEMA_VERSION}")
        benches = tuple(
            Benchmark(
                module=b["module"],
                summary=b.get("summary", ""),
                ratios=tuple(
                    Ratio(
                        r["name"], _float(r["value"]), r["target"], r["passed"], r.get("detail", ""), r.get("test", "")
                    )
                    for r in b.get("ratios", ())
                ),
                tables={k: tuple(rows) for k, rows in b.get("tables", {}).items()},
                outcomes=tuple(Outcome(o["test"], o["outcome"], o.get("reason", "")) for o in b.get("outcomes", ())),
                partial=bool(b.get("partial", False)),
            )
            for b in d["benchmarks"]
        )
        return RunRecord(
            schema_version=version,
            created_utc=d["created_utc"],
            machine=Machine(**d["machine"]),
            git_commit=d.get("git_commit"),
            git_dirty=d.get("git_dirty"),
            command=d.get("command", ""),
            benchmarks=benches,
            note=d.get("note", ""),
        )


def _clean(o: object) -> object:
    """Plain JSON: NumPy scalars as Python ones, inf/NaN as null (strict JSON has neither)."""
    if isinstance(o, Mapping):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, str | bytes):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if o is None or isinstance(o, str | int | float | bool):
        return o
    raise TypeError(f"{type(o).__name__} is not JSON serialisable in a benchmark record")


def _float(v: object) -> float:
    return float("nan") if v is None else float(v)  # type: ignore[arg-type]


def this_machine() -> Machine:
    from optiserve.profile.hardware import fingerprint

    hw = fingerprint()
    return Machine(
        fingerprint=str(hw["id"]),
        cpu_model=str(hw["cpu_model"]),
        usable_cpus=int(hw["usable_cpus"]),
        logical_cpus=int(hw["logical_cpus"]),
        memory_gb=float(hw["memory_gb"]),
        os=str(hw["os"]),
        python=platform.python_version(),
    )


def git_state(repo: Path = REPO) -> tuple[str | None, bool | None]:
    """HEAD and whether tracked files differ from it; (None, None) without git or a checkout.

    ``OPTISERVE_BENCH_NO_GIT=1`` skips git (a run beside someone else's commit in progress);
    ``--no-optional-locks`` keeps ``git status`` from writing the index."""
    if os.environ.get("OPTISERVE_BENCH_NO_GIT"):
        return None, None
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head or None, bool(status.strip())


def now_utc() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def file_name(record: RunRecord) -> str:
    """Sortable by time; the machine id keeps two machines' runs of one second apart."""
    stamp = record.created_utc.replace("-", "").replace(":", "").replace("+0000", "Z")
    return f"{stamp}-{record.machine.fingerprint or 'unknown'}.json"


def write_record(record: RunRecord, folder: Path = RESULTS) -> Path:
    """Atomic: a reader never sees half a record."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(record)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(record.to_json())
    tmp.replace(path)
    return path


def load_records(folder: Path = RESULTS) -> list[RunRecord]:
    """Every record in ``folder``, oldest first."""
    records = [RunRecord.from_json(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return sorted(records, key=lambda r: r.created_utc)


def newest(records: Sequence[RunRecord], module: str) -> tuple[RunRecord, Benchmark] | None:
    """The newest run that measured ``module``: a run where it was skipped (a GPU benchmark
    on a CPU machine) does not hide the last one that measured it, and a partial run
    (``-k``) is used only where no complete one exists."""
    for complete in (True, False):
        for run in reversed(records):
            b = run.benchmark(module)
            if b is not None and b.measured and b.partial != complete:
                return run, b
    return None
