"""The digest check every hand-over shares: the file shipped is the file measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from optiserve.errors import ModelError
from optiserve.models.graph import model_sha256, require_sha256
from optiserve.models.zoo import build_zoo


def test_a_model_is_refused_unless_its_digest_is_the_expected_one(tmp_path: Path) -> None:
    (model,) = build_zoo(tmp_path, ["mlp"])
    digest = model_sha256(model)
    require_sha256(model, digest.upper(), "the planned model")  # case of the hex digits does not matter
    require_sha256(model, "0" * 64, "the planned model", got="0" * 64)  # a digest in hand is not recomputed
    with pytest.raises(ModelError, match=r"is not the planned model \(SHA-256 .*expected 0000.*\): refusing to serve"):
        require_sha256(model, "0" * 64, "the planned model", " to serve")
