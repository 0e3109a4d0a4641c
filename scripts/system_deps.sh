#!/usr/bin/env bash
# The Debian packages the tests drive for real (installed only when missing; idempotent):
#   libb64-0d   Triton's perf_analyzer links it (tests/serve/test_perf_analyzer.py)
#   postgresql  the shared-study search (tests/plan/test_distributed.py starts its own server)
#   nodejs npm  the CRD schemas' validators (@kubernetes-models/*, emit/crd_validate.mjs)
set -euo pipefail
missing=()
ldconfig -p | grep -q 'libb64\.so\.0d' || missing+=(libb64-0d)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing+=(postgresql)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else
    echo "the tests need Debian packages: apt-get install -y ${missing[*]} (as root)" >&2; exit 1
fi
echo "installing Debian packages: ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
