"""The runtime contract over every registered runtime (one suite, parametrized by the registry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from optiserve.testing.runtime_conformance import RuntimeConformance


class TestEveryRuntime(RuntimeConformance):
    @pytest.fixture
    def model_path(self, mlp_path: Path) -> Path:
        return mlp_path
