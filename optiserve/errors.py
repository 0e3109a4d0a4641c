"""One error root. The CLI turns each into a one-line message and an exit code.

Anything that is *not* an ``OptiserveError`` is a bug in optiserve and is
allowed to show a traceback; everything a user can cause must raise one of these.
"""

from __future__ import annotations


class OptiserveError(Exception):
    """Root of every error a user can cause. ``exit_code`` is what the CLI returns."""

    exit_code: int = 1


class UsageError(OptiserveError):
    """Bad input: a missing file, an unknown name, a malformed value."""

    exit_code = 2


class ModelError(UsageError):
    """The model file is missing, is not ONNX, or its inputs cannot be resolved."""


class UnknownNameError(UsageError):
    """A name (runtime, precision, model) that is not one of the valid ones."""

    def __init__(self, kind: str, name: str, valid: list[str] | tuple[str, ...]) -> None:
        self.kind, self.name, self.valid = kind, name, tuple(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid)}")


class StoreError(UsageError):
    """A profile on disk that cannot be read, written or resumed."""


class RuntimeUnavailableError(OptiserveError):
    """A runtime whose library, device or provider is missing on this machine."""


class VariantError(OptiserveError):
    """A precision variant that cannot be built (unsupported op, nothing to quantise)."""


class CatalogError(UsageError):
    """A hardware catalog file that does not parse or validate; names the entry and field."""


class SLAError(UsageError):
    """An SLA file that does not parse or validate, or asks for what no profile has."""


class InfeasibleError(OptiserveError):
    """No placement meets the SLA. The plan is still written, with the closest miss."""

    exit_code = 3
