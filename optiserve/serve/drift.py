"""Input drift: light summaries of served inputs over a sliding window, scored against the profile's reference.

``DriftMonitor.observe`` runs on the infer path of both front ends
(``ServedModel.infer``), so it must cost little and hold little: a token bucket
admits at most ``rows_per_s`` rows a second, each row contributes at most
``values_per_row`` values per group (a fixed random subset of a channel's pixels),
and what is kept is counts per reference bin, sums and sums of squares per group
in ``slices`` time slices of the window: memory is fixed by the reference, never
by traffic, and no payload is kept. Scores (PSI against the reference's bins,
the mean's shift in reference standard deviations) are computed when ``/metrics``
is scraped (``DriftCollector``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from optiserve.errors import UsageError
from optiserve.models.graph import InputSpec
from optiserve.profile.reference import BINS, InputReference, Reference, bin_index, grouped, psi
from optiserve.serve.protocol import Tensor

__all__ = ["DriftCollector", "DriftMonitor", "DriftSettings", "GroupDrift"]

MIN_VALUES = 200  # values of a group in the window before its PSI is exported: fewer is noise


@dataclass(frozen=True)
class DriftSettings:
    window_s: float = 300.0
    slices: int = 10
    rows_per_s: float = 50.0  # rows observed per second at most (the rest pass unobserved)
    values_per_row: int = 256  # values per group a row contributes at most (pixels of a channel)


@dataclass(frozen=True)
class GroupDrift:
    """One group's window against its reference."""

    input: str
    group: str
    values: int
    mean: float
    std: float
    shift: float  # (mean - reference mean) / reference std
    psi: float | None  # None below MIN_VALUES


class _Window:
    """One input's counts in time slices: (slices, groups, BINS) bins and (slices, groups) moments."""

    def __init__(self, ref: InputReference, slices: int) -> None:
        g = ref.groups
        self.ref, self.edges = ref, ref.edge_array()
        self.bins = np.zeros((slices, g, BINS), np.int64)
        self.n = np.zeros((slices, g), np.int64)
        self.sum = np.zeros((slices, g))
        self.sumsq = np.zeros((slices, g))
        self.picks: dict[int, np.ndarray] = {}  # values per row -> the fixed subset observed

    def reset(self, s: int) -> None:
        self.bins[s] = 0
        self.n[s] = 0
        self.sum[s] = 0.0
        self.sumsq[s] = 0.0

    def add(self, s: int, arr: np.ndarray, rows: int, per_row: int) -> None:
        g = grouped(arr, self.ref.batch_axis, self.ref.mode)[:rows]
        if g.shape[1] != self.ref.groups:
            return  # another shape than the reference's (a dynamic dim): not comparable
        if g.shape[2] > per_row:
            pick = self.picks.get(g.shape[2])
            if pick is None:
                if len(self.picks) > 8:
                    self.picks.clear()
                pick = self.picks[g.shape[2]] = np.sort(
                    np.random.default_rng(g.shape[2]).choice(g.shape[2], per_row, replace=False)
                )
            g = g[:, :, pick]
        values = np.moveaxis(g, 1, 0).reshape(g.shape[1], -1).astype(np.float64)
        ok = np.isfinite(values)
        clean = np.where(ok, values, 0.0)
        flat = (np.arange(values.shape[0])[:, None] * BINS + bin_index(clean, self.edges))[ok]
        self.bins[s] += np.bincount(flat, minlength=values.shape[0] * BINS).reshape(-1, BINS)
        self.n[s] += ok.sum(axis=1)
        self.sum[s] += clean.sum(axis=1)
        self.sumsq[s] += (clean * clean).sum(axis=1)

    def report(self, live: np.ndarray) -> list[GroupDrift]:
        bins, n = self.bins[live].sum(axis=0), self.n[live].sum(axis=0)
        total, sq = self.sum[live].sum(axis=0), self.sumsq[live].sum(axis=0)
        safe = np.maximum(n, 1)
        mean = total / safe
        std = np.sqrt(np.maximum(sq / safe - mean * mean, 0.0))
        ref_mean, ref_std = np.array(self.ref.mean), np.array(self.ref.std)
        shift = (mean - ref_mean) / np.where(ref_std > 0, ref_std, 1.0)
        scores = psi(bins / safe[:, None], self.ref.fraction_array())
        return [
            GroupDrift(
                self.ref.name,
                self.ref.label(i),
                int(n[i]),
                float(mean[i]),
                float(std[i]),
                float(shift[i]) if n[i] else 0.0,
                float(scores[i]) if n[i] >= MIN_VALUES else None,
            )
            for i in range(self.ref.groups)
        ]


class DriftMonitor:
    """Sliding-window summaries of the served inputs the reference covers; thread-safe."""

    def __init__(
        self,
        reference: Reference,
        settings: DriftSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reference, self.settings = reference, settings or DriftSettings()
        st = self.settings
        if st.window_s <= 0 or st.slices < 1 or st.rows_per_s <= 0 or st.values_per_row < 1:
            raise UsageError("drift window, slices, rows per second and values per row must be > 0")
        self._clock = clock
        self._slice_s = st.window_s / st.slices
        self._windows = {r.name: _Window(r, st.slices) for r in reference.inputs}
        self._epochs = np.full(st.slices, -1, np.int64)  # the slice number each ring slot holds
        self._tokens, self._last = float(max(st.rows_per_s, 1.0)), clock()
        self._lock = threading.Lock()

    def check(self, inputs: Sequence[InputSpec]) -> None:
        """One line when the reference summarises inputs this model does not take."""
        names = {i.name for i in inputs}
        missing = [r.name for r in self.reference.inputs if r.name not in names]
        if missing:
            raise UsageError(
                f"the reference summarises input(s) {', '.join(missing)} this model does not take "
                f"({', '.join(sorted(names))}): was it profiled on another model?"
            )

    def _slot(self, now: float) -> int:
        epoch = int(now // self._slice_s)
        s = epoch % self.settings.slices
        if self._epochs[s] != epoch:
            for w in self._windows.values():
                w.reset(s)
            self._epochs[s] = epoch
        return s

    def observe(self, tensors: Sequence[Tensor] | Mapping[str, np.ndarray]) -> None:
        """Count up to the row budget's worth of one request's inputs (decoded arrays, never kept)."""
        arrays = tensors if isinstance(tensors, Mapping) else {t.name: t.array for t in tensors}
        with self._lock:
            now = self._clock()
            rate = self.settings.rows_per_s
            self._tokens = min(max(rate, 1.0), self._tokens + (now - self._last) * rate)
            self._last = now
            if self._tokens < 1.0:
                return
            s, spent = self._slot(now), 0
            for name, w in self._windows.items():
                arr = arrays.get(name)
                if arr is None or arr.ndim <= w.ref.batch_axis:
                    continue
                rows = min(arr.shape[w.ref.batch_axis], int(self._tokens))
                w.add(s, arr, rows, self.settings.values_per_row)
                spent = max(spent, rows)
            self._tokens -= spent

    def report(self) -> list[GroupDrift]:
        with self._lock:
            now_epoch = int(self._clock() // self._slice_s)
            live = (self._epochs >= 0) & (self._epochs > now_epoch - self.settings.slices)
            return [g for w in self._windows.values() for g in w.report(live)]


class DriftCollector(Collector):
    """The monitor's scores as Prometheus gauges, computed at scrape time."""

    def __init__(self, monitor: DriftMonitor, model: str) -> None:
        self.monitor, self.model = monitor, model

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ref = self.monitor.reference
        labels = ["model", "input", "group"]
        info = GaugeMetricFamily(
            "optiserve_input_reference",
            "The reference inputs drift is scored against (synthetic: meaningless for real traffic)",
            labels=["model", "source", "synthetic", "digest", "window_s"],
        )
        window = f"{self.monitor.settings.window_s:g}"
        info.add_metric([self.model, ref.source, str(ref.synthetic).lower(), ref.digest, window], 1.0)
        families = {
            "psi": GaugeMetricFamily(
                "optiserve_input_drift_psi",
                "Population stability index of the window against the reference's bins (0.2: moved)",
                labels=labels,
            ),
            "shift": GaugeMetricFamily(
                "optiserve_input_drift_shift",
                "Window mean minus reference mean, in reference standard deviations",
                labels=labels,
            ),
            "values": GaugeMetricFamily(
                "optiserve_input_window_values", "Values summarised in the window", labels=labels
            ),
            "mean": GaugeMetricFamily("optiserve_input_window_mean", "Mean of the window", labels=labels),
            "std": GaugeMetricFamily("optiserve_input_window_std", "Standard deviation of the window", labels=labels),
        }
        for g in self.monitor.report():
            key = [self.model, g.input, g.group]
            families["values"].add_metric(key, g.values)
            if g.values:
                families["mean"].add_metric(key, g.mean)
                families["std"].add_metric(key, g.std)
                families["shift"].add_metric(key, g.shift)
            if g.psi is not None and math.isfinite(g.psi):
                families["psi"].add_metric(key, g.psi)
        yield info
        yield from families.values()
