#!/usr/bin/env bash
# Everything that needs a GPU, in one go, for a lent GPU machine (under 8 minutes).
#   scripts/gpu_check.sh [OUT_DIR]     (default: $OUT, else gpu-check-out)
# Probes what the machine offers (ONNX Runtime providers, TensorRT, CuPy, NVML),
# runs the gpu-marked tests and GPU benchmarks, sweeps the CNN over the GPU
# runtimes that are available, and leaves logs and the profile in OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-check-out}}"
mkdir -p "$out"
{ date -u; nvidia-smi || echo "nvidia-smi failed"; nvcc --version | tail -1 || true; } > "$out/machine.txt" 2>&1
python3 -m venv .venv-gpu
.venv-gpu/bin/pip install --quiet --upgrade pip
{
  .venv-gpu/bin/pip install --quiet -e '.[dev]'
  # the GPU build of ONNX Runtime replaces the CPU one (same module name)
  .venv-gpu/bin/pip uninstall --quiet -y onnxruntime
  .venv-gpu/bin/pip install --quiet onnxruntime-gpu cupy-cuda12x nvidia-ml-py tensorrt
} > "$out/install.txt" 2>&1 || echo "some installs failed: see install.txt"
.venv-gpu/bin/python - > "$out/probe.txt" 2>&1 <<'PY'
import importlib
for mod in ("onnxruntime", "tensorrt", "cupy", "pynvml", "numba.cuda"):
    try:
        m = importlib.import_module(mod)
        print(mod, "ok", getattr(m, "__version__", ""))
    except Exception as exc:
        print(mod, "MISSING", exc)
import onnxruntime as ort
print("providers", ort.get_available_providers())
from optiserve.runtimes.registry import availability
print("optiserve runtimes", availability())
PY
export OPTISERVE_BENCH_RESULTS="$out/results"  # the benchmarks' record comes back with the rest
# gpu-marked tests, and the runtime conformance suite (parametrized over every runtime, GPU ones unmarked)
timeout 240 .venv-gpu/bin/pytest -q -rs tests/runtimes/test_conformance.py -k "gpu or tensorrt or cuda" \
  > "$out/gpu-conformance.txt" 2>&1; echo "conformance rc=$?" >> "$out/gpu-conformance.txt"
timeout 240 .venv-gpu/bin/pytest -q -m gpu tests -rs > "$out/gpu-tests.txt" 2>&1; echo "tests rc=$?" >> "$out/gpu-tests.txt"
timeout 90 .venv-gpu/bin/pytest -q -s benchmarks/test_preprocess_gpu.py > "$out/gpu-bench.txt" 2>&1; echo "bench rc=$?" >> "$out/gpu-bench.txt"
timeout 150 .venv-gpu/bin/optiserve profile cnn --device gpu --precision fp32,fp16,int8-static --batch 1,8,32 \
  --option max_batch=32 --budget 2 --warmup 1 -o "$out/profile-cnn-gpu" --overwrite > "$out/sweep.txt" 2>&1
echo "sweep rc=$?" >> "$out/sweep.txt"
tail -n 3 "$out"/probe.txt "$out"/gpu-conformance.txt "$out"/gpu-tests.txt "$out"/gpu-bench.txt "$out"/sweep.txt
