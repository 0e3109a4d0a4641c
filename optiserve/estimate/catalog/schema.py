"""The catalog's file format, validated on load (pydantic, extra keys rejected).

Figures are per instance (CPU) or per device (accelerator); every price names
its source and the date it is from, so a plan can say how old its costs are.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    region: str
    on_demand_usd_per_hour: float = Field(gt=0)
    spot_usd_per_hour: float | None = Field(default=None, gt=0)
    source: str = Field(min_length=4)
    spot_source: str | None = None
    as_of: dt.date

    @model_validator(mode="after")
    def _spot_below_on_demand(self) -> Price:
        if self.spot_usd_per_hour is not None and self.spot_usd_per_hour > self.on_demand_usd_per_hour:
            raise ValueError("spot price above the on-demand price")
        return self


class Effective(_Strict):
    """What ONNX Runtime's kernels reach on this CPU (``optiserve profile``'s ceilings
    microbenchmark), per core and cycle at ``ghz`` like the peaks: used instead of the
    peaks for transfer fits (``estimate/reach.py``). Memory bandwidth stays the datasheet share."""

    fp32_gemm_flops_per_cycle_per_core: float = Field(gt=0)
    fp32_conv_flops_per_cycle_per_core: float = Field(gt=0)
    int8_gemm_ops_per_cycle_per_core: float = Field(gt=0)
    int8_conv_ops_per_cycle_per_core: float = Field(gt=0)
    source: str = Field(min_length=4)  # where it was measured: a reference profile
    as_of: dt.date


class Cpu(_Strict):
    model: str
    arch: Literal["x86_64", "arm64"]
    generation: str
    threads_per_core: int = Field(ge=1, le=2)
    ghz: float = Field(gt=0, lt=7)
    fp32_flops_per_cycle_per_core: float = Field(gt=0)
    int8_ops_per_cycle_per_core: float = Field(gt=0)
    bf16_flops_per_cycle_per_core: float = Field(gt=0)
    memory_bandwidth_gbs: float = Field(gt=0)
    effective: Effective | None = None


class Accelerator(_Strict):
    model: str
    kind: Literal["gpu", "neuron", "tpu"]
    count: int = Field(ge=1)
    memory_gib: float = Field(gt=0)
    fp32_tflops: float = Field(gt=0)
    fp16_tflops: float = Field(gt=0)
    int8_tops: float = Field(gt=0)
    memory_bandwidth_gbs: float = Field(gt=0)
    interconnect_gbs: float = Field(gt=0)
    spec_source: str = Field(min_length=4)


class Instance(_Strict):
    name: str = Field(min_length=1)
    family: str
    vcpus: int = Field(ge=1)
    memory_gib: float = Field(gt=0)
    cpu: Cpu
    accelerator: Accelerator | None = None
    prices: tuple[Price, ...] = Field(min_length=1)
    notes: str = ""

    @model_validator(mode="after")
    def _regions_unique(self) -> Instance:
        regions = [p.region for p in self.prices]
        dup = {r for r in regions if regions.count(r) > 1}
        if dup:
            raise ValueError(f"region priced twice: {', '.join(sorted(dup))}")
        return self


class ProviderFile(_Strict):
    provider: str = Field(min_length=1)
    instances: tuple[Instance, ...] = ()
    regions: dict[str, Region] = {}


class Region(_Strict):
    provider: str
    country: str = Field(min_length=2, max_length=2)
    geo: tuple[str, ...] = ()


class RegionsFile(_Strict):
    regions: dict[str, Region]


ProviderFile.model_rebuild()
