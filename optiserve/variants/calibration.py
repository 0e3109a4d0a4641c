"""Calibration batches for int8-static, the same wherever a variant is built.

The profiler's worker and the server build a variant from the same recipe and the
same batches, so both arrive at the same cache key and the same bytes: the variant
served is the variant measured (a server given the profile's ``--calibration``
file gets a cache hit, or rebuilds it identically).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from optiserve.models.graph import ModelInfo
from optiserve.models.inputs import load_npz, make_inputs, samples_in, take_rows
from optiserve.types import InputLayout, Precision
from optiserve.variants.recipe import SYNTHETIC, VariantRecipe, default_reduce_range, file_digest

if TYPE_CHECKING:
    from optiserve.variants.build import Variant

Feeds = dict[str, np.ndarray]


def calibration_source(
    info: ModelInfo, layout: InputLayout, recipe: VariantRecipe, calibration: Path | None
) -> Callable[[], Iterable[Feeds]]:
    """Batches the model accepts (8 rows, or its fixed batch): the user's .npz when
    given, else ``recipe.calibration_samples`` seeded synthetic inputs."""
    samples, seed = int(recipe.calibration_samples), int(recipe.seed)
    rows = layout.fixed_batch or (8 if layout.batched else 1)

    def source() -> Iterable[Feeds]:
        if calibration is not None:
            data = load_npz(Path(calibration))
            n = samples_in(data, layout)
            step = rows if layout.fixed_batch else min(rows, n)
            for i in range(0, n, step):
                idx = np.arange(i, i + step) % n
                yield make_inputs(info, step, npz=take_rows(data, layout, idx), layout=layout)
        else:
            for i in range(math.ceil(samples / rows)):
                size = rows if layout.fixed_batch else min(rows, samples - rows * i)
                yield make_inputs(info, size, seed=seed + i, layout=layout)

    return source


def recipe_for(
    precision: Precision,
    calibration: Path | None = None,
    calibrator: str = "minmax",
    calibration_samples: int = 32,
    seed: int = 0,
    toolkit: str = "onnxruntime",
    reduce_range: bool | None = None,
) -> VariantRecipe:
    """The recipe ``optiserve profile`` makes for these settings (its defaults included;
    ``reduce_range`` None: this machine's, see ``default_reduce_range``)."""
    return VariantRecipe(
        precision=precision,
        calibrator=calibrator,
        calibration=file_digest(calibration) if calibration is not None else SYNTHETIC,
        calibration_samples=calibration_samples,
        seed=seed,
        toolkit=toolkit,
        reduce_range=default_reduce_range(precision) if reduce_range is None else reduce_range,
    )


def build_from_recipe(
    model: Path,
    info: ModelInfo,
    layout: InputLayout,
    recipe: VariantRecipe,
    calibration: Path | None = None,
    cache_dir: Path | None = None,
    time_limit_s: float | None = None,
) -> Variant:
    """The variant of ``recipe`` from the cache, else built on these batches: the one way
    the worker, the server and ``emit`` come by a variant, so all three get the same bytes."""
    from optiserve.variants.build import build_variant
    from optiserve.variants.cache import VariantCache

    source = calibration_source(info, layout, recipe, calibration)
    return build_variant(model, info.sha256, recipe, VariantCache(cache_dir), source, time_limit_s=time_limit_s)
