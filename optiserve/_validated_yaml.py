"""YAML files validated by a pydantic model, with the first error as one line naming where it is.

The catalog and the SLA file share this: a user's typo must come back as
"<label>: model 'cnn', field rate: ..." and never as a pydantic dump.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from optiserve.errors import UsageError

M = TypeVar("M", bound=BaseModel)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``safe_load`` that refuses a key given twice: YAML keeps the last silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads an unquoted 1e12 or 1.0e12 (no sign in the exponent) as a string; read it as the
# number a person meant, so that a *quoted* "150" is the only string where a number belongs.
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


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
        data = yaml.load(text, Loader=_UniqueKeyLoader)
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
