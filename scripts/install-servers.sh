#!/usr/bin/env bash
# Make sure the Redis and PostgreSQL server binaries used by the test suite are installed,
# redis-cli (creates the Redis Cluster of tests/topologies.py), PgBouncer (the pooler of
# tests/topologies.py), libfaketime (the clock-skew tests run clients under `faketime`),
# Chromium (the dashboard's browser test drives /usr/bin/chromium with Playwright; never
# `playwright install`) and the Inter font (the dashboard's screenshots in docs/images).
#   scripts/install-servers.sh
# Idempotent: installs (Debian: apt-get) only what is missing, never starts the system
# services (the tests start private instances on free loopback ports, see tests/servers.py),
# then prints one line per server with the version found. Needs root or sudo to install.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

# Print the directory holding initdb, postgres and pg_ctl (PATH first, then the highest
# /usr/lib/postgresql/*/bin), the same search as tests/servers.py; fail if there is none.
find_pg_bindir() {
  local initdb_path dir
  if initdb_path="$(command -v initdb)" && command -v postgres >/dev/null \
    && command -v pg_ctl >/dev/null; then
    dirname "$(readlink -f "$initdb_path")"
    return 0
  fi
  local dirs=(/usr/lib/postgresql/*/bin)
  [ -e "${dirs[0]}" ] || return 1
  for dir in $(printf '%s\n' "${dirs[@]}" | sort -t/ -k5,5 -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v pgbouncer >/dev/null || missing+=(pgbouncer)
find_pg_bindir >/dev/null || missing+=(postgresql)
command -v faketime >/dev/null || missing+=(faketime)
[ -x /usr/bin/chromium ] || missing+=(chromium)
dpkg-query -W -f='${Status}' fonts-inter 2>/dev/null | grep -q "ok installed" \
  || missing+=(fonts-inter)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]} (apt-get) =="
  # Keep the packages' maintainer scripts from starting the system services: a
  # policy-rc.d that denies every action, only for this install and only if none exists.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary, from clustersync scripts/install-servers.sh\nexit 101\n' \
      | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    created_policy=1
  fi
  remove_policy() { if [ "$created_policy" -eq 1 ]; then as_root rm -f "$policy"; fi; }
  trap remove_policy EXIT
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  remove_policy
  trap - EXIT
fi

if ! redis_bin="$(command -v redis-server)"; then
  echo "redis-server still missing after install" >&2
  exit 1
fi
if ! pg_bindir="$(find_pg_bindir)"; then
  echo "PostgreSQL server binaries (initdb, postgres, pg_ctl) still missing after install" >&2
  exit 1
fi
echo "redis-server: $("$redis_bin" --version) ($redis_bin)"
echo "postgresql: $("$pg_bindir/postgres" --version) ($pg_bindir)"
if ! redis_cli="$(command -v redis-cli)"; then
  echo "redis-cli still missing after install" >&2
  exit 1
fi
echo "redis-cli: $("$redis_cli" --version) ($redis_cli)"
if ! pgbouncer_bin="$(command -v pgbouncer)"; then
  echo "pgbouncer still missing after install" >&2
  exit 1
fi
echo "pgbouncer: $("$pgbouncer_bin" --version | head -n 1) ($pgbouncer_bin)"
if ! faketime_bin="$(command -v faketime)"; then
  echo "faketime still missing after install" >&2
  exit 1
fi
echo "faketime: $(dpkg-query -W -f='${Version}' faketime 2>/dev/null || echo '?') ($faketime_bin)"
if [ ! -x /usr/bin/chromium ]; then
  echo "chromium still missing after install" >&2
  exit 1
fi
echo "chromium: $(/usr/bin/chromium --version 2>/dev/null) (/usr/bin/chromium)"
echo "fonts-inter: $(dpkg-query -W -f='${Version}' fonts-inter 2>/dev/null || echo '?')"
