"""Result stores. A profile lives in a folder: ``profile.parquet`` (one row per
config, raw samples kept) and ``profile.json`` (schema version, model digest,
hardware fingerprint, library versions, sweep spec).

Contract of a ``ResultStore`` (checked by ``optiserve.testing.store_conformance``):

- ``create(meta)`` starts an empty profile; it fails if one exists.
- ``append(m)`` is durable when it returns: a crash or Ctrl-C right after it
  leaves a readable profile that contains ``m``. Appending a config whose key
  is already stored replaces that row (a retried failure).
- ``load()`` returns the profile as stored; never a half-written file.
- ``update_meta(**fields)`` changes the sidecar atomically.

``ParquetStore`` adds what a real folder needs: ``writing()`` locks it against a
second writer (``flock`` on the folder itself, released by the kernel even on
kill -9), and ``stage(meta)`` defers every write to the first row, which goes to
disk together with the sidecar (both written beside, then renamed): a full disk
or a crash before it leaves the folder exactly as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from optiserve._rows import measurement_from_row, measurement_row
from optiserve.errors import StoreError
from optiserve.profile.sidecar import check_meta
from optiserve.types import (
    SCHEMA_VERSION,
    Measurement,
    Profile,
)

PARQUET, SIDECAR = "profile.parquet", "profile.json"


class ResultStore(Protocol):
    def exists(self) -> bool: ...

    def create(self, meta: dict[str, Any]) -> None: ...

    def append(self, m: Measurement) -> None: ...

    def update_meta(self, **fields: Any) -> None: ...

    def load(self) -> Profile: ...


_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("runtime", pa.string()),
        ("precision", pa.string()),
        ("batch_size", pa.int64()),
        ("threads", pa.int64()),
        ("options", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("n", pa.int64()),
        *[
            (f"{c}_ms", pa.float64())
            for c in ("mean", "std", "min", "max", "p50", "p90", "p95", "p99", "p999", "p99_ci_low", "p99_ci_high")
        ],
        ("throughput", pa.float64()),
        ("load_time_s", pa.float64()),
        ("warmup_iterations", pa.int64()),
        ("warmup_stable", pa.bool_()),
        ("peak_rss_mb", pa.float64()),
        ("model_rss_mb", pa.float64()),
        ("wall_time_s", pa.float64()),
        ("stop_reason", pa.string()),
        ("warnings", pa.list_(pa.string())),
        ("samples_ns", pa.list_(pa.int64())),
        ("extra", pa.string()),
        ("variant_recipe", pa.string()),
        ("acc_samples", pa.int64()),
        ("acc_output", pa.int64()),
        ("acc_max_abs_error", pa.float64()),
        ("acc_rel_l2_error", pa.float64()),
        ("acc_cosine", pa.float64()),
        ("acc_top1_agreement", pa.float64()),
        ("acc_accuracy", pa.float64()),
        ("acc_reference_accuracy", pa.float64()),
        ("acc_drop", pa.float64()),
        ("acc_drop_metric", pa.string()),
        ("acc_worst_output", pa.string()),
        ("acc_worst_group", pa.string()),
        ("acc_group_error", pa.float64()),
        ("acc_checks", pa.string()),
        ("acc_per_output", pa.string()),
        ("acc_synthetic", pa.bool_()),
        ("within_tolerance", pa.bool_()),
        ("variant_key", pa.string()),
        ("variant_method", pa.string()),
        ("variant_build_s", pa.float64()),
        ("variant_cache_hit", pa.bool_()),
        ("preprocess", pa.string()),
        ("inputs", pa.string()),
        ("stages", pa.string()),
    ]
)


def resolve_profile_dir(path: Path | str) -> Path:
    """Accept the folder or either of its files."""
    p = Path(path)
    return p.parent if p.name in (PARQUET, SIDECAR) else p


class StoreWriteError(StoreError):
    """The folder could not be written (a full disk, a lost mount): what was on disk is unchanged."""


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return exc.strerror or str(exc)


def _replace_all(files: list[tuple[Path, Callable[[str], Any]]]) -> None:
    """Write every file beside its target first, then rename them all: a failed
    write (a full disk) changes nothing, and renames need no space."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, write in files:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            temps.append((tmp, path))
            write(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)


def _new_dirs(folder: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would create for ``folder``, deepest first."""
    out: list[Path] = []
    p = folder
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


_BUSY = "is being written by another optiserve profile run: wait for it to finish (then --resume) or use another -o"


class ParquetStore:
    """The embedded store: a folder with a Parquet table and a JSON sidecar,
    both replaced atomically on every write."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = resolve_profile_dir(folder)
        self._rows: list[dict[str, Any]] | None = None
        self._pending: dict[str, Any] | None = None  # staged metadata, written with the first row

    @property
    def parquet(self) -> Path:
        return self.folder / PARQUET

    @property
    def sidecar(self) -> Path:
        return self.folder / SIDECAR

    def exists(self) -> bool:
        return self.sidecar.exists()

    def check_writable(self) -> None:
        """Fail now if the folder cannot be written; leaves no folder it had to create."""
        made = _new_dirs(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"cannot write profile to {self.folder}: {_why(exc)}") from None
        finally:
            for d in made:
                with contextlib.suppress(OSError):
                    d.rmdir()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the folder's lock for a whole run: a second writer gets one line, not a lost row.
        A folder this run created and left empty (nothing measured) is removed again."""
        made = _new_dirs(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise StoreError(f"cannot write profile to {self.folder}: {_why(exc)}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"{self.folder} {_BUSY}") from None
            self._rows = None  # what is on disk now, not what an earlier read saw
            yield
        finally:
            os.close(fd)  # releases the lock
            for d in made:
                with contextlib.suppress(OSError):
                    d.rmdir()  # only while empty

    def check_unlocked(self) -> None:
        """Refuse early, before any validation or work, when another run holds the folder."""
        if not self.folder.is_dir():
            return
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"{self.folder} {_BUSY}") from None
        finally:
            os.close(fd)

    def create(self, meta: dict[str, Any]) -> None:
        if self.exists():
            raise StoreError(f"a profile already exists in {self.folder}")
        self.check_writable()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._rows = []
        self._pending = {"schema_version": SCHEMA_VERSION, **meta}
        self._commit()

    def overwrite(self, meta: dict[str, Any]) -> None:
        self.check_writable()
        self.parquet.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)
        self.create(meta)

    def stage(self, meta: dict[str, Any], *, keep_rows: bool) -> None:
        """Start a run without writing: ``meta`` (and the stored rows, or none) go to
        disk with the first ``append``. Until then the folder is as it was."""
        self._rows = list(self._read_rows()) if keep_rows else []
        self._pending = {"schema_version": SCHEMA_VERSION, **meta}

    @property
    def staged(self) -> bool:
        """True while nothing of this run has been written."""
        return self._pending is not None

    def flush(self) -> None:
        """Write staged metadata now, with the rows as they are."""
        if self._pending is not None:
            self._read_rows()
            self._commit()

    def _commit(self) -> None:
        table = pa.Table.from_pylist(self._rows or [], schema=_SCHEMA)
        files: list[tuple[Path, Callable[[str], Any]]] = [(self.parquet, lambda tmp: pq.write_table(table, tmp))]
        if self._pending is not None:
            text = json.dumps(self._pending, indent=2, default=str)
            files.append((self.sidecar, lambda tmp: Path(tmp).write_text(text)))
        try:
            _replace_all(files)
        except OSError as exc:
            raise StoreWriteError(f"cannot write profile to {self.folder}: {_why(exc)}") from None
        self._pending = None

    def read_meta(self) -> dict[str, Any]:
        if self._pending is not None:
            return dict(self._pending)
        if not self.exists():
            raise StoreError(f"no profile in {self.folder} (expected {SIDECAR} and {PARQUET})")
        try:
            meta = json.loads(self.sidecar.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{self.sidecar} is not readable: {exc}") from None
        version = meta.get("schema_version") if isinstance(meta, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.sidecar} has schema version {version!r}; this optiserve reads up to {SCHEMA_VERSION}"
            )
        return check_meta(meta, str(self.sidecar))

    def _read_rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            if not self.parquet.exists():
                if self.exists():
                    raise StoreError(
                        f"{self.folder} has {SIDECAR} but no {PARQUET}: its measurements are missing "
                        "(restore the file, or measure again with --overwrite)"
                    )
                self._rows = []
            else:
                try:
                    self._rows = pq.read_table(self.parquet).to_pylist()
                except Exception as exc:
                    raise StoreError(f"{self.parquet} is not readable: {exc}") from None
        return self._rows

    def append(self, m: Measurement) -> None:
        rows = [r for r in self._read_rows() if r["key"] != m.config.key]
        rows.append(measurement_row(m))
        before, self._rows = self._rows, rows
        try:
            self._commit()
        except StoreWriteError:
            self._rows = before  # memory says what the disk says
            raise

    def update_meta(self, **fields: Any) -> None:
        if self._pending is not None:
            self._pending.update(fields)
            return
        meta = self.read_meta()
        meta.update(fields)
        text = json.dumps(meta, indent=2, default=str)
        try:
            _replace_all([(self.sidecar, lambda tmp: Path(tmp).write_text(text))])
        except OSError as exc:
            raise StoreWriteError(f"cannot write profile to {self.folder}: {_why(exc)}") from None

    def load(self) -> Profile:
        meta = self.read_meta()
        rows = self._read_rows()
        try:
            measurements = tuple(measurement_from_row(r) for r in rows)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(
                f"{self.parquet} holds a row optiserve cannot read ({type(exc).__name__}: {exc})"
            ) from None
        return Profile(meta, measurements)


def load_profile(path: Path | str) -> Profile:
    """Read a profile folder (or either of its files) written by ``optiserve profile``."""
    return ParquetStore(path).load()
