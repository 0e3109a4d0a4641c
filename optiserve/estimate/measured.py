"""Curves measured on the target itself: profiles gathered from other catalog entries.

The planner transfers one profile to every catalog entry. When the same model
was also profiled *on* an entry (``optiserve fanout`` -> ``gather``), that
entry's curve is those samples, labelled ``measured on <entry>``, and the
roofline is not consulted. Only a like-for-like family counts: same runtime
kind (CPU rows for a CPU entry, GPU runtimes for an accelerator), precision and
threads; a single-instance GPU profile says nothing about several instances
sharing a device, so shared devices stay transferred. Anything missing falls
back to the transfer, never to a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from optiserve.estimate.catalog import Entry
from optiserve.estimate.service import ServiceModel
from optiserve.types import Measurement, Profile

if TYPE_CHECKING:
    from optiserve.estimate.targets import Curve, Family

GPU_RUNTIMES = ("onnxruntime-tensorrt", "onnxruntime-cuda", "tensorrt")  # preferred first


def _rows(profile: Profile, target: Entry, fam: Family) -> dict[int, Measurement]:
    ok = [m for m in profile.ok if m.samples_ns and m.config.precision.value == fam.precision]
    if target.accelerator is None:
        same = [m for m in ok if m.config.runtime == fam.runtime and m.config.threads == fam.threads]
        exact = [m for m in same if (m.config.options, m.config.variant) == (fam.options, fam.variant)]
        chosen = exact or same
    else:
        by_rt = {rt: [m for m in ok if m.config.runtime == rt] for rt in GPU_RUNTIMES}
        chosen = next((rows for rows in by_rt.values() if rows), [])
    return {m.config.batch_size: m for m in chosen}


def measured_curve(
    profiles: Mapping[str, Profile], target: Entry, fam: Family, share: int, memory_gib: float
) -> Curve | None:
    """The curve ``profiles[target.key]`` measured for ``fam`` (None: not measured there).
    ``memory_gib`` is what a transferred curve would say, kept where the rows hold no better."""
    from optiserve.estimate.targets import Curve

    profile = profiles.get(target.key)
    if profile is None or (target.accelerator is not None and share > 1):
        return None
    rows = _rows(profile, target, fam)
    if not rows:
        return None
    service = ServiceModel({b: np.asarray(m.samples_ns, np.float64) / 1e9 for b, m in rows.items()})
    if target.accelerator is None:
        memory_gib = max((m.model_rss_mb or m.peak_rss_mb) for m in rows.values()) / 1024
    where = profile.meta.get("hardware", {}).get("id", "?")
    runtime = next(iter(rows.values())).config.runtime
    basis = f"measured on {target.key} (gathered profile, machine {where}, {runtime})"
    return Curve(service, False, 0.0, basis, memory_gib)
