#!/usr/bin/env bash
# `make demo` as a new user runs it: a fresh clone of this repository's HEAD, no virtual
# environment, an empty pip cache and an empty model cache (the embedded GGUF is assembled again).
# Prints the install's per-phase table (scripts/install.sh), the demo's own time and the whole
# wall time; then removes the venv and installs again with the pip cache the first run filled,
# which shows what the cached llama-cpp-python wheel saves. Nothing outside WORK is touched.
#   bash bench/fresh_demo.sh [WORK]        # default WORK: a new directory under /tmp
# Needs: python3 with venv, g++/cmake (llama-cpp-python builds from source), the package index.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-$(mktemp -d /tmp/fresh-demo.XXXXXX)}"
mkdir -p "$WORK"
echo "work dir: $WORK  (commit $(git -C "$ROOT" rev-parse --short HEAD))"

git clone -q "$ROOT" "$WORK/repo"
export PIP_CACHE_DIR="$WORK/pip-cache" XDG_CACHE_HOME="$WORK/cache"
unset EVIDENCE_MODEL EVIDENCE_DB EVIDENCE_MODELS_DIR EVIDENCE_MODEL_DIR
cd "$WORK/repo"

t0=$SECONDS
make demo 2>&1 | tee "$WORK/make-demo.log"
cold=$((SECONDS - t0))

rm -rf .venv
t1=$SECONDS
make install 2>&1 | tee "$WORK/make-install-warm.log" | tail -12
warm=$((SECONDS - t1))

echo
echo "make demo, fresh (no venv, empty pip and model caches): ${cold}s"
grep -E "^\s+[0-9]+s  " "$WORK/make-demo.log" | sed 's/^/  install phase /'
grep -E "^The run took" "$WORK/make-demo.log" | sed 's/^/  demo: /'
echo "make install again, venv removed, pip cache kept: ${warm}s"
grep -E "^\s+[0-9]+s  llama" "$WORK/make-install-warm.log" | sed 's/^/  /'
