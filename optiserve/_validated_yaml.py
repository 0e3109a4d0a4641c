"""YAML files validated by a pydantic model, with the first error as one line naming where it is.

The catalog and the SLA file share this: a user's typo must come back as
"<label>: model 'cnn', field rate: ..." and never as a pydantic dump.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from optiserve.errors import UsageError

M = TypeVar("M", bound=BaseModel)


def parse_validated(
    text: str,
    label: str,
    model: type[M],
    error: type[UsageError],
    where: Callable[[Any, tuple[Any, ...]], str],
    expected: str,
) -> M:
    """``model`` from YAML ``text``; ``where(data, loc)`` names a pydantic error location for a person."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{label}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise error(f"{label}: expected a mapping with {expected}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        raise error(f"{label}: {where(data, tuple(errs[0]['loc']))}: {errs[0]['msg']}{more}") from None
