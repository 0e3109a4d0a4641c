"""The artifact a placement deploys: the very file the profile measured, named by its digest.

fp32 is the model file itself. A precision variant is the file the profile's
worker built into the variant cache (its key is on every row of that precision),
so the plan can name its digest and ``emit`` can ship those bytes: nothing is
rebuilt between measuring and deploying.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optiserve.models.graph import model_sha256
from optiserve.types import Profile, Status


def artifact_for(
    profile: Profile, runtime: str, precision: str, variant: tuple[tuple[str, str], ...] | None = None
) -> dict[str, Any]:
    """What ``emit`` ships for ``precision``: the model (fp32) or the profiled variant
    (of the recipe ``variant`` when given: the one the placement's curve was made of).
    ``sha256`` is None when the variant is no longer in the cache (emit then refuses)."""
    from optiserve.runtimes.registry import get_runtime

    model = profile.meta.get("model", {})
    if precision == "fp32" or (get_runtime(runtime).device == "gpu" and precision in ("fp16", "bf16")):
        # fp32 is the model; on a GPU, TensorRT builds fp16/bf16 from the fp32 graph itself
        return {"kind": "model", "precision": precision, "sha256": model.get("sha256"), "path": model.get("path")}
    rows = [
        m
        for m in profile.measurements
        if m.status is Status.OK and str(m.config.precision) == precision and m.config.runtime == runtime
    ] or [m for m in profile.measurements if m.status is Status.OK and str(m.config.precision) == precision]
    if variant is not None:
        rows = [m for m in rows if m.config.variant == variant] or rows
    keyed = [m for m in rows if m.variant.get("key")]
    if not keyed:  # a runtime that builds its precision itself (TensorRT fp16 from the fp32 graph)
        return {"kind": "model", "precision": precision, "sha256": model.get("sha256"), "path": model.get("path")}
    row = keyed[0]
    key = str(row.variant["key"])
    path = variant_path(profile, key)
    return {
        "kind": "variant",
        "precision": precision,
        "variant_key": key,
        "recipe": dict(row.config.variant),
        "method": row.variant.get("method"),
        "path": str(path) if path else None,
        "sha256": model_sha256(path) if path else None,
        "model_sha256": model.get("sha256"),
    }


def variant_path(profile: Profile, key: str) -> Path | None:
    """The cached variant file of ``key`` in the cache the profile used, if it is still there."""
    from optiserve.variants.cache import VariantCache

    cache_dir = (profile.meta.get("sweep") or {}).get("cache_dir")
    hit = VariantCache(Path(cache_dir) if cache_dir else None).get(key)
    return hit[0] if hit else None
