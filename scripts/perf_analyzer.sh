#!/usr/bin/env bash
# Provision Triton's perf_analyzer (a real OIP v2 load generator nobody here wrote) for
# tests/serve/test_perf_analyzer.py. Nothing is committed: it all lands in an ignored folder.
#
#   scripts/perf_analyzer.sh [DEST]      (default DEST: .venv/perf_analyzer; `make perf_analyzer`)
#
# - the binary ships in tritonclient's manylinux wheel (data/bin/perf_analyzer); 2.51.0 is the
#   newest one whose binary runs on glibc 2.36 (Debian 12): 2.52 needs GLIBC_2.38
# - it links libb64.so.0d (Debian: libb64-0d, installed here when apt-get can) and
#   libcudart.so.12 (loaded just to start, no GPU used: nvidia-cuda-runtime-cu12 from PyPI)
# - DEST/perf_analyzer is a wrapper that puts the CUDA runtime on LD_LIBRARY_PATH
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.venv/perf_analyzer}
PIP=${PIP:-.venv/bin/pip}
VERSION=${TRITONCLIENT_PA_VERSION:-2.51.0}
CUDART=${CUDART_VERSION:-12.9.79}

if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -qq libb64-0d >/dev/null
    else
        echo "perf_analyzer needs Debian's libb64-0d: sudo apt-get install -y libb64-0d" >&2
        exit 1
    fi
fi

mkdir -p "$DEST/bin" "$DEST/wheel"
if [ ! -x "$DEST/bin/perf_analyzer" ]; then
    "$PIP" download --quiet --no-deps "tritonclient==$VERSION" --platform manylinux1_x86_64 \
        --only-binary=:all: -d "$DEST/wheel"
    python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
name = next(n for n in z.namelist() if n.endswith("/data/bin/perf_analyzer"))
open(sys.argv[2], "wb").write(z.read(name))' "$DEST/wheel/tritonclient-$VERSION-py3-none-manylinux1_x86_64.whl" \
        "$DEST/bin/perf_analyzer"
    chmod +x "$DEST/bin/perf_analyzer"
    rm -rf "$DEST/wheel"
fi
if [ ! -d "$DEST/cuda/nvidia/cuda_runtime/lib" ]; then
    "$PIP" install --quiet --no-deps --target "$DEST/cuda" "nvidia-cuda-runtime-cu12==$CUDART"
fi

cat > "$DEST/perf_analyzer" <<'EOF'
#!/usr/bin/env bash
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$here/cuda/nvidia/cuda_runtime/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/bin/perf_analyzer" "$@"
EOF
chmod +x "$DEST/perf_analyzer"
"$DEST/perf_analyzer" --version >/dev/null 2>&1 || {
    echo "perf_analyzer does not start:" >&2
    ldd "$DEST/bin/perf_analyzer" | grep 'not found' >&2 || true
    exit 1
}
echo "perf_analyzer ready: $DEST/perf_analyzer"
