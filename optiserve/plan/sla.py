"""The SLA file: per model the traffic, the latency target and the accuracy tolerance.

```yaml
defaults:            # apply to every model unless it says otherwise
  regions: [EU]      # region names or geo tags (EU, US, AE/UAE, ...); empty: anywhere
  spot: false
  headroom: 0.2      # fraction of each replica's SLA capacity kept spare
models:
  cnn:
    profile: profiles/demo-cnn   # or --profile on the command line
    rate: 150                    # requests/s, the steady target
    peak_factor: 1.5             # peak = rate * peak_factor; replicas are sized for the peak
    p99_ms: 100
    max_accuracy_drop: 0.01
search:                          # the knobs the optimizer may turn (defaults shown in SearchSpace)
  max_delay_ms: [0, 1, 2, 5, 10]
  instances: [1, 2, 4]
```
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from optiserve._validated_yaml import parse_validated
from optiserve.errors import SLAError


class _Strict(BaseModel):
    """Numbers must be finite numbers and flags booleans: ``rate: "150"`` or ``.inf`` is a typo to report."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# how clients send tensors: REST JSON, REST binary extension, or gRPC (raw tensors); auto: binary past 4096 elements
Encoding = Literal["auto", "json", "binary", "grpc"]


class Defaults(_Strict):
    encoding: Encoding = "auto"
    regions: tuple[StrictStr, ...] = ()
    spot: StrictBool = False
    headroom: StrictFloat = Field(default=0.2, ge=0, lt=1)
    providers: tuple[StrictStr, ...] = ()
    instance_types: tuple[StrictStr, ...] = ()


class ModelSLA(_Strict):
    profile: StrictStr | None = None
    model: StrictStr | None = None  # the ONNX file; default: the one the profile names
    rate: StrictFloat = Field(gt=0)
    peak_factor: StrictFloat = Field(default=1.0, ge=1)
    p99_ms: StrictFloat = Field(gt=0)
    max_accuracy_drop: StrictFloat = Field(default=0.01, ge=0)
    regions: tuple[StrictStr, ...] | None = None
    spot: StrictBool | None = None
    headroom: StrictFloat | None = Field(default=None, ge=0, lt=1)
    providers: tuple[StrictStr, ...] | None = None
    instance_types: tuple[StrictStr, ...] | None = None
    encoding: Encoding | None = None

    @property
    def peak_rate(self) -> float:
        return self.rate * self.peak_factor


class SearchSpace(_Strict):
    max_delay_ms: tuple[StrictFloat, ...] = (0.0, 1.0, 2.0, 5.0, 10.0)
    instances: tuple[StrictInt, ...] = (1, 2, 4)
    max_batch: tuple[StrictInt, ...] | None = None  # default: the profiled batch sizes

    @model_validator(mode="after")
    def _positive(self) -> SearchSpace:
        if not self.max_delay_ms or any(d < 0 for d in self.max_delay_ms):
            raise ValueError("max_delay_ms must be a non-empty list of values >= 0")
        if not self.instances or any(i < 1 for i in self.instances):
            raise ValueError("instances must be a non-empty list of values >= 1")
        if self.max_batch is not None and (not self.max_batch or any(b < 1 for b in self.max_batch)):
            raise ValueError("max_batch must be a non-empty list of values >= 1")
        return self


class SLA(_Strict):
    defaults: Defaults = Defaults()
    models: dict[str, ModelSLA] = Field(min_length=1)
    search: SearchSpace = SearchSpace()

    def resolved(self, name: str) -> ResolvedSLA:
        m, d = self.models[name], self.defaults
        return ResolvedSLA(
            name=name,
            rate=m.rate,
            peak_factor=m.peak_factor,
            p99_ms=m.p99_ms,
            max_accuracy_drop=m.max_accuracy_drop,
            regions=m.regions if m.regions is not None else d.regions,
            spot=m.spot if m.spot is not None else d.spot,
            headroom=m.headroom if m.headroom is not None else d.headroom,
            providers=m.providers if m.providers is not None else d.providers,
            instance_types=m.instance_types if m.instance_types is not None else d.instance_types,
            encoding=m.encoding if m.encoding is not None else d.encoding,
        )


class ResolvedSLA(_Strict):
    """One model's SLA with the defaults filled in: what the optimizer reads."""

    name: str
    rate: float
    peak_factor: float
    p99_ms: float
    max_accuracy_drop: float
    regions: tuple[str, ...]
    spot: bool
    headroom: float
    providers: tuple[str, ...]
    instance_types: tuple[str, ...]
    encoding: str = "auto"  # the clients' tensor encoding, whose measured serving cost the plan charges

    @property
    def peak_rate(self) -> float:
        return self.rate * self.peak_factor


def _where(data: Any, loc: tuple[Any, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "models":
        return f"model {loc[1]!r}, field {'.'.join(str(x) for x in loc[2:]) or '(entry)'}"
    return "field " + ".".join(str(x) for x in loc)


def parse_sla(text: str, label: str = "SLA") -> SLA:
    return parse_validated(text, label, SLA, SLAError, _where, "'models'")


def load_sla(path: Path) -> tuple[SLA, str]:
    """(SLA, sha256 of the file's bytes)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SLAError(f"SLA file {path}: cannot read ({exc.strerror})") from None
    return parse_sla(raw.decode("utf-8", "replace"), str(path)), hashlib.sha256(raw).hexdigest()
