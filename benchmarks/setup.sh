#!/usr/bin/env bash
# Create .venv-bench (gitignored): clustersync with its Redis/PostgreSQL/cron extras, plus
# the peer libraries and tools that only the benchmarks use (the `bench` dependency group
# of pyproject.toml). Idempotent; safe to run before every benchmark run.
#
#   benchmarks/setup.sh && .venv-bench/bin/python benchmarks/run.py [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-bench/bin/python ]; then
    "$PY" -m venv .venv-bench
fi
pip_install() {
    # Quiet; drops pip's warnings about index locations this machine may not have.
    .venv-bench/bin/python -m pip --disable-pip-version-check -q install "$@" 2>&1 |
        { grep -v "^WARNING: Location .* is ignored" || true; }
    return "${PIPESTATUS[0]}"
}
pip_install --upgrade pip
pip_install -e ".[redis,postgres,cron]"
# The `bench` group of pyproject.toml, read from there so that the two never drift apart.
# --pre: APScheduler 4 is only published as pre-releases (4.0.0aN).
mapfile -t BENCH < <(.venv-bench/bin/python - <<'PYEOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    for req in tomllib.load(f)["dependency-groups"]["bench"]:
        print(req)
PYEOF
)
pip_install --pre "${BENCH[@]}"
# The private servers of tests/servers.py (redis-server, PostgreSQL) must be installed:
if ! command -v redis-server >/dev/null || ! .venv-bench/bin/python -c \
    "import sys; sys.path.insert(0, '.'); from tests.servers import find_postgres_bindir as f; f()" \
    2>/dev/null; then
    echo "setup.sh: redis-server or PostgreSQL is missing; run scripts/install-servers.sh" >&2
    exit 1
fi
echo "setup.sh: .venv-bench ready"
