"""Reference input summaries kept in the profile, so a server can score input drift against them.

Per batched numeric input: per channel (image-like, the first non-batch axis of a
4-D tensor), else per feature (a flat feature vector of at most ``MAX_GROUPS``),
else the whole tensor. Each group keeps its mean, standard deviation and fixed
quantile bin edges with the reference's share of each bin, so the population
stability index (PSI) of live traffic is computable from bin counts alone
(``serve/drift.py``) and no payload is ever kept. The reference is the profile's
``--inputs`` file when given, else synthetic data, and says which: drift against
synthetic inputs says nothing about real traffic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optiserve.errors import UsageError
from optiserve.models.graph import ModelInfo
from optiserve.models.inputs import load_npz, make_inputs, samples_in
from optiserve.types import InputLayout, TensorLayout

__all__ = [
    "BINS",
    "MAX_GROUPS",
    "InputReference",
    "Reference",
    "bin_index",
    "build_reference",
    "grouped",
    "load_reference",
    "psi",
    "reference_for",
]

BINS = 10  # deciles: PSI's customary resolution
MAX_GROUPS = 64  # channels or features summarised one by one; past this, the whole tensor
REF_VALUES = 1 << 21  # elements per input the reference reads (rows follow from the item size)
MAX_ROWS = 4096
MIN_ROWS = 16
EPS = 1e-4  # floor of a bin's share, so an empty bin costs a finite PSI


@dataclass(frozen=True)
class InputReference:
    """One input's reference: ``edges[g]`` are group g's distinct inner bin edges (fewer than
    ``BINS - 1`` where quantiles tie) and ``fractions[g]`` its share of each of ``BINS`` bins."""

    name: str
    batch_axis: int
    mode: str  # "channel", "feature" or "tensor"
    item_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    edges: tuple[tuple[float, ...], ...]
    fractions: tuple[tuple[float, ...], ...]

    @property
    def groups(self) -> int:
        return len(self.mean)

    def label(self, g: int) -> str:
        return {"channel": f"c{g}", "feature": f"f{g}"}.get(self.mode, "all")

    def edge_array(self) -> np.ndarray:
        """Edges as (groups, BINS - 1), padded with +inf: bins past a group's last edge stay empty."""
        out = np.full((self.groups, BINS - 1), np.inf)
        for g, e in enumerate(self.edges):
            out[g, : len(e)] = e
        return out

    def fraction_array(self) -> np.ndarray:
        return np.array(self.fractions, dtype=np.float64).reshape(self.groups, BINS)


@dataclass(frozen=True)
class Reference:
    """Every summarised input, where the data came from, and a digest the server exports."""

    source: str
    synthetic: bool
    rows: int
    inputs: tuple[InputReference, ...]

    @property
    def digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, allow_nan=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "synthetic": self.synthetic,
            "rows": self.rows,
            "bins": BINS,
            "inputs": [asdict(i) for i in self.inputs],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reference:
        if int(d.get("bins", BINS)) != BINS:
            raise UsageError(f"reference summaries use {d.get('bins')} bins; this optiserve reads {BINS}")
        inputs = tuple(
            InputReference(
                str(i["name"]),
                int(i["batch_axis"]),
                str(i["mode"]),
                tuple(int(x) for x in i["item_shape"]),
                tuple(float(x) for x in i["mean"]),
                tuple(float(x) for x in i["std"]),
                tuple(tuple(float(x) for x in e) for e in i["edges"]),
                tuple(tuple(float(x) for x in f) for f in i["fractions"]),
            )
            for i in d["inputs"]
        )
        return cls(str(d["source"]), bool(d["synthetic"]), int(d["rows"]), inputs)


def grouping(item_shape: tuple[int, ...]) -> str:
    """How an input with this per-row shape is summarised."""
    if len(item_shape) == 3 and item_shape[0] <= MAX_GROUPS:
        return "channel"
    if len(item_shape) == 1 and item_shape[0] <= MAX_GROUPS:
        return "feature"
    return "tensor"


def grouped(arr: np.ndarray, batch_axis: int, mode: str) -> np.ndarray:
    """``arr`` as (rows, groups, values per row and group), a view where the layout allows."""
    rows = np.moveaxis(arr, batch_axis, 0)
    n = rows.shape[0]
    if mode == "channel":
        return rows.reshape(n, rows.shape[1], -1)
    if mode == "feature":
        return rows.reshape(n, -1, 1)
    return rows.reshape(n, 1, -1)


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value of ``values`` (groups, n) against per-group ``edges`` (groups, BINS-1):
    the number of edges at or below it, vectorised over groups."""
    out: np.ndarray = (values[:, :, None] >= edges[:, None, :]).sum(axis=2)
    return out


def psi(current: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Population stability index per group of bin shares (groups, BINS); shares floored at ``EPS``."""
    cur, ref = np.maximum(current, EPS), np.maximum(reference, EPS)
    out: np.ndarray = ((cur - ref) * np.log(cur / ref)).sum(axis=1)
    return out


def _short(x: float) -> float:
    return float(f"{float(x):.6g}")


def _summarise(t: TensorLayout, arr: np.ndarray) -> InputReference | None:
    assert t.batch_axis is not None
    item = tuple(d for i, d in enumerate(arr.shape) if i != t.batch_axis)
    mode = grouping(item)
    g = grouped(arr, t.batch_axis, mode).astype(np.float64)
    values = np.moveaxis(g, 1, 0).reshape(g.shape[1], -1)  # (groups, every value of the group)
    finite = np.isfinite(values)
    if not finite.any():
        return None
    values = np.where(finite, values, np.nan)
    mean, std = np.nanmean(values, axis=1), np.nanstd(values, axis=1)
    quantiles = np.nanquantile(values, np.linspace(0, 1, BINS + 1)[1:-1], axis=1, method="lower").T
    # tied quantiles (discrete inputs) leave fewer, distinct edges; rounded as profile.json keeps them
    kept = tuple(tuple(sorted({_short(x) for x in row if np.isfinite(x)})) for row in quantiles)
    edges = np.full_like(quantiles, np.inf)
    for i, e in enumerate(kept):
        edges[i, : len(e)] = e
    bins = bin_index(np.where(finite, values, -np.inf), edges)
    counts = np.stack([np.bincount(b[f], minlength=BINS) for b, f in zip(bins, finite, strict=True)])
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return InputReference(
        t.name,
        t.batch_axis,
        mode,
        item,
        tuple(_short(x) for x in np.nan_to_num(mean)),
        tuple(_short(x) for x in np.nan_to_num(std)),
        kept,
        tuple(tuple(_short(x) for x in f) for f in fractions),
    )


def build_reference(feeds: Mapping[str, np.ndarray], layout: InputLayout, source: str, synthetic: bool) -> Reference:
    """Summaries of ``feeds`` (many rows of each input); unbatched and non-numeric inputs are left out."""
    summaries: list[InputReference] = []
    rows = 0
    for t in layout.batched:
        arr = feeds.get(t.name)
        if arr is None or t.batch_axis is None or np.asarray(arr).dtype.kind not in "biuf":
            continue
        arr = np.asarray(arr)
        rows = max(rows, arr.shape[t.batch_axis])
        s = _summarise(t, arr)
        if s is not None:
            summaries.append(s)
    return Reference(source, synthetic, rows, tuple(summaries))


def reference_for(info: ModelInfo, layout: InputLayout, inputs: Path | None, seed: int) -> Reference:
    """The profile's reference: the ``--inputs`` samples (all of them, up to a size budget),
    else as many synthetic rows as the profile's own synthetic inputs would be."""
    sizes = [int(np.prod(t.shape)) for t in layout.batched]
    budget = int(np.clip(REF_VALUES // max(sizes or [1]), MIN_ROWS, MAX_ROWS))
    if inputs is not None:
        npz = load_npz(inputs)
        n = min(samples_in(npz, layout), budget)
        feeds = make_inputs(info, n, npz=npz, layout=layout)
        return build_reference(feeds, layout, f"inputs {Path(inputs).name}", synthetic=False)
    feeds = make_inputs(info, budget, seed=seed, layout=layout)
    return build_reference(feeds, layout, f"synthetic (seed {seed})", synthetic=True)


def load_reference(profile_dir: Path) -> Reference:
    """The reference summaries of a profile folder (or its ``profile.json``); one line when absent."""
    from optiserve.profile.store import ParquetStore, resolve_profile_dir

    folder = resolve_profile_dir(Path(profile_dir))
    meta = ParquetStore(folder).read_meta()
    ref = meta.get("reference")
    if not ref:
        raise UsageError(
            f"{folder} holds no reference input summaries (profiled before they were kept): profile the model again"
        )
    try:
        return Reference.from_dict(ref)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{folder}: malformed reference input summaries ({type(exc).__name__}: {exc})") from None
