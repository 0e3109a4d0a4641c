"""What one timed call does, stage by stage.

With ``--preprocess`` a call is: pre-process a batch of uint8 images (the
stage a server really pays for), then inference. Each stage's duration is kept
per call; the call's end-to-end time is what the profile's samples hold.
Stages that do not exist on a path (host-to-device on the CPU, post-process
until one is defined) are recorded as ``None``, not as zero.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from optiserve.errors import UsageError
from optiserve.models.graph import ModelInfo
from optiserve.preprocess import PREPROCESSORS, Preprocessor, best_available, get_preprocessor
from optiserve.preprocess.spec import PreprocessSpec
from optiserve.runtimes.gpu import StagedSession

STAGES = ("preprocess", "host_to_device", "inference", "device_to_host", "postprocess")


@dataclass(frozen=True)
class StageSpec:
    spec: PreprocessSpec
    impl: str  # "" = the fastest available on the CPU
    src_h: int
    src_w: int

    @classmethod
    def parse(cls, text: str) -> StageSpec:
        spec = PreprocessSpec.parse(text)
        body = dict(item.partition("=")[::2] for item in text.partition(":")[2].split(",") if item)
        impl = body.get("impl", "")
        if impl and impl not in PREPROCESSORS:
            raise UsageError(f"unknown pre-processor {impl!r}; valid: {', '.join(PREPROCESSORS)}")
        m = re.fullmatch(r"(\d+)x(\d+)", body.get("src", "480x640"))
        if not m or min(int(m.group(1)), int(m.group(2))) < 1:
            raise UsageError(f"malformed src={body.get('src')!r}: expected HxW of the incoming images")
        return cls(spec, impl, int(m.group(1)), int(m.group(2)))

    def image_input(self, info: ModelInfo) -> str:
        """The model input this stage feeds: NCHW, 3 channels, the spec's size."""
        want = (3, self.spec.out_h, self.spec.out_w)
        for i in info.inputs:
            if len(i.dims) == 4 and tuple(i.dims[1:]) == want and i.dtype.startswith("float"):
                return i.name
        shapes = ", ".join(f"{i.name} {list(i.dims)}" for i in info.inputs)
        raise UsageError(f"--preprocess makes [batch, 3, {want[1]}, {want[2]}] but the model takes {shapes}")

    def preprocessor(self) -> Preprocessor:
        impl = get_preprocessor(self.impl, self.spec) if self.impl else best_available(self.spec)
        reason = impl.available()
        if reason:
            raise UsageError(f"pre-processor {impl.name} unavailable: {reason}")
        return impl

    def images(self, batch: int, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [rng.integers(0, 256, (self.src_h, self.src_w, 3), dtype=np.uint8) for _ in range(batch)]


class Pipeline:
    """A zero-argument callable for the timing loop that also records its stages."""

    def __init__(
        self,
        run: Any,
        feeds: dict[str, np.ndarray],
        stage: StageSpec | None = None,
        input_name: str = "",
        dtype: str = "float32",
        seed: int = 0,
        staged: StagedSession | None = None,
    ) -> None:
        self._run, self._feeds = run, feeds
        self._pre = stage.preprocessor() if stage else None
        self._images = stage.images(next(iter(feeds.values())).shape[0], seed) if stage else []
        self._input, self._dtype = input_name, dtype
        self._staged = staged
        self.pre_ns: list[int] = []
        self.infer_ns: list[int] = []
        self.device_ns: list[tuple[int, int, int]] = []  # host-to-device, compute, device-to-host

    def __call__(self) -> object:
        if self._pre is None:
            out = self._run(self._feeds)
            if self._staged is not None:
                self.device_ns.append(self._staged.last_stages_ns())
            return out
        pc = time.perf_counter_ns
        t0 = pc()
        x = self._pre(self._images)
        t1 = pc()
        self._feeds[self._input] = x if x.dtype == self._dtype else x.astype(self._dtype)
        out = self._run(self._feeds)
        self.pre_ns.append(t1 - t0)
        self.infer_ns.append(pc() - t1)
        if self._staged is not None:
            self.device_ns.append(self._staged.last_stages_ns())
        return out

    def reset(self) -> None:
        self.pre_ns.clear()
        self.infer_ns.clear()
        self.device_ns.clear()

    def breakdown(self, samples_ns: np.ndarray) -> dict[str, Mapping[str, float] | None]:
        """Per-stage p50/p99/mean in ms; inference alone is the whole call without a stage."""

        def summary(x: Any) -> dict[str, float]:
            a = np.asarray(x, dtype=np.float64) / 1e6
            return {"p50_ms": float(np.median(a)), "p99_ms": float(np.quantile(a, 0.99)), "mean_ms": float(a.mean())}

        out: dict[str, Mapping[str, float] | None] = dict.fromkeys(STAGES)
        if self._pre is None:
            out["inference"] = summary(samples_ns)
        else:
            n = len(samples_ns)  # the last n calls are the measured ones
            out["preprocess"] = summary(self.pre_ns[-n:])
            out["inference"] = summary(self.infer_ns[-n:])
        if self.device_ns:  # a GPU session timed its own copies and compute
            h2d, compute, d2h = zip(*self.device_ns[-len(samples_ns) :], strict=True)
            out["host_to_device"], out["inference"], out["device_to_host"] = (
                summary(h2d),
                summary(compute),
                summary(d2h),
            )
        return out

    @property
    def preprocessor_name(self) -> str | None:
        return self._pre.name if self._pre else None
