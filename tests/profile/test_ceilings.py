"""Effective ceilings: ONNX Runtime's own kernels, measured once per machine and runtime."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest


def test_ceilings_are_measured_once_per_machine_and_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second profile on the same machine reuses the stored ceilings (same measured time);
    a thread count not measured yet is measured and added; another machine measures its own."""
    from optiserve.profile import ceilings

    calls: list[tuple[int, ...]] = []
    real = ceilings.measure

    def counted(threads: Sequence[int], seconds: float = 0.02) -> ceilings.Ceilings:
        calls.append(tuple(threads))
        return real(threads, 0.02)

    monkeypatch.setattr(ceilings, "measure", counted)
    first = ceilings.for_machine([1], "m1", tmp_path)
    again = ceilings.for_machine([1], "m1", tmp_path)
    assert calls == [(1,)] and again == first
    both = ceilings.for_machine([1, 2], "m1", tmp_path)
    assert calls == [(1,), (2,)] and sorted(both.threads) == [1, 2] and both.threads[1] == first.threads[1]
    ceilings.for_machine([1], "m2", tmp_path)
    assert calls[-1] == (1,) and len(calls) == 3
