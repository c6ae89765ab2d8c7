#!/usr/bin/env python3
"""A nightly export that cron starts on several hosts, or whose runs may overlap: the
first run takes a cluster-wide lock and does the work; any other run that starts while
it works skips at once (exit status 0) instead of piling up behind it.

    # the same crontab line on every host; every host uses the same store: Redis or
    # PostgreSQL across hosts, a SQLite file for the processes of one host
    0 2 * * *  CLUSTERSYNC_URL=redis://redis.internal:6379/0  python3 /opt/app/nightly_export.py

The lock's fencing token (``mutex.token``) goes with every write to the export's
destination, which refuses a token lower than the highest it has seen: if this run is
paused past its lease (a long GC pause, a suspended VM) and another run takes over, the
late writes of the paused run are rejected instead of overwriting newer data.

Environment: ``CLUSTERSYNC_URL`` (the store; default ``sqlite:///clustersync.db``),
``EXPORT_DB`` (the destination, a SQLite file standing in for a warehouse; default
``export.db``), ``EXPORT_SECONDS`` (how long the stand-in work takes; default 2).
Exit status: 0 when it exported or skipped, 1 on an error.
"""

import os
import signal
import sqlite3
import sys
import time
from contextlib import closing
from datetime import UTC, datetime

import clustersync

LOCK = "nightly-export"
NAMESPACE = os.environ.get("CLUSTERSYNC_NAMESPACE", "cron")


class StaleTokenError(Exception):
    """The destination saw a newer fencing token: another run took over."""


def publish(path: str, token: int, rows: int) -> None:
    """Store a batch in the destination, unless a newer token already wrote there."""
    with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        db.execute("CREATE TABLE IF NOT EXISTS fence (id INTEGER PRIMARY KEY, token INTEGER)")
        db.execute("CREATE TABLE IF NOT EXISTS exports (token INTEGER, at TEXT, rows INTEGER)")
        accepted = db.execute(
            "INSERT INTO fence VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET token ="
            " excluded.token WHERE excluded.token >= fence.token",
            (token,),
        ).rowcount
        if not accepted:
            db.execute("ROLLBACK")
            raise StaleTokenError(f"token {token} is older than the destination's")
        db.execute(
            "INSERT INTO exports VALUES (?, ?, ?)", (token, datetime.now(UTC).isoformat(), rows)
        )
        db.execute("COMMIT")


def export(mutex: clustersync.Mutex, token: int) -> int:
    """The work: a few batches, each written with the lock's fencing token."""
    batches = 4
    for _ in range(batches):
        time.sleep(float(os.environ.get("EXPORT_SECONDS", "2")) / batches)  # the real work
        mutex.check()  # LockLostError if our lease was lost meanwhile: stop early
        publish(os.environ.get("EXPORT_DB", "export.db"), token, rows=250)
    return batches * 250


def main() -> int:
    # cron, systemd and container runtimes stop jobs with SIGTERM: leave through the
    # finally blocks, so that the lock is released at once.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        with clustersync.open_store(namespace=NAMESPACE) as store:  # CLUSTERSYNC_URL
            # The lease renews itself while the export runs; if this process dies, the
            # lock is free again after ttl seconds.
            mutex = clustersync.Mutex(store, LOCK, ttl=60)
            if not mutex.acquire(blocking=False):
                print(f"{LOCK}: skipped, another run is in progress")
                return 0
            token = mutex.token or 0  # strictly increases with every acquisition
            try:
                rows = export(mutex, token)
            finally:
                mutex.release()  # LockLostError if the lease was lost
    except (clustersync.ClusterSyncError, StaleTokenError) as exc:
        print(f"{LOCK}: failed: {exc}", file=sys.stderr)
        return 1
    print(f"{LOCK}: exported {rows} rows with fencing token {token}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
