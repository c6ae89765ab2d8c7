#!/usr/bin/env bash
# Set up .venv and run `clustersync demo` (3 worker processes on a temporary SQLite store).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
exec .venv/bin/clustersync demo "$@"
