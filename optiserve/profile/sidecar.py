"""What ``profile.json`` must hold, checked on every read (pydantic).

The sidecar is JSON a person can open and edit; every command reads it. A JSON
list, a ``model`` that is a string or a ``complete: "yes"`` must come back as one
line naming the field, never as a ``KeyError`` deep inside ``plan`` or ``report``.
Only the fields other layers read are constrained; the rest passes through.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from optiserve.errors import StoreError


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ModelMeta(_Open):
    name: StrictStr
    sha256: StrictStr = Field(min_length=1)
    path: StrictStr | None = None
    family: StrictStr | None = None
    opset: StrictInt | None = None
    inputs: list[dict[str, Any]] | None = None
    outputs: list[StrictStr] | None = None


class HardwareMeta(_Open):
    id: StrictStr | None = None
    cpu_model: StrictStr | None = None


class SidecarMeta(_Open):
    schema_version: StrictInt
    model: ModelMeta
    hardware: HardwareMeta
    versions: dict[str, Any] | None = None
    layout: dict[str, Any] | None = None
    batch_note: StrictStr | None = None
    sweep: dict[str, Any] | None = None
    precision_auto: StrictStr | None = None
    planned_configs: StrictInt | None = Field(None, ge=0)
    complete: StrictBool | None = None
    serving: dict[str, Any] | None = None
    created: StrictStr | None = None
    updated: StrictStr | None = None


def check_meta(data: Any, where: str) -> dict[str, Any]:
    """``data`` if it is a usable sidecar, else ``StoreError`` naming the first bad field."""
    if not isinstance(data, dict):
        raise StoreError(f"{where} is not a profile's metadata: expected a JSON object, got {type(data).__name__}")
    try:
        SidecarMeta.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = "" if isinstance(e.get("input"), dict) else f" (got {e.get('input')!r})"
        raise StoreError(f"{where}: field {loc}: {e['msg']}{got}") from None
    if data.get("layout"):
        from optiserve.types import InputLayout

        try:
            InputLayout.from_dict(data["layout"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"{where}: field layout is malformed ({type(exc).__name__}: {exc})") from None
    return data
