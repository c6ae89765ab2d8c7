#!/usr/bin/env bash
# Create (or update) .venv with clustersync installed in editable mode.
#   scripts/setup-venv.sh            # runtime extras only (for the demo)
#   scripts/setup-venv.sh --dev      # plus the test and lint tools
# Works on a fresh Debian machine with Python 3.11: installs python3-venv with apt-get
# when the interpreter cannot create virtual environments (needs root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' 2>/dev/null; then
  echo "clustersync needs Python >= 3.11 (found: $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    echo "== installing python3-venv (Debian) =="
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq python3-venv python3-pip >/dev/null
    "$PYTHON" -m venv "$VENV"
  fi
fi

"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip>=25.1"
if [ "${1:-}" = "--dev" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[redis,postgres,cron]" --group dev
else
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[cron]"
fi
