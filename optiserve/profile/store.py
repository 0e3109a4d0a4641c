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
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from optiserve._files import atomic_write
from optiserve.errors import StoreError
from optiserve.types import (
    SCHEMA_VERSION,
    Measurement,
    Profile,
    measurement_from_row,
    measurement_row,
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
        ("stages", pa.string()),
    ]
)


def resolve_profile_dir(path: Path | str) -> Path:
    """Accept the folder or either of its files."""
    p = Path(path)
    return p.parent if p.name in (PARQUET, SIDECAR) else p


class ParquetStore:
    """The embedded store: a folder with a Parquet table and a JSON sidecar,
    both replaced atomically on every write."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = resolve_profile_dir(folder)
        self._rows: list[dict[str, Any]] | None = None

    @property
    def parquet(self) -> Path:
        return self.folder / PARQUET

    @property
    def sidecar(self) -> Path:
        return self.folder / SIDECAR

    def exists(self) -> bool:
        return self.sidecar.exists()

    def check_writable(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"cannot write profile to {self.folder}: {exc.strerror or exc}") from None

    def create(self, meta: dict[str, Any]) -> None:
        if self.exists():
            raise StoreError(f"a profile already exists in {self.folder}")
        self.check_writable()
        self._rows = []
        self._write_meta({"schema_version": SCHEMA_VERSION, **meta})
        self._write_rows()

    def overwrite(self, meta: dict[str, Any]) -> None:
        self.check_writable()
        self.parquet.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)
        self.create(meta)

    def _write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write(self.sidecar, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=str)))

    def _write_rows(self) -> None:
        table = pa.Table.from_pylist(self._rows or [], schema=_SCHEMA)
        atomic_write(self.parquet, lambda tmp: pq.write_table(table, tmp))

    def read_meta(self) -> dict[str, Any]:
        if not self.exists():
            raise StoreError(f"no profile in {self.folder} (expected {SIDECAR} and {PARQUET})")
        try:
            meta: dict[str, Any] = json.loads(self.sidecar.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{self.sidecar} is not readable: {exc}") from None
        version = meta.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.sidecar} has schema version {version!r}; this optiserve reads up to {SCHEMA_VERSION}"
            )
        return meta

    def _read_rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            if not self.parquet.exists():
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
        self._rows = rows
        self._write_rows()

    def update_meta(self, **fields: Any) -> None:
        meta = self.read_meta()
        meta.update(fields)
        self._write_meta(meta)

    def load(self) -> Profile:
        meta = self.read_meta()
        return Profile(meta, tuple(measurement_from_row(r) for r in self._read_rows()))


def load_profile(path: Path | str) -> Profile:
    """Read a profile folder (or either of its files) written by ``optiserve profile``."""
    return ParquetStore(path).load()
