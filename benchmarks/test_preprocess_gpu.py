"""GPU only (skips elsewhere): the CuPy kernel's effective bandwidth against the
device's own copy bandwidth (target >= 70%), timed with CUDA events, batch 32 of
640x480 -> 224x224; plus the end-to-end time with host<->device copies. Asserts the 70%."""

from __future__ import annotations

import numpy as np
import pytest

from optiserve.preprocess.cupy_kernel import CuPyKernel
from optiserve.preprocess.spec import PreprocessSpec, effective_bytes

pytestmark = pytest.mark.gpu


def _event_ms(fn, reps: int = 20) -> float:  # type: ignore[no-untyped-def]
    import cupy

    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    fn()
    times = []
    for _ in range(reps):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return float(np.median(times))


def test_cupy_kernel_vs_device_copy_bandwidth(record_ratio) -> None:  # type: ignore[no-untyped-def]
    cupy = pytest.importorskip("cupy", reason="cupy not installed")
    import math
    import time

    from optiserve.preprocess.spec import pack

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(32)]
    spec = PreprocessSpec(224, 224)
    impl = CuPyKernel(spec)
    host_out = impl(images)  # compiles, allocates the reused buffers
    packed = pack(images, spec)
    kernel = impl._kernel()
    tables = [
        cupy.asarray(t)
        for t in (packed.offsets, packed.heights, packed.widths, packed.geom, impl._a, impl._b, impl._och)
    ]
    grid = (math.ceil(224 / 32), math.ceil(224 / 8), 32)

    def launch() -> None:
        kernel(grid, (32, 8, 1), (impl._dev_in, *tables, impl._dev_out, np.int32(32), np.int32(224), np.int32(224)))

    nbytes = effective_bytes(images, spec)
    k_ms = _event_ms(launch)
    src = cupy.zeros(nbytes // 2, cupy.uint8)
    dst = cupy.empty_like(src)
    c_ms = _event_ms(lambda: dst.__setitem__(Ellipsis, src))
    kernel_bw, copy_bw = nbytes / k_ms / 1e6, 2 * src.nbytes / c_ms / 1e6
    t0 = time.perf_counter()
    for _ in range(10):
        impl(images)
    e2e = (time.perf_counter() - t0) / 10 * 1e3
    record_ratio(
        "cupy preprocess bandwidth / device copy bandwidth",
        kernel_bw / copy_bw,
        ">= 0.70",
        kernel_bw / copy_bw >= 0.70,
        f"kernel {k_ms:.3f} ms = {kernel_bw:.0f} GB/s, copy {copy_bw:.0f} GB/s, end to end {e2e:.2f} ms",
    )
    np.testing.assert_allclose(host_out, impl(images))
