"""How a variant is made: everything that changes its bytes, and so its cache key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from optiserve.errors import UnknownNameError
from optiserve.types import Precision

CALIBRATORS = ("minmax", "entropy", "percentile")
SYNTHETIC = "synthetic"
# who builds the variant: ORT's quantisation tools, or NNCF (for OpenVINO); the first is the default
TOOLKITS = ("onnxruntime", "nncf")


@dataclass(frozen=True)
class VariantRecipe:
    """``calibration`` is the digest of the user's calibration file, or ``synthetic``;
    ``toolkit`` is the library that builds it (a runtime's ``variant_toolkit``)."""

    precision: Precision
    calibrator: str = "minmax"
    calibration: str = SYNTHETIC
    calibration_samples: int = 32
    fp16_keep_io: bool = True
    int4_block_size: int = 32
    seed: int = 0
    toolkit: str = TOOLKITS[0]

    def __post_init__(self) -> None:
        if self.calibrator not in CALIBRATORS:
            raise UnknownNameError("calibrator", self.calibrator, CALIBRATORS)
        if self.toolkit not in TOOLKITS:
            raise UnknownNameError("variant toolkit", self.toolkit, TOOLKITS)

    def identity(self) -> dict[str, str]:
        """The recipe fields that matter for this precision (part of a config's key). The
        default toolkit is left out, so ORT variants keep the keys they always had."""
        p = self.precision
        if self.toolkit != TOOLKITS[0]:
            return {"toolkit": self.toolkit, **self._nncf_identity()}
        if p is Precision.INT8_STATIC:
            return {
                "calibrator": self.calibrator,
                "calibration": self.calibration,
                "calibration_samples": str(self.calibration_samples),
                "seed": str(self.seed),
            }
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
            elif k == "fp16_keep_io":
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
