"""Effective ceilings: what ONNX Runtime's own kernels reach on this machine.

Datasheet peaks are not what a runtime reaches (issue 18: Sapphire Rapids'
AMX int8 peak, 2048 op/cycle/core, is far above ONNX Runtime's int8 kernels),
so an efficiency fitted against a peak does not carry over to a machine whose
peak is reached to another degree. Per thread count, a few single-op graphs
run through ONNX Runtime itself:

- fp32 ``MatMul`` and ``Conv`` (3x3, 64 channels, 56x56: a ResNet stage);
- int8 ``QLinearMatMul`` and ``QLinearConv`` with u8 activations and s8
  weights: what ORT fuses an int8-static QDQ graph (``variants/ort_recipes``)
  into, so the kernels measured are the ones the profiled variant runs;
- ``Add`` of a scalar to 64 MiB: a read and a write per element, memory-bound.

Each op's time is the best of its calls (a noisy neighbour only ever adds
time); compute is ops per best call, bandwidth bytes per best call. The whole
run takes a few seconds.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optiserve.errors import UsageError

GEMM = 512  # M = K = N of the GEMMs: large enough to be compute-bound, small enough to be quick
CONV = (8, 64, 56, 56, 3)  # batch, channels in = out, height, width, kernel
ELEMENTS = 16 << 20  # fp32 elements streamed by the bandwidth op (64 MiB in, 64 MiB out)
SECONDS_PER_OP = 0.25  # timed calls per op and thread count, over all rounds
MIN_CALLS = 3


@dataclass(frozen=True)
class ThreadCeilings:
    """Rates reached with one intra-op thread count (ops and bytes per second)."""

    fp32_gemm: float
    fp32_conv: float
    int8_gemm: float
    int8_conv: float
    copy_bytes_per_s: float

    def compute(self, compute: str) -> float | None:
        """The ceiling of a compute class: the faster of its GEMM and convolution (a
        roofline ceiling is the best the runtime reaches); None: not measured."""
        if compute in ("fp32", "fp16"):  # ORT's CPU kernels compute fp16 graphs in fp32
            return max(self.fp32_gemm, self.fp32_conv)
        if compute == "int8":
            return max(self.int8_gemm, self.int8_conv)
        return None


@dataclass(frozen=True)
class Ceilings:
    """Effective ceilings per thread count, and how they were measured."""

    threads: Mapping[int, ThreadCeilings]
    runtime: str
    measured: str  # ISO time
    method: str

    def at(self, threads: int) -> ThreadCeilings | None:
        return self.threads.get(threads)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "measured": self.measured,
            "method": self.method,
            "threads": {str(t): asdict(c) for t, c in sorted(self.threads.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ceilings:
        try:
            per = {int(t): ThreadCeilings(**{k: float(v) for k, v in c.items()}) for t, c in data["threads"].items()}
            return cls(per, str(data["runtime"]), str(data["measured"]), str(data.get("method", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(f"the profile's ceilings are malformed ({exc!r}): profile again") from None


def from_meta(meta: Mapping[str, Any]) -> Ceilings | None:
    """The ceilings a profile stored, or None (profiled before them, or ``--no-ceilings``)."""
    data = meta.get("ceilings")
    return Ceilings.from_dict(data) if data else None


def _graph(op: str) -> tuple[bytes, dict[str, np.ndarray], float]:
    """(model bytes, feeds, ops or bytes per call) of one single-op graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []
    feeds: dict[str, np.ndarray] = {}

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def scale_zero(prefix: str, dtype: type[np.generic]) -> list[str]:
        return [init(f"{prefix}_s", np.array(0.02, np.float32)), init(f"{prefix}_z", np.array(0, dtype))]

    n, c, h, w, k = CONV
    if op.endswith("gemm"):
        shape_x, work = [GEMM, GEMM], 2.0 * GEMM**3
    elif op.endswith("conv"):
        shape_x, work = [n, c, h, w], 2.0 * n * c * c * h * w * k * k
    else:
        shape_x, work = [ELEMENTS], 8.0 * ELEMENTS  # 4 bytes read + 4 written per element
    int8 = op.startswith("int8")
    elem = TensorProto.UINT8 if int8 else TensorProto.FLOAT
    feeds["x"] = (
        rng.integers(0, 255, shape_x, dtype=np.uint8) if int8 else rng.standard_normal(shape_x).astype(np.float32)
    )
    if op == "fp32_gemm":
        node = helper.make_node("MatMul", ["x", init("w", rng.standard_normal((GEMM, GEMM)).astype(np.float32))], ["y"])
    elif op == "int8_gemm":
        wq = rng.integers(-127, 127, (GEMM, GEMM), dtype=np.int8)
        ins = ["x", *scale_zero("x", np.uint8), init("w", wq), *scale_zero("w", np.int8), *scale_zero("y", np.uint8)]
        node = helper.make_node("QLinearMatMul", ins, ["y"])
    elif op == "fp32_conv":
        wc = rng.standard_normal((c, c, k, k)).astype(np.float32)
        node = helper.make_node("Conv", ["x", init("w", wc)], ["y"], pads=[1, 1, 1, 1])
    elif op == "int8_conv":
        wq = rng.integers(-127, 127, (c, c, k, k), dtype=np.int8)
        ins = ["x", *scale_zero("x", np.uint8), init("w", wq), *scale_zero("w", np.int8), *scale_zero("y", np.uint8)]
        node = helper.make_node("QLinearConv", ins, ["y"], pads=[1, 1, 1, 1])
    else:
        node = helper.make_node("Add", ["x", init("one", np.array(1.0, np.float32))], ["y"])
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", elem, shape_x)],
        [helper.make_tensor_value_info("y", elem, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), feeds, work


def best_seconds(call: Callable[[], object], seconds: float = SECONDS_PER_OP, min_calls: int = MIN_CALLS) -> float:
    """The fastest of repeated calls after one warm-up call: robust to a noisy machine,
    whose interference only ever adds time."""
    call()
    best, start, n = float("inf"), time.perf_counter(), 0
    while n < min_calls or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


OPS = ("fp32_gemm", "fp32_conv", "int8_gemm", "int8_conv", "copy_bytes_per_s")
ROUNDS = 6  # each (thread count, op) is timed in this many interleaved rounds: a burst of load spoils a round
WARMUP_S = 0.5  # every op at every thread count runs for this long before any round is timed


def measure(threads: Sequence[int], seconds: float = SECONDS_PER_OP) -> Ceilings:
    """Effective ceilings of ONNX Runtime's CPU kernels at each intra-op thread count.

    Why the rounds interleave thread counts as well as ops, after a warm-up: on a 2-vCPU
    Emerald Rapids guest the 1-thread ceilings measured first, one thread count after the
    other, came out 30-55% below a repeat minutes later (fp32 GEMM 114 vs 156-165 GFLOP/s,
    int8 GEMM 514 vs 1,065-1,157 GOP/s) while the 2-thread ones measured right after were
    within 10% of later runs: a slow phase of a few seconds at the start spoilt every round of one thread
    count. Interleaved, such a phase spoils one round of each, and the best call survives."""
    import onnxruntime as ort

    from optiserve.profile.hardware import now_iso

    graphs = {op: _graph(op) for op in OPS}
    counts = sorted(set(threads))
    runs: dict[tuple[int, str], Callable[[], object]] = {}
    for t in counts:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = t, 1
        opts.log_severity_level = 3
        for op, (model, feeds, _) in graphs.items():
            sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
            runs[t, op] = functools.partial(sess.run, None, feeds)
    warm = min(WARMUP_S, seconds) / len(runs)
    for call in runs.values():
        best_seconds(call, warm, 1)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(ROUNDS):
        for key, call in runs.items():
            best[key] = min(best[key], best_seconds(call, seconds / ROUNDS, 1))
    per = {t: ThreadCeilings(**{op: graphs[op][2] / best[t, op] for op in OPS}) for t in counts}
    method = (
        f"best call of {ROUNDS} rounds interleaved over ops and thread counts, {seconds:g} s per op, "
        f"after a warm-up: MatMul/QLinearMatMul {GEMM}^3, "
        f"Conv/QLinearConv {'x'.join(map(str, CONV[:4]))} k{CONV[4]} (u8 x s8), Add over {ELEMENTS >> 18} MiB"
    )
    return Ceilings(per, f"onnxruntime {ort.__version__}", now_iso(), method)


def for_machine(threads: Sequence[int], machine_id: str, cache_dir: Path | None = None) -> Ceilings:
    """This machine's ceilings at ``threads``: measured once per machine (fingerprint id) and
    ONNX Runtime version, kept in the variant cache's folder, and reused by later profiles
    (their ``measured`` time says when). Thread counts not measured yet are measured now."""
    import json

    import onnxruntime as ort

    from optiserve._files import atomic_write
    from optiserve.variants.cache import default_cache_dir

    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    path = folder / "ceilings" / f"{machine_id or 'unknown'}-onnxruntime-{ort.__version__}.json"
    known: Ceilings | None = None
    try:
        known = Ceilings.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, UsageError):
        known = None  # none yet, or unreadable: measure again
    missing = sorted(set(threads) - set(known.threads if known else ()))
    if known is not None and not missing:
        return Ceilings(
            {t: known.threads[t] for t in sorted(set(threads))}, known.runtime, known.measured, known.method
        )
    fresh = measure(missing)
    merged = Ceilings(
        {**(dict(known.threads) if known else {}), **fresh.threads}, fresh.runtime, fresh.measured, fresh.method
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(merged.to_dict(), indent=1)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    except OSError:
        pass  # a read-only cache only costs the next profile a re-measurement
    return Ceilings(
        {t: merged.threads[t] for t in sorted(set(threads))}, merged.runtime, merged.measured, merged.method
    )
