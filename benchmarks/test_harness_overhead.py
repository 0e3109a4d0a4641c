"""The profiler must not inflate what it measures: its median at batch 1 on the MLP
(the cheapest call, so the worst case for overhead) against a bare
``session.run`` loop on the same session and inputs. Target: at most 2% added.
Asserts it, against both forms of the bare call."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.models.zoo import build_zoo
from optiserve.profile.timing import TimingPolicy, measure, warm_up
from optiserve.runtimes.onnxruntime_cpu import OnnxRuntimeCPU
from optiserve.types import Precision

ROUNDS = 15
CALLS = 3000


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zoo(tmp_path_factory.mktemp("bench"), ["mlp"])[0]


def _bare_median(sess: ort.InferenceSession, names: list[str] | None, feeds: dict[str, np.ndarray], n: int) -> float:
    pc = time.perf_counter_ns
    out = []
    for _ in range(n):
        t0 = pc()
        sess.run(names, feeds)
        out.append(pc() - t0)
    return float(np.median(out))


def test_profiler_adds_at_most_2_percent(mlp: Path, benchmark, record_ratio) -> None:  # type: ignore[no-untyped-def]
    session = OnnxRuntimeCPU().load(mlp, Precision.FP32, 1, {})
    raw = session._sess  # the very same InferenceSession both sides use
    feeds = make_inputs(inspect_model(mlp), 1)
    run = session.run

    def call() -> object:
        return run(feeds)

    # both sides warm the same session; the profiler's own warm-up is part of its path
    wu = warm_up(call, TimingPolicy(warmup_max_s=2))
    policy = TimingPolicy(budget_s=60, target_ci=0.0, min_samples=CALLS, max_samples=CALLS)
    names = list(session.output_names)
    bare, named, prof = [], [], []
    for i in range(ROUNDS):  # interleave, rotating who goes first, so drift hits all three
        for who in np.roll([0, 1, 2], i):
            if who == 0:
                bare.append(_bare_median(raw, None, feeds, CALLS))
            elif who == 1:
                named.append(_bare_median(raw, names, feeds, CALLS))
            else:
                samples, _ = measure(call, policy, wu.per_call_s)
                prof.append(float(np.median(samples)))
    ratio = float(np.median(prof) / np.median(bare))
    pure = float(np.median(prof) / np.median(named))
    record_ratio(
        "profiler / bare session.run(None, feeds) (MLP b=1)",
        ratio,
        "<= 1.02",
        ratio <= 1.02,
        f"bare {np.median(bare) / 1e3:.2f} us, profiler {np.median(prof) / 1e3:.2f} us, {ROUNDS}x{CALLS} calls",
    )
    record_ratio(
        "profiler / bare session.run(names, feeds) (MLP b=1)",
        pure,
        "<= 1.02",
        pure <= 1.02,
        f"same call as the profiler makes: {np.median(named) / 1e3:.2f} us",
    )
    benchmark.pedantic(lambda: raw.run(None, feeds), rounds=2000, iterations=1, warmup_rounds=100)
    assert ratio <= 1.02, f"harness adds {ratio - 1:.1%}"
    assert pure <= 1.02, f"harness adds {pure - 1:.1%} over the identical call"
