"""How a variant is made: everything that changes its bytes, and so its cache key."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from optiserve.errors import UnknownNameError
from optiserve.types import Precision

CALIBRATORS = ("minmax", "entropy", "percentile")
SYNTHETIC = "synthetic"
# who builds the variant: ORT's quantisation tools, or NNCF (for OpenVINO); the first is the default
TOOLKITS = ("onnxruntime", "nncf")
INT8 = (Precision.INT8_STATIC, Precision.INT8_DYNAMIC)  # the precisions whose weights reduce_range narrows


def int8_saturates(flags: Iterable[str], arch: str) -> bool:
    """Whether this CPU's int8 kernels saturate full-range weights: x86 without VNNI
    (AVX-512 VNNI, AVX-VNNI or AMX int8 all accumulate u8 x s8 in 32 bits)."""
    return arch in ("x86_64", "AMD64") and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


def default_reduce_range(precision: Precision) -> bool:
    """The recipe default on this machine: reduce_range where its kernels saturate."""
    return precision in INT8 and _saturates_here()


@functools.cache
def _saturates_here() -> bool:
    """This machine's answer, read from /proc/cpuinfo once per process (every recipe asks)."""
    import platform

    from optiserve._cpuinfo import flags, read_cpuinfo

    return int8_saturates(flags(read_cpuinfo()), platform.machine())


@dataclass(frozen=True)
class VariantRecipe:
    """``calibration`` is the digest of the user's calibration file, or ``synthetic``;
    ``toolkit`` is the library that builds it (a runtime's ``variant_toolkit``);
    ``reduce_range``: 7-bit int8 weights, for x86 CPUs without VNNI, whose u8 x s8
    kernels (AVX2's VPMADDUBSW) saturate 16-bit sums of full-range weights (ORT's
    ``reduce_range``, NNCF's ``overflow_fix``): on a Zen 3 guest it cut the MLP's
    int8 error from 9% to 3% of the output range."""

    precision: Precision
    calibrator: str = "minmax"
    calibration: str = SYNTHETIC
    calibration_samples: int = 32
    fp16_keep_io: bool = True
    int4_block_size: int = 32
    seed: int = 0
    toolkit: str = TOOLKITS[0]
    reduce_range: bool = False

    def __post_init__(self) -> None:
        if self.calibrator not in CALIBRATORS:
            raise UnknownNameError("calibrator", self.calibrator, CALIBRATORS)
        if self.toolkit not in TOOLKITS:
            raise UnknownNameError("variant toolkit", self.toolkit, TOOLKITS)

    def identity(self) -> dict[str, str]:
        """The recipe fields that matter for this precision (part of a config's key). The
        default toolkit is left out, so ORT variants keep the keys they always had."""
        p = self.precision
        # only where it is set, so the keys of VNNI machines' variants stay as they were
        narrow = {"reduce_range": "true"} if self.reduce_range and p in INT8 else {}
        if self.toolkit != TOOLKITS[0]:
            return {"toolkit": self.toolkit, **self._nncf_identity(), **narrow}
        if p is Precision.INT8_STATIC:
            return {
                "calibrator": self.calibrator,
                "calibration": self.calibration,
                "calibration_samples": str(self.calibration_samples),
                "seed": str(self.seed),
                **narrow,
            }
        if p is Precision.INT8_DYNAMIC:
            return narrow
        if p is Precision.FP16:
            return {"fp16_keep_io": str(self.fp16_keep_io).lower()}
        if p is Precision.INT4:
            return {"int4_block_size": str(self.int4_block_size)}
        return {}

    def _nncf_identity(self) -> dict[str, str]:
        """NNCF picks its own range estimators: the calibrator is not one of its inputs."""
        p = self.precision
        if p is Precision.INT8_STATIC:
            return {
                "calibration": self.calibration,
                "calibration_samples": str(self.calibration_samples),
                "seed": str(self.seed),
            }
        if p is Precision.INT4:
            return {"int4_block_size": str(self.int4_block_size)}
        return {}

    def cache_key(self, model_sha256: str, versions: dict[str, str]) -> str:
        blob = json.dumps(
            {"model": model_sha256, "precision": self.precision.value, **self.identity(), "versions": versions},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["precision"] = self.precision.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VariantRecipe:
        """Inverse of ``to_dict``: how a recipe reaches the build process."""
        return cls(**{**d, "precision": Precision.parse(str(d["precision"]))})

    @classmethod
    def from_identity(cls, precision: Precision, identity: dict[str, str]) -> VariantRecipe:
        kw: dict[str, Any] = {"precision": precision}
        for k, v in identity.items():
            if k in ("calibration_samples", "int4_block_size", "seed"):
                kw[k] = int(v)
            elif k in ("fp16_keep_io", "reduce_range"):
                kw[k] = v == "true"
            else:
                kw[k] = v
        return cls(**kw)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
