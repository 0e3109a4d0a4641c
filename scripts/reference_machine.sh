#!/usr/bin/env bash
# Issue 18's cross-machine validation set: the fixed recipe a session runs on a CPU
# generation that has no reference yet, on a quiet machine (no other load).
#   scripts/reference_machine.sh zen3-2vcpu     -> profiles/reference/machines/zen3-2vcpu/{cnn,encoder}
# CNN and encoder; fp32 and int8-static; batch 1 and 8; threads 1 and 2; with the
# machine's effective ceilings (ONNX Runtime's own kernels) measured into the profile.
# A fresh variant cache, so the ceilings are measured now, not reused from a busy run.
set -euo pipefail
name=${1:?usage: scripts/reference_machine.sh <generation>-<vcpus>vcpu}
bin=${BIN:-.venv/bin}
out=profiles/reference/machines/$name
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
"$bin/optiserve" models build --out models
for model in cnn encoder; do
    "$bin/optiserve" profile "models/$model.onnx" --precision fp32,int8-static --batch 1,8 --threads 1,2 \
        --budget 2 --warmup 2 --ceilings --cache-dir "$cache" -o "$out/$model" --overwrite
done
"$bin/optiserve" env | grep 'catalog match'
# A reference that measured contention validates nothing (the first Sapphire Rapids one did):
# refuse it here, before it is committed, rather than leave it to the benchmark to skip.
"$bin/python" - "$out" <<'PY'
import sys
from pathlib import Path
from optiserve.profile.contention import contended
from optiserve.profile.store import load_profile
bad = [f"{p.name}: {c.describe()}" for p in sorted(Path(sys.argv[1]).iterdir()) for c in contended(load_profile(p))]
if bad:
    print("the machine was busy; run again when it is quiet:", *bad, sep="\n  ", file=sys.stderr)
    sys.exit(1)
PY
