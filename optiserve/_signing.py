"""Ed25519 signatures over a plan file or an emitted bundle (a folder), checked before use.

A file's signature covers its SHA-256; a bundle's covers the sorted list of every
file's relative path and SHA-256, so an added, removed or edited manifest is named
when the check fails. The signature sits beside what it signs (``plan.json.sig``,
``deploy/optiserve.sig``) as JSON with the signer's public-key fingerprint. Keys
are PEM (PKCS#8 private, SubjectPublicKeyInfo public), made with ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optiserve._audit import sha256_file
from optiserve._imports import optional_import
from optiserve.errors import UsageError

BUNDLE_SIG = "optiserve.sig"


class SignatureError(UsageError):
    """A signature that is missing, malformed, from another key, or over other bytes."""


@dataclass(frozen=True)
class Checked:
    target: Path
    sha256: str
    signer: str  # public-key fingerprint (SHA-256 of the raw key, 16 hex digits)
    files: int


def _serialization() -> Any:
    return optional_import("cryptography.hazmat.primitives.serialization", "sign")


def _ed25519() -> Any:
    return optional_import("cryptography.hazmat.primitives.asymmetric.ed25519", "sign")


def _fingerprint(public: Any) -> str:
    s = _serialization()
    raw = public.public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(private_path: Path) -> tuple[Path, Path]:
    """A new key pair: ``private_path`` (mode 0600) and ``private_path.pub``."""
    s, ed = _serialization(), _ed25519()
    key = ed.Ed25519PrivateKey.generate()
    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name + ".pub")
    if private_path.exists():
        raise UsageError(f"{private_path} exists: refusing to overwrite a key")
    pem = key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def _load(path: Path, private: bool) -> Any:
    s, ed = _serialization(), _ed25519()
    try:
        data = Path(path).read_bytes()
        key = s.load_pem_private_key(data, None) if private else s.load_pem_public_key(data)
    except OSError as exc:
        raise UsageError(f"cannot read key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not a PEM {'private' if private else 'public'} key: {exc}") from None
    want = ed.Ed25519PrivateKey if private else ed.Ed25519PublicKey
    if not isinstance(key, want):
        raise UsageError(f"{path} is not an Ed25519 key")
    return key


def _manifest(target: Path) -> tuple[str, dict[str, str]]:
    """(kind, relative path -> sha256) of a file or every file of a folder (its signature aside)."""
    if target.is_file():
        return "file", {target.name: sha256_file(target)}
    if not target.is_dir():
        raise UsageError(f"nothing to sign or check at {target}")
    files = {
        p.relative_to(target).as_posix(): sha256_file(p)
        for p in sorted(target.rglob("*"))
        if p.is_file() and p.relative_to(target).as_posix() != BUNDLE_SIG
    }
    return "bundle", files


def _payload(kind: str, files: dict[str, str]) -> bytes:
    return json.dumps({"kind": kind, "files": files}, sort_keys=True, separators=(",", ":")).encode()


def signature_path(target: Path) -> Path:
    target = Path(target)
    return target / BUNDLE_SIG if target.is_dir() else target.with_name(target.name + ".sig")


def sign(target: Path, private_key: Path) -> Path:
    """Write the signature of ``target`` beside it; returns its path."""
    target = Path(target)
    key = _load(private_key, private=True)
    kind, files = _manifest(target)
    payload = _payload(kind, files)
    doc = {
        "algorithm": "ed25519",
        "kind": kind,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "files": files,
        "signer": _fingerprint(key.public_key()),
        "signature": base64.b64encode(key.sign(payload)).decode(),
    }
    out = signature_path(target)
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return out


def check(target: Path, public_key: Path) -> Checked:
    """Verify ``target`` against its signature and ``public_key``; any difference is a ``SignatureError``."""
    target = Path(target)
    key = _load(public_key, private=False)
    sig_file = signature_path(target)
    try:
        doc = json.loads(sig_file.read_text())
        signed_files = {str(k): str(v) for k, v in doc["files"].items()}
        signature = base64.b64decode(doc["signature"], validate=True)
    except OSError:
        raise SignatureError(f"{target} is not signed: no {sig_file}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SignatureError(f"{sig_file} is not an optiserve signature") from None
    kind, files = _manifest(target)
    try:
        key.verify(signature, _payload(str(doc.get("kind")), signed_files))
    except Exception:  # cryptography's InvalidSignature
        raise SignatureError(
            f"{sig_file}: the signature does not verify with {public_key} (signed by key {doc.get('signer')}, "
            f"this is {_fingerprint(key)})"
        ) from None
    if files != signed_files or kind != doc.get("kind"):
        changed = sorted(k for k in files.keys() & signed_files.keys() if files[k] != signed_files[k])
        added, removed = sorted(files.keys() - signed_files.keys()), sorted(signed_files.keys() - files.keys())
        parts = [f"{w}: {', '.join(x)}" for w, x in (("changed", changed), ("added", added), ("removed", removed)) if x]
        raise SignatureError(f"{target} differs from what was signed ({'; '.join(parts) or 'kind'})")
    return Checked(target, str(doc["sha256"]), str(doc["signer"]), len(files))
