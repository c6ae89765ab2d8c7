#!/usr/bin/env bash
# Create (or update) a virtual environment with clustersync installed in editable mode.
#
#   scripts/setup-venv.sh                   # the runtime extras (for the demo)      -> .venv
#   scripts/setup-venv.sh --dev             # plus the test, lint and docs tools     -> .venv
#   scripts/setup-venv.sh --dev --latest    # newest releases instead of the lock    -> .venv-latest
#   PYTHON=python3.12 scripts/setup-venv.sh --dev                                  # -> .venv-3.12
#
# Every version comes from the committed lock file `uv.lock` (`uv sync --locked`), so a
# fresh machine installs exactly what CI passed with, whatever was released since. The
# library's own dependency ranges in pyproject.toml stay open for users; `--latest`
# resolves the newest releases within them on purpose, to catch upstream changes.
# To update the lock: `.cache/uv/bin/uv lock --upgrade` (or `--upgrade-package NAME`),
# then run scripts/test.sh and commit uv.lock.
#
# Works on a fresh Debian machine with Python 3.11: uv itself (pinned below) is installed
# into .cache/uv with pip, installing python3-venv with apt-get if the interpreter
# cannot create virtual environments (needs root or sudo). VENV overrides the folder.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
PYTHON="${PYTHON:-python3}"
DEV=0
LATEST=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --latest) LATEST=1 ;;
    *) echo "usage: scripts/setup-venv.sh [--dev] [--latest]" >&2; exit 2 ;;
  esac
done

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' 2>/dev/null; then
  echo "clustersync needs Python >= 3.11 (found: $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
PYTHON_PATH="$("$PYTHON" -c 'import sys; print(sys.executable)')"
PY_MINOR="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if [ -z "${VENV:-}" ]; then
  if [ "$LATEST" = 1 ]; then VENV=.venv-latest
  elif [ "$PY_MINOR" = 3.11 ]; then VENV=.venv
  else VENV=".venv-$PY_MINOR"; fi
fi

# -- uv, pinned, in a private folder ------------------------------------------------------
UV=.cache/uv/bin/uv
if [ ! -x "$UV" ] || [ "$("$UV" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  rm -rf .cache/uv
  if ! "$PYTHON" -m venv .cache/uv >/dev/null 2>&1; then
    rm -rf .cache/uv
    echo "== installing python3-venv (Debian) =="
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq python3-venv python3-pip >/dev/null
    "$PYTHON" -m venv .cache/uv
  fi
  .cache/uv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION" 2>&1 \
    | { grep -v "^WARNING: Location .* is ignored" || true; }
fi

export UV_PYTHON_DOWNLOADS=never   # use the machine's interpreter, never download one
export UV_NO_PROGRESS=1
EXTRAS=(--extra cron)
GROUPS_=(--no-default-groups)
if [ "$DEV" = 1 ]; then
  EXTRAS=(--extra redis --extra postgres --extra cron --extra dashboard)
  GROUPS_=(--group dev)
fi

if [ "$LATEST" = 1 ]; then
  # Newest releases within pyproject's ranges: the lock is neither read nor written.
  "$UV" venv -q --allow-existing --python "$PYTHON_PATH" "$VENV"
  extras="cron"
  [ "$DEV" = 1 ] && extras="redis,postgres,cron,dashboard"
  args=(-e ".[$extras]")
  [ "$DEV" = 1 ] && args+=(--group dev)
  "$UV" pip install -q --upgrade --python "$VENV/bin/python" "${args[@]}"
else
  UV_PROJECT_ENVIRONMENT="$VENV" "$UV" sync -q --locked --python "$PYTHON_PATH" \
    "${EXTRAS[@]}" "${GROUPS_[@]}"
fi
echo "$VENV ready ($("$VENV/bin/python" --version))"
