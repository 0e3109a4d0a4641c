"""The Numba CUDA kernel itself, in its own module so that ``cuda`` is a module
global: Numba's CUDA simulator swaps exactly such globals. Imported only on use."""

from __future__ import annotations

import math

import numpy as np
from numba import cuda


@cuda.jit(device=True, inline=True)
def taps(o, off, scale, n):  # type: ignore[no-untyped-def]
    f = (np.float32(o) + off + np.float32(0.5)) * scale - np.float32(0.5)
    i = int(math.floor(f))  # noqa: RUF046 (numba: float -> int)
    t = f - np.float32(i)
    if i < 0:
        i = 0
        t = np.float32(0.0)
    if i >= n - 1:
        i = n - 1
        t = np.float32(0.0)
    return i, min(i + 1, n - 1), t


@cuda.jit
def kernel(src, offsets, heights, widths, geom, a, b, och, out):  # type: ignore[no-untyped-def]
    x, y, k = cuda.grid(3)
    n, _, out_h, out_w = out.shape
    if x >= out_w or y >= out_h or k >= n:
        return
    h = heights[k]
    w = widths[k]
    y0, y1, wy = taps(y, geom[k, 2], geom[k, 0], h)
    x0, x1, wx = taps(x, geom[k, 3], geom[k, 1], w)
    base = offsets[k]
    r0 = base + y0 * w * 3
    r1 = base + y1 * w * 3
    one = np.float32(1.0)
    w00, w01, w10, w11 = (one - wx) * (one - wy), wx * (one - wy), (one - wx) * wy, wx * wy
    for c in range(3):
        v = (
            np.float32(src[r0 + x0 * 3 + c]) * w00
            + np.float32(src[r0 + x1 * 3 + c]) * w01
            + np.float32(src[r1 + x0 * 3 + c]) * w10
            + np.float32(src[r1 + x1 * 3 + c]) * w11
        )
        out[k, och[c], y, x] = v * a[c] + b[c]
