"""GPU facts sampled through NVML (``nvidia-ml-py``) while a config is measured:
utilisation, SM clock, power and memory used. Absent NVML, it records why."""

from __future__ import annotations

import threading
from typing import Any

from optiserve._imports import missing_reason


class GpuMonitor:
    def __init__(self, device_id: int = 0, period_s: float = 0.05) -> None:
        self.device_id, self.period = device_id, period_s
        self._samples: list[tuple[float, float, float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reason = missing_reason("pynvml", "gpu")
        self._static: dict[str, Any] = {}

    def __enter__(self) -> GpuMonitor:
        if self.reason:
            return self
        import pynvml

        try:
            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(self.device_id)
        except pynvml.NVMLError as exc:
            self.reason = f"NVML unavailable: {exc}"
            return self
        self._static = {
            "name": str(pynvml.nvmlDeviceGetName(h)),
            "driver": str(pynvml.nvmlSystemGetDriverVersion()),
            "cuda_driver": int(pynvml.nvmlSystemGetCudaDriverVersion()),
            "memory_total_mb": pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**20,
        }

        def sample() -> None:
            while not self._stop.wait(self.period):
                try:
                    util = pynvml.nvmlDeviceGetUtilizationRates(h).gpu
                    clock = pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)
                    power = pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0
                    mem = pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
                except pynvml.NVMLError:
                    continue
                self._samples.append((util, clock, power, mem))

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def summary(self) -> dict[str, Any]:
        if self.reason:
            return {"unavailable": self.reason}
        if not self._samples:
            return {**self._static, "samples": 0}
        cols = list(zip(*self._samples, strict=True))
        return {
            **self._static,
            "samples": len(self._samples),
            "utilisation_pct_mean": sum(cols[0]) / len(cols[0]),
            "sm_clock_mhz_mean": sum(cols[1]) / len(cols[1]),
            "power_w_mean": sum(cols[2]) / len(cols[2]),
            "memory_used_mb_max": max(cols[3]),
        }
