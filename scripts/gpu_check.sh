#!/usr/bin/env bash
# Everything that needs a GPU, in one go, for a lent GPU machine (under 8 minutes):
# installs the gpu extra next to the dev one, runs the gpu-marked tests and the GPU
# benchmarks, and leaves their output in ${OUT:-gpu-check-out}/.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check-out}"
mkdir -p "$out"
{
  date -u
  nvidia-smi || echo "nvidia-smi failed"
  nvcc --version | tail -1 || true
} > "$out/machine.txt" 2>&1
python3 -m venv .venv-gpu
.venv-gpu/bin/pip install --quiet --upgrade pip
.venv-gpu/bin/pip install --quiet -e '.[dev]' cupy-cuda12x nvidia-ml-py > "$out/install.txt" 2>&1 || echo "install failed: see install.txt"
timeout 300 .venv-gpu/bin/pytest -q -m gpu tests -rs > "$out/gpu-tests.txt" 2>&1; echo "tests rc=$?" >> "$out/gpu-tests.txt"
timeout 180 .venv-gpu/bin/pytest -q -s benchmarks/test_preprocess_gpu.py > "$out/gpu-bench.txt" 2>&1; echo "bench rc=$?" >> "$out/gpu-bench.txt"
tail -n 5 "$out"/gpu-tests.txt "$out"/gpu-bench.txt
