"""Each config runs in its own process: a crash, hang or failure is one failed row."""

from pathlib import Path

import pytest

from optiserve.profile.runner import run_isolated
from optiserve.profile.timing import TimingPolicy
from optiserve.types import BenchConfig, Precision, Status


def _job(model: Path, batch: int = 1, precision: Precision = Precision.FP32, **extra: object) -> dict[str, object]:
    policy = TimingPolicy(budget_s=0.2, warmup_max_s=0.2, min_samples=20)
    return {
        "model": str(model),
        "config": BenchConfig("onnxruntime-cpu", precision, batch, 1).to_dict(),
        "policy": policy.__dict__,
        "shapes": {},
        "inputs": None,
        "seed": 0,
        "memory_limit_mb": None,
        **extra,
    }


def test_measures_in_a_child(mlp_path: Path) -> None:
    m = run_isolated(_job(mlp_path, batch=2), timeout_s=60)
    assert m.status is Status.OK, m.error
    assert m.stats is not None and m.stats.n >= 20 and len(m.samples_ns) == m.stats.n
    assert m.throughput > 0 and m.load_time_s > 0 and m.peak_rss_mb > 0
    assert m.warmup_iterations > 0 and m.stop_reason in ("ci-reached", "budget", "max-samples")


def test_crash_is_a_failed_row(mlp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTISERVE_FAULT", "crash@batch_size=4")
    m = run_isolated(_job(mlp_path, batch=4), timeout_s=60)
    assert m.status is Status.FAILED and "SIGABRT" in m.error


def test_hang_is_killed_at_the_timeout(mlp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTISERVE_FAULT", "hang@batch_size=1")
    m = run_isolated(_job(mlp_path), timeout_s=3)
    assert m.status is Status.FAILED and "timed out after 3 s" in m.error


def test_unsupported_precision_is_a_failed_row(mlp_path: Path) -> None:
    m = run_isolated(_job(mlp_path, precision=Precision.BF16), timeout_s=60)
    assert m.status is Status.FAILED and "does not support bf16" in m.error


def test_variant_that_cannot_be_built_is_a_failed_row(mlp_path: Path) -> None:
    # the MLP is Gemm-only: weight-only int4 (MatMul) has nothing to quantise
    m = run_isolated(_job(mlp_path, precision=Precision.INT4), timeout_s=60)
    assert m.status is Status.FAILED and "this graph has none" in m.error


def test_out_of_memory_is_a_failed_row(mlp_path: Path) -> None:
    # 64 MiB of address space cannot even hold onnxruntime: a real allocation failure
    m = run_isolated(_job(mlp_path, memory_limit_mb=64), timeout_s=60)
    assert m.status is Status.FAILED and "memory" in m.error
