"""Deferred optional imports with an install hint (optuna's ``_imports.py`` pattern).

GPU and heavy back ends import their libraries only when used; when one is
missing the caller gets a ``RuntimeUnavailableError`` that says what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from optiserve.errors import RuntimeUnavailableError


def optional_import(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"{module} is not installed ({exc}); install it with: pip install 'optiserve[{extra}]'"
        ) from None


def missing_reason(module: str, extra: str) -> str | None:
    """``None`` when ``module`` imports, else the reason and the install hint."""
    try:
        optional_import(module, extra)
    except RuntimeUnavailableError as exc:
        return str(exc)
    return None
