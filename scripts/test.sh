#!/usr/bin/env bash
# The full test suite: set up the virtual environment, then the unasync check, lint,
# format check, types and pytest (conformance suite on every store — memory, SQLite, and
# private Redis and PostgreSQL servers started on loopback by the tests — multi-process
# tests, reliability suite, CLI, core).
#   scripts/test.sh                        # everything, with the locked toolchain (.venv)
#   scripts/test.sh --latest               # the newest releases instead of uv.lock (.venv-latest)
#   scripts/test.sh --python python3.12    # another interpreter (.venv-3.12)
#   scripts/test.sh -k mutex               # other arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

setup=(--dev)
while [ $# -gt 0 ]; do
  case "$1" in
    --latest) setup+=(--latest); shift ;;
    --python) export PYTHON="$2"; shift 2 ;;
    --python=*) export PYTHON="${1#--python=}"; shift ;;
    *) break ;;
  esac
done

# setup-venv.sh ends with "<venv folder> ready (...)".
mkdir -p .cache
scripts/setup-venv.sh "${setup[@]}" | tee .cache/setup.log
VENV="$(tail -n 1 .cache/setup.log | cut -d' ' -f1)"
scripts/install-servers.sh   # redis-server and PostgreSQL for the private test servers
PY="$VENV/bin/python"

echo "== unasync: generated sync code is up to date =="
$PY scripts/unasync.py --check
echo "== ruff check =="
$PY -m ruff check src tests scripts benchmarks examples
echo "== ruff format --check =="
$PY -m ruff format --check src tests scripts benchmarks examples
echo "== mypy --strict =="
$PY -m mypy
echo "== docs: mkdocs build --strict =="
NO_MKDOCS_2_WARNING=1 $PY -m mkdocs build --strict -q
echo "== pytest =="
$PY -m pytest "$@"
