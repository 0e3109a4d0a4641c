"""Package namespaces that import their members on first use (PEP 562).

A subpackage's ``__init__`` re-exports its public names for users and notebooks;
importing them eagerly would make every process that needs one module of the
package (a profiler worker needs ``profile.worker``, not the whole sweep) pay for all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose ``names`` map to the submodules that define them."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
