"""Mutex handoff latency on the embedded SQLite store: ``handoff.py --backend sqlite``.

Kept for existing command lines; see ``benchmarks/handoff.py`` (which also runs on Redis
and PostgreSQL and measures the store's raw round trip)::

    .venv/bin/python benchmarks/sqlite_handoff.py --rounds 200 [--path FILE]
"""

from __future__ import annotations

import sys

from handoff import main

if __name__ == "__main__":
    sys.exit(main(["--backend", "sqlite", *sys.argv[1:]]))
