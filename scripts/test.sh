#!/usr/bin/env bash
# The full test suite: set up .venv, then lint, format check, types, the unasync check
# and pytest (conformance suite on every store — memory, SQLite, and private Redis and
# PostgreSQL servers started on loopback by the tests — multi-process tests, CLI, core).
#   scripts/test.sh                 # everything
#   scripts/test.sh -k mutex        # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh --dev
scripts/install-servers.sh   # redis-server and PostgreSQL for the private test servers
PY=.venv/bin/python

echo "== unasync: generated sync code is up to date =="
$PY scripts/unasync.py --check
echo "== ruff check =="
$PY -m ruff check src tests scripts benchmarks
echo "== ruff format --check =="
$PY -m ruff format --check src tests scripts benchmarks
echo "== mypy --strict =="
$PY -m mypy
echo "== pytest =="
$PY -m pytest "$@"
