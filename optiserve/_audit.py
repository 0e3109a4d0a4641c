"""The audit trail: one JSON line per ``plan``, ``emit`` and ``verify``, appended, never rewritten.

Each line says who ran what, where and when (UTC), from which inputs and to which
outputs (by SHA-256: model, variant, profile, catalog, SLA in; the files written
out), and what was decided with its binding constraint — enough to tell later which
bytes a deployment came from. The log is ``$OPTISERVE_AUDIT_LOG`` or the user's
state folder; ``OPTISERVE_AUDIT_LOG=off`` turns it off. A line is written with one
``write`` on an ``O_APPEND`` descriptor under ``flock``, so concurrent commands never
interleave.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optiserve.errors import UsageError


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class AuditRecord:
    command: str  # plan, emit, verify
    argv: tuple[str, ...]
    inputs: Mapping[str, str]  # what -> sha256 (model:NAME, variant:NAME, profile:NAME, catalog, sla, plan)
    outputs: Mapping[str, str]  # path -> sha256
    decision: Sequence[Mapping[str, Any]]  # per model: the placement chosen and its binding constraint
    plan_id: str | None = None
    result: Mapping[str, Any] = field(default_factory=dict)  # what the command found, e.g. verify's verdict
    time: str = field(default_factory=_now)
    user: str = field(default_factory=lambda: _user())
    host: str = field(default_factory=socket.gethostname)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["argv"] = list(self.argv)
        d["decision"] = [dict(x) for x in self.decision]
        d["result"] = dict(self.result)
        return d

    def annotations(self, prefix: str = "optiserve.io") -> dict[str, str]:
        """The record as Kubernetes annotations (the outputs are the objects themselves, so left out)."""
        return {
            f"{prefix}/audit-time": self.time,
            f"{prefix}/audit-user": self.user,
            f"{prefix}/audit-host": self.host,
            f"{prefix}/audit-inputs": json.dumps(dict(self.inputs), sort_keys=True, separators=(",", ":")),
            f"{prefix}/audit-decision": json.dumps([dict(x) for x in self.decision], separators=(",", ":")),
        }


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return str(os.getuid())


def log_path() -> Path | None:
    """Where the lines go; ``None`` when the trail is switched off."""
    env = os.environ.get("OPTISERVE_AUDIT_LOG")
    if env == "off":
        return None
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "optiserve" / "audit.jsonl"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def plan_inputs(plan: Mapping[str, Any]) -> dict[str, str]:
    """The digests a plan was made from, and of the variant each model ships."""
    inputs = plan.get("inputs", {})
    out: dict[str, str] = {}
    for key in ("sla", "catalog"):
        sha = (inputs.get(key) or {}).get("sha256")
        if sha:
            out[key] = str(sha)
    for p in inputs.get("profiles", []):
        if p.get("model_sha256"):
            out[f"model:{p['model']}"] = str(p["model_sha256"])
        if p.get("parquet_sha256"):
            out[f"profile:{p['model']}"] = str(p["parquet_sha256"])
    for m in plan.get("models", []):
        art = (m.get("chosen") or {}).get("artifact") or {}
        if art.get("sha256"):
            out[f"variant:{m['model']}"] = str(art["sha256"])
    return out


def plan_decision(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per model: where it goes, at what cost and p99, and the constraint that bound the choice."""
    out = []
    for m in plan.get("models", []):
        c = m.get("chosen") or {}
        out.append(
            {
                "model": m.get("model"),
                "feasible": bool(c),
                "placement": f"{c.get('provider')}:{c.get('instance_type')}" if c else None,
                "precision": c.get("precision"),
                "replicas": c.get("replicas"),
                "cost_usd_per_hour": c.get("cost_usd_per_hour"),
                "predicted_p99_ms": (c.get("at_target") or {}).get("p99_ms"),
                "p99_target_ms": (m.get("sla") or {}).get("p99_ms"),
                "binding_constraint": c.get("binding_constraint"),
            }
        )
    return out


def outputs(paths: Iterable[Path]) -> dict[str, str]:
    return {str(p): sha256_file(Path(p)) for p in paths if Path(p).is_file()}


def record_for_plan(
    command: str,
    plan: Mapping[str, Any],
    plan_file: Path | None,
    written: Iterable[Path] = (),
    result: Mapping[str, Any] | None = None,
    time: str | None = None,
) -> AuditRecord:
    """The record of a command that read or wrote ``plan`` (its file's digest is an input of emit and verify);
    ``time``: the one its objects were annotated with (emit), so the line and the objects agree."""
    inputs = plan_inputs(plan)
    if plan_file is not None and command != "plan" and Path(plan_file).is_file():
        inputs["plan"] = sha256_file(Path(plan_file))
    return AuditRecord(
        time=time or _now(),
        command=command,
        argv=tuple(sys.argv[1:]),
        inputs=inputs,
        outputs=outputs(written),
        decision=plan_decision(plan),
        plan_id=str(plan.get("plan_id") or "") or None,
        result=dict(result or {"feasible": bool(plan.get("feasible"))}),
    )


def append(record: AuditRecord) -> Path | None:
    """Append one line; an unwritable log is one error line (the trail is not optional once on)."""
    path = log_path()
    if path is None:
        return None
    line = (json.dumps(record.as_dict(), sort_keys=True, default=str) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            with contextlib.suppress(ImportError):
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UsageError(
            f"cannot append to the audit log {path}: {exc.strerror} (OPTISERVE_AUDIT_LOG=off skips it)"
        ) from None
    return path


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
