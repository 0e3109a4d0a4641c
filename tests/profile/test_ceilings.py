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


def test_rounds_interleave_thread_counts_after_a_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every (thread count, op) runs once to warm up, then each round times all of them: a slow
    phase at the start spoils one round of each thread count, never every round of one."""
    from optiserve.profile import ceilings

    order: list[object] = []
    real = ceilings.best_seconds

    def recorded(call, seconds=0.0, min_calls=1):  # type: ignore[no-untyped-def]
        order.append(call)
        return real(call, 0.0, 1)

    monkeypatch.setattr(ceilings, "best_seconds", recorded)
    got = ceilings.measure([2, 1], 0.02)
    n = 2 * len(ceilings.OPS)
    assert len(order) == n * (1 + ceilings.ROUNDS)
    passes = [order[i : i + n] for i in range(0, len(order), n)]
    assert all(len(set(map(id, p))) == n for p in passes)  # each pass: every op at both thread counts
    assert all([id(c) for c in p] == [id(c) for c in passes[0]] for p in passes)
    assert sorted(got.threads) == [1, 2] and all(v > 0 for t in got.threads.values() for v in vars(t).values())
