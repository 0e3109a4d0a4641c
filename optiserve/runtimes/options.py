"""Runtime knobs checked once, before any library sees them.

Every ``Runtime.load`` calls ``check_options`` first, so a misspelt knob or a
bad value is one ``UsageError`` line naming the valid ones, never a ``KeyError``
from deep inside a back end or a knob silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

from optiserve.errors import UnknownNameError, UsageError
from optiserve.runtimes.base import Runtime


def check_options(runtime: Runtime, options: Mapping[str, object]) -> dict[str, str]:
    """Validate knob names and values; return them merged over the defaults.

    A knob with listed values takes one of them; one with none takes a whole number
    >= 0 (a YAML integer is accepted as its decimal text). Anything else, a bool
    or a float included, is refused.
    """
    merged = dict(runtime.defaults)
    for key, raw in options.items():
        if key not in runtime.options:
            raise UnknownNameError(f"{runtime.name} option", str(key), sorted(runtime.options))
        valid = runtime.options[key]
        value = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
        if not isinstance(value, str):
            want = f"one of {', '.join(valid)}" if valid else "a whole number"
            raise UsageError(f"{runtime.name} option {key} wants {want}, got {raw!r} ({type(raw).__name__})")
        if valid and value not in valid:
            raise UnknownNameError(f"value for {runtime.name} option {key}", value, valid)
        if not valid and not (value.isascii() and value.isdigit()):
            raise UsageError(f"{runtime.name} option {key} wants a whole number, got {value!r}")
        merged[key] = value
    return merged
