"""Embedded SQLite store (``sqlite:///relative.db``, ``sqlite:////absolute.db``).

Reach: processes on one host sharing the file (WAL mode). Each operation is one short
``BEGIN IMMEDIATE`` transaction, so it is atomic across processes; a process killed in the
middle of one leaves the file as it was before (SQLite's journal). Leases are judged by
the host clock (every process on the host shares it) or by an injected test clock.

Change detection is cheap: a watcher thread polls ``PRAGMA data_version`` on its own
connection — a read of shared memory that changes whenever another connection commits —
only while someone is waiting, at the interval the waiters ask for (about 1 ms for lock
waiters). Changes made through this store object are announced at once, without polling.

Durability: ``synchronous=NORMAL`` in WAL mode survives process crashes; a power loss may
lose the last transactions (pass ``synchronous="FULL"`` to trade speed for that).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from .._core.clock import SYSTEM_CLOCK, Clock
from ..exceptions import ConfigurationError, DuplicateJobError, StoreUnavailableError
from .contract import (
    ANY_CHANNEL,
    JOBS_CHANNEL,
    RECENT_RUNS_KEPT,
    AcquireResult,
    ChangeListener,
    ClaimedJob,
    FailedJobRecord,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    RecurringJobRecord,
    RunRecord,
    StoredJob,
    conflicting_job,
    job_channel,
    lease_channel,
    prefix_end,
)
from .options import option_seconds, reject_unknown
from .registry import StoreKind

logger = logging.getLogger("clustersync.sqlite")

_US = 1_000_000
#: How long the registration of an instance that stopped refreshing it is kept (it no
#: longer counts once expired; this only bounds the rows left by crashed instances).
_EXPIRED_INSTANCES_KEPT_US = 3600 * _US
SCHEMA_VERSION = 4
#: Step by step, from the version before: statements run in the schema's transaction.
_MIGRATIONS = {
    # 2: recurring jobs gain a registry (pause, trigger, last outcome, instances).
    2: [
        "INSERT OR IGNORE INTO clustersync_recurring (ns, key, last_finished_us)"
        " SELECT ns, key, last_finished_us FROM clustersync_job_metadata",
        "DROP TABLE clustersync_job_metadata",
    ],
    # 3: one-shot jobs count their attempts, keep who scheduled them and their trace
    # context; failed jobs and the recent runs get tables of their own.
    3: [
        "ALTER TABLE clustersync_jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE clustersync_jobs ADD COLUMN attempt_due_us INTEGER",
        "ALTER TABLE clustersync_jobs ADD COLUMN claimed_us INTEGER",
        "ALTER TABLE clustersync_jobs ADD COLUMN scheduled_by TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE clustersync_jobs ADD COLUMN trace TEXT NOT NULL DEFAULT ''",
    ],
    # 4: semaphores (clustersync_slot_counters, clustersync_slots,
    #    clustersync_slot_waiters: created by _SCHEMA).
    4: [],
}
_T = TypeVar("_T")

KIND = StoreKind(
    name="sqlite",
    schemes=("sqlite",),
    backend="clustersync.stores.sqlite:open_backend",
    url_forms=("sqlite:///relative/path.db", "sqlite:////absolute/path.db"),
    reach="host",
    durable=True,
    accepts_clock=True,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clustersync_schema (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS clustersync_leases (
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    owner TEXT,
    token INTEGER NOT NULL,
    expires_us INTEGER NOT NULL,
    PRIMARY KEY (ns, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clustersync_slot_counters (
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    token INTEGER NOT NULL,
    PRIMARY KEY (ns, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clustersync_slots (
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    token INTEGER NOT NULL,
    expires_us INTEGER NOT NULL,
    PRIMARY KEY (ns, name, owner)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clustersync_slot_waiters (
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    arrival_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL,
    PRIMARY KEY (ns, name, owner)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clustersync_recurring (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    schedule TEXT NOT NULL DEFAULT '',
    paused INTEGER NOT NULL DEFAULT 0,
    triggered INTEGER NOT NULL DEFAULT 0,
    last_started_us INTEGER,
    last_finished_us INTEGER,
    last_outcome TEXT,
    last_error TEXT,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clustersync_recurring_instances (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    instance TEXT NOT NULL,
    next_run_us INTEGER,
    expires_us INTEGER NOT NULL,
    PRIMARY KEY (ns, key, instance)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clustersync_jobs (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    run_at_us INTEGER NOT NULL,
    props TEXT NOT NULL,
    due_us INTEGER NOT NULL,
    owner TEXT,
    claim INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    attempt_due_us INTEGER,
    claimed_us INTEGER,
    scheduled_by TEXT NOT NULL DEFAULT '',
    trace TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (ns, key)
);
CREATE TABLE IF NOT EXISTS clustersync_failed_jobs (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    run_at_us INTEGER NOT NULL,
    props TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    failed_at_us INTEGER NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clustersync_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ns TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    due_us INTEGER,
    started_us INTEGER,
    finished_us INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    owner TEXT NOT NULL,
    attempt INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS clustersync_runs_ns ON clustersync_runs (ns, id);
CREATE INDEX IF NOT EXISTS clustersync_jobs_due ON clustersync_jobs (ns, due_us);
CREATE INDEX IF NOT EXISTS clustersync_jobs_run_at ON clustersync_jobs (ns, run_at_us, key);
"""


#: Open backends: a fork waits until none of their threads is inside SQLite (see below).
_OPEN: weakref.WeakSet[SQLiteBackend] = weakref.WeakSet()
_QUIESCED: list[SQLiteBackend] = []


def _quiesce_before_fork() -> None:
    """Before ``os.fork()``: take every lock around SQLite calls, so that no thread is
    inside the SQLite library when the process is copied. (A thread inside it holds the
    library's own mutexes; the child would inherit them locked and hang at its first
    SQLite call.)"""
    _QUIESCED[:] = list(_OPEN)
    for backend in _QUIESCED:
        backend._lock.acquire()
        backend._watch_lock.acquire()


def _resume_after_fork() -> None:
    for backend in _QUIESCED:
        backend._watch_lock.release()
        backend._lock.release()
    _QUIESCED.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_quiesce_before_fork,
        after_in_parent=_resume_after_fork,
        after_in_child=_resume_after_fork,
    )


def sqlite_path_from_url(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ConfigurationError(
            f"invalid SQLite URL {url!r}: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = url[len(prefix) :]
    if "?" in path:
        path = path.split("?", 1)[0]
    if not path or path.endswith("/"):
        raise ConfigurationError(f"invalid SQLite URL {url!r}: no database file named")
    if path == ":memory:":
        raise ConfigurationError(
            "sqlite:///:memory: cannot be shared between connections; use memory:// instead"
        )
    return path


def open_backend(url: str, namespace: str, options: dict[str, Any]) -> SQLiteBackend:
    """Open (creating if needed) the database file of ``url``. Options: ``busy_timeout``
    (seconds, default 10), ``synchronous`` (``"NORMAL"``; ``"FULL"`` survives power
    loss too) and ``clock`` (a test clock)."""
    clock: Clock = options.pop("clock", None) or SYSTEM_CLOCK
    busy_timeout = options.pop("busy_timeout", 10.0)
    synchronous = options.pop("synchronous", "NORMAL")
    reject_unknown(options, "sqlite")
    return SQLiteBackend(
        sqlite_path_from_url(url),
        namespace,
        clock=clock,
        busy_timeout=option_seconds(busy_timeout, "busy_timeout"),
        synchronous=str(synchronous),
    )


class SQLiteBackend:
    """Blocking operations on one namespace of a SQLite database file."""

    capabilities: frozenset[str] = frozenset()

    def __init__(
        self,
        path: str,
        namespace: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        busy_timeout: float = 10.0,
        synchronous: str = "NORMAL",
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ConfigurationError(f"invalid synchronous mode {synchronous!r}")
        self.path = path
        self._ns = namespace
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous.upper()
        self._lock = threading.Lock()  # held around every call on the main connection
        self._watch_lock = threading.Lock()  # held around every call of the watcher
        self._listener: ChangeListener | None = None
        self._watch_interval: float | None = None
        self._watch_changed = threading.Condition()
        self._watcher: threading.Thread | None = None
        self._closed = False
        self._conn = self._connect()
        try:
            with self._translate("create the schema"):
                self._create_schema()
        except BaseException:
            self._conn.close()  # e.g. a file that is not a database: nothing to keep open
            raise
        _OPEN.add(self)

    # -- connection management -----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreUnavailableError(
                f"cannot open SQLite store {self.path!r}: directory {directory!r} does not exist"
            )
        try:
            conn = sqlite3.connect(
                self.path, timeout=0.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"cannot open SQLite store {self.path!r}: {exc}") from exc
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            self._retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except BaseException as exc:
            conn.close()  # e.g. a file that is not a database
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailableError(
                    f"cannot open SQLite store {self.path!r}: {exc}"
                ) from exc
            raise
        return conn

    def _create_schema(self) -> None:
        conn = self._conn
        try:
            self._retry_busy(lambda: conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;"))
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        with self._write() as cur:
            row = cur.execute("SELECT max(version) FROM clustersync_schema").fetchone()
            version = row[0]
            if version is not None and version > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"SQLite store {self.path!r} has schema version {version}, newer than this "
                    f"clustersync understands ({SCHEMA_VERSION}); upgrade clustersync"
                )
            if version != SCHEMA_VERSION:
                # A fresh schema is current; an older one is migrated step by step.
                for step in range((version or SCHEMA_VERSION) + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        cur.execute(statement)
                cur.execute(
                    "INSERT INTO clustersync_schema (version) VALUES (?)", (SCHEMA_VERSION,)
                )

    @contextlib.contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        """The one boundary where sqlite3 errors become StoreUnavailableError."""
        if self._closed:
            raise StoreUnavailableError("the store is closed")
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreUnavailableError(
                f"SQLite store {self.path!r} failed to {action}: {exc}"
            ) from exc

    def _retry_busy(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn``, retrying "database is locked" with short jittered sleeps.

        SQLite's own busy handler sleeps in steps of up to 100 ms; transactions here last
        tens of microseconds, so polling at sub-millisecond to millisecond steps keeps the
        latency of a contended write low.
        """
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.0002
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.005)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One ``BEGIN IMMEDIATE`` transaction; committed on success, rolled back on error."""
        with self._lock:
            cur = self._conn.cursor()
            self._retry_busy(lambda: cur.execute("BEGIN IMMEDIATE"))
            try:
                yield cur
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
                raise
            else:
                self._retry_busy(lambda: cur.execute("COMMIT"))

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            yield self._conn.cursor()

    def now_us(self) -> int:
        return int(self._clock.time() * _US)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.set_listener(None)
        with self._watch_changed:
            self._watch_changed.notify_all()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=2)
        with self._lock:
            self._conn.close()

    # -- change notification -------------------------------------------------------------

    def set_listener(self, listener: ChangeListener | None) -> None:
        old = self._listener
        self._listener = listener
        add = getattr(self._clock, "add_listener", None)
        remove = getattr(self._clock, "remove_listener", None)
        if listener is not None and old is None and add is not None:
            add(self._on_any_change)
        elif listener is None and old is not None and remove is not None:
            remove(self._on_any_change)

    def _on_any_change(self) -> None:
        self._notify(ANY_CHANNEL)

    def _notify(self, channel: str) -> None:
        listener = self._listener
        if listener is not None:
            listener(channel)

    def set_watch_interval(self, seconds: float | None) -> None:
        """Poll for commits of other processes every ``seconds`` (``None``: stop polling)."""
        with self._watch_changed:
            self._watch_interval = seconds
            if seconds is not None and self._watcher is None and not self._closed:
                self._watcher = threading.Thread(
                    target=self._watch, name=f"clustersync-sqlite-watch:{self.path}", daemon=True
                )
                self._watcher.start()
            self._watch_changed.notify_all()

    def _watch(self) -> None:
        try:
            with self._watch_lock:
                conn = sqlite3.connect(self.path, timeout=1.0, isolation_level=None)
        except sqlite3.Error:
            logger.exception("SQLite change watcher could not open %r", self.path)
            return
        last: int | None = None
        try:
            while True:
                with self._watch_changed:
                    while self._watch_interval is None and not self._closed:
                        self._watch_changed.wait()
                        last = None  # changes while idle are irrelevant: waiters recheck
                    if self._closed:
                        return
                    interval = self._watch_interval
                try:
                    with self._watch_lock:
                        version = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error:
                    logger.warning("SQLite change watcher failed; retrying", exc_info=True)
                    version = None
                # The first read after (re)activation or an error is a new baseline: a
                # commit made after a waiter registered (and rechecked) but before this
                # read would go unseen, leaving the waiter asleep until its deadline. So
                # that read wakes every waiter once; they just recheck.
                if version is not None and version != last:
                    self._notify(ANY_CHANNEL)
                last = version
                time.sleep(interval or 0.001)
        finally:
            with self._watch_lock:
                conn.close()

    # -- leases --------------------------------------------------------------------------

    def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult:
        with self._translate("acquire a lease"), self._write() as cur:
            now = self.now_us()
            row = cur.execute(
                "SELECT owner, token, expires_us FROM clustersync_leases WHERE ns = ? AND name = ?",
                (self._ns, name),
            ).fetchone()
            if row is not None and row[0] is not None and row[2] > now:
                if row[0] != owner:
                    return AcquireResult(False, retry_after=(row[2] - now) / _US)
                token = row[1]  # a retry of this acquisition: same token, fresh ttl
            else:
                token = (row[1] if row is not None else 0) + 1
            cur.execute(
                "INSERT INTO clustersync_leases (ns, name, owner, token, expires_us)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (ns, name) DO UPDATE SET"
                " owner = excluded.owner, token = excluded.token, expires_us = excluded.expires_us",
                (self._ns, name, owner, token, now + int(ttl * _US)),
            )
        return AcquireResult(True, token=token)

    def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool:
        with self._translate("renew a lease"), self._write() as cur:
            now = self.now_us()
            cur.execute(
                "UPDATE clustersync_leases SET expires_us = ? WHERE ns = ? AND name = ?"
                " AND owner = ? AND token = ? AND expires_us > ?",
                (now + int(ttl * _US), self._ns, name, owner, token, now),
            )
            return cur.rowcount == 1

    def release_lease(self, name: str, owner: str, token: int) -> bool:
        with self._translate("release a lease"), self._write() as cur:
            now = self.now_us()
            # Keep the row: it carries the fencing counter for the next holder.
            cur.execute(
                "UPDATE clustersync_leases SET owner = NULL, expires_us = 0 WHERE ns = ?"
                " AND name = ? AND owner = ? AND token = ? AND expires_us > ?",
                (self._ns, name, owner, token, now),
            )
            released = cur.rowcount == 1
        if released:
            self._notify(lease_channel(name))
        return released

    def break_lease(self, name: str) -> bool:
        with self._translate("break a lease"), self._write() as cur:
            now = self.now_us()
            cur.execute(
                "UPDATE clustersync_leases SET owner = NULL, expires_us = 0 WHERE ns = ?"
                " AND name = ? AND owner IS NOT NULL AND expires_us > ?",
                (self._ns, name, now),
            )
            broken = cur.rowcount == 1
        if broken:
            self._notify(lease_channel(name))
        return broken

    def list_leases(self) -> list[LeaseInfo]:
        with self._translate("list leases"), self._read() as cur:
            now = self.now_us()
            rows = cur.execute(
                "SELECT name, owner, token, expires_us FROM clustersync_leases"
                " WHERE ns = ? AND owner IS NOT NULL AND expires_us > ? ORDER BY name",
                (self._ns, now),
            ).fetchall()
        return [LeaseInfo(r[0], r[1], r[2], (r[3] - now) / _US) for r in rows]

    def read_lease(self, name: str) -> LeaseInfo | None:
        with self._translate("read a lease"), self._read() as cur:
            now = self.now_us()
            row = cur.execute(
                "SELECT owner, token, expires_us FROM clustersync_leases WHERE ns = ?"
                " AND name = ? AND owner IS NOT NULL AND expires_us > ?",
                (self._ns, name, now),
            ).fetchone()
        return None if row is None else LeaseInfo(name, row[0], row[1], (row[2] - now) / _US)

    # -- slots ---------------------------------------------------------------------------

    def acquire_slot(
        self, name: str, owner: str, limit: int, ttl: float, wait: float
    ) -> AcquireResult:
        with self._translate("acquire a slot"), self._write() as cur:
            now = self.now_us()
            expires = now + int(ttl * _US)
            for table in ("clustersync_slots", "clustersync_slot_waiters"):
                cur.execute(
                    f"DELETE FROM {table} WHERE ns = ? AND name = ? AND expires_us <= ?",
                    (self._ns, name, now),
                )
            cur.execute(
                "UPDATE clustersync_slots SET expires_us = ? WHERE ns = ? AND name = ?"
                " AND owner = ? RETURNING token",
                (expires, self._ns, name, owner),
            )
            mine = cur.fetchone()
            if mine is not None:  # a retry of this acquisition: same token, fresh ttl
                return AcquireResult(True, token=mine[0])
            count, earliest = cur.execute(
                "SELECT count(*), min(expires_us) FROM clustersync_slots WHERE ns = ? AND name = ?",
                (self._ns, name),
            ).fetchone()
            place = cur.execute(
                "SELECT arrival_us, expires_us FROM clustersync_slot_waiters WHERE ns = ?"
                " AND name = ? AND owner = ?",
                (self._ns, name, owner),
            ).fetchone()
            arrival = None if place is None else place[0]
            ahead, ahead_earliest = cur.execute(
                "SELECT count(*), min(expires_us) FROM clustersync_slot_waiters WHERE ns = ?"
                " AND name = ? AND owner != ? AND (? IS NULL OR arrival_us < ?"
                " OR (arrival_us = ? AND owner < ?))",
                (self._ns, name, owner, arrival, arrival, arrival, owner),
            ).fetchone()
            if count + ahead >= limit:
                # Renewed only once less than half of its time is left: waiting writes
                # little (each commit wakes the waiters of other processes).
                if wait > 0 and (place is None or place[1] - now < wait * _US / 2):
                    cur.execute(
                        "INSERT INTO clustersync_slot_waiters"
                        " (ns, name, owner, arrival_us, expires_us) VALUES (?, ?, ?, ?, ?)"
                        " ON CONFLICT (ns, name, owner) DO UPDATE"
                        " SET expires_us = excluded.expires_us",
                        (self._ns, name, owner, now, now + int(wait * _US)),
                    )
                first = min(e for e in (earliest, ahead_earliest) if e is not None)
                return AcquireResult(False, retry_after=(first - now) / _US)
            if place is not None:
                cur.execute(
                    "DELETE FROM clustersync_slot_waiters WHERE ns = ? AND name = ? AND owner = ?",
                    (self._ns, name, owner),
                )
            (token,) = cur.execute(
                "INSERT INTO clustersync_slot_counters (ns, name, token) VALUES (?, ?, 1)"
                " ON CONFLICT (ns, name) DO UPDATE SET token = token + 1 RETURNING token",
                (self._ns, name),
            ).fetchone()
            cur.execute(
                "INSERT INTO clustersync_slots (ns, name, owner, token, expires_us)"
                " VALUES (?, ?, ?, ?, ?)",
                (self._ns, name, owner, token, expires),
            )
        return AcquireResult(True, token=token)

    def leave_slot_queue(self, name: str, owner: str) -> bool:
        with self._translate("leave the line of a semaphore"), self._write() as cur:
            cur.execute(
                "DELETE FROM clustersync_slot_waiters WHERE ns = ? AND name = ? AND owner = ?"
                " AND expires_us > ?",
                (self._ns, name, owner, self.now_us()),
            )
            left = cur.rowcount == 1
        if left:
            self._notify(lease_channel(name))
        return left

    def renew_slot(self, name: str, owner: str, token: int, ttl: float) -> bool:
        with self._translate("renew a slot"), self._write() as cur:
            now = self.now_us()
            cur.execute(
                "UPDATE clustersync_slots SET expires_us = ? WHERE ns = ? AND name = ?"
                " AND owner = ? AND token = ? AND expires_us > ?",
                (now + int(ttl * _US), self._ns, name, owner, token, now),
            )
            return cur.rowcount == 1

    def release_slot(self, name: str, owner: str, token: int) -> bool:
        with self._translate("release a slot"), self._write() as cur:
            cur.execute(
                "DELETE FROM clustersync_slots WHERE ns = ? AND name = ? AND owner = ?"
                " AND token = ? AND expires_us > ?",
                (self._ns, name, owner, token, self.now_us()),
            )
            released = cur.rowcount == 1
        if released:
            self._notify(lease_channel(name))
        return released

    def break_slots(self, name: str, token: int | None) -> int:
        with self._translate("break slots"), self._write() as cur:
            cur.execute(
                "DELETE FROM clustersync_slots WHERE ns = ? AND name = ? AND expires_us > ?"
                " AND (? IS NULL OR token = ?)",
                (self._ns, name, self.now_us(), token, token),
            )
            broken = cur.rowcount
        if broken:
            self._notify(lease_channel(name))
        return broken

    def list_slots(self, name: str) -> list[LeaseInfo]:
        with self._translate("list slots"), self._read() as cur:
            now = self.now_us()
            rows = cur.execute(
                "SELECT owner, token, expires_us FROM clustersync_slots WHERE ns = ?"
                " AND name = ? AND expires_us > ? ORDER BY token",
                (self._ns, name, now),
            ).fetchall()
        return [LeaseInfo(name, r[0], r[1], (r[2] - now) / _US) for r in rows]

    # -- recurring job metadata ----------------------------------------------------------

    def get_job_metadata(self, key: str) -> JobMetadataRecord:
        with self._translate("read job metadata"), self._read() as cur:
            now = self.now_us()
            row = cur.execute(
                "SELECT last_finished_us, paused, triggered FROM clustersync_recurring"
                " WHERE ns = ? AND key = ?",
                (self._ns, key),
            ).fetchone()
        if row is None:
            return JobMetadataRecord(None, now)
        return JobMetadataRecord(row[0], now, bool(row[1]), bool(row[2]))

    def register_recurring_job(
        self, key: str, instance: str, schedule: str, next_run_us: int | None, ttl: float
    ) -> None:
        with self._translate("register a recurring job"), self._write() as cur:
            now = self.now_us()
            cur.execute(
                "INSERT INTO clustersync_recurring (ns, key, schedule) VALUES (?, ?, ?)"
                " ON CONFLICT (ns, key) DO UPDATE SET schedule = excluded.schedule",
                (self._ns, key, schedule),
            )
            cur.execute(
                "INSERT INTO clustersync_recurring_instances"
                " (ns, key, instance, next_run_us, expires_us) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (ns, key, instance) DO UPDATE SET"
                " next_run_us = excluded.next_run_us, expires_us = excluded.expires_us",
                (self._ns, key, instance, next_run_us, now + int(ttl * _US)),
            )
            # Registrations that expired long ago: a crashed instance never unregisters.
            cur.execute(
                "DELETE FROM clustersync_recurring_instances WHERE ns = ? AND key = ?"
                " AND expires_us < ?",
                (self._ns, key, now - _EXPIRED_INSTANCES_KEPT_US),
            )

    def unregister_recurring_job(self, key: str, instance: str) -> None:
        with self._translate("unregister a recurring job"), self._write() as cur:
            cur.execute(
                "DELETE FROM clustersync_recurring_instances WHERE ns = ? AND key = ?"
                " AND instance = ?",
                (self._ns, key, instance),
            )

    def _holds(self, cur: sqlite3.Cursor, lease_name: str, owner: str, token: int) -> bool:
        return (
            cur.execute(
                "SELECT 1 FROM clustersync_leases WHERE ns = ? AND name = ? AND owner = ?"
                " AND token = ? AND expires_us > ?",
                (self._ns, lease_name, owner, token, self.now_us()),
            ).fetchone()
            is not None
        )

    def start_job_run(self, key: str, lease_name: str, owner: str, token: int) -> bool:
        with self._translate("start a recurring job's run"), self._write() as cur:
            if not self._holds(cur, lease_name, owner, token):
                return False
            cur.execute(
                "INSERT INTO clustersync_recurring (ns, key) VALUES (?, ?)"
                " ON CONFLICT (ns, key) DO NOTHING",
                (self._ns, key),
            )
            cur.execute(
                "UPDATE clustersync_recurring SET last_started_us = ?, triggered = 0"
                " WHERE ns = ? AND key = ? AND (paused = 0 OR triggered = 1)",
                (self.now_us(), self._ns, key),
            )
            return cur.rowcount == 1

    def set_job_finished(
        self,
        key: str,
        lease_name: str,
        owner: str,
        token: int,
        outcome: str,
        error: str | None,
    ) -> bool:
        with self._translate("write job metadata"), self._write() as cur:
            if not self._holds(cur, lease_name, owner, token):
                return False
            now = self.now_us()
            started = cur.execute(
                "INSERT INTO clustersync_recurring"
                " (ns, key, last_finished_us, last_outcome, last_error) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (ns, key) DO UPDATE SET last_finished_us = excluded.last_finished_us,"
                " last_outcome = excluded.last_outcome, last_error = excluded.last_error"
                " RETURNING last_started_us",
                (self._ns, key, now, outcome, error),
            ).fetchone()[0]
            self._remember(cur, ("recurring", key, None, started, now, outcome, error, owner, 1))
            return True

    def control_recurring_job(self, key: str, action: str) -> bool:
        column, value = ("triggered", 1) if action == "trigger" else ("paused", action == "pause")
        with self._translate(f"{action} a recurring job"), self._write() as cur:
            cur.execute(
                f"UPDATE clustersync_recurring SET {column} = ? WHERE ns = ? AND key = ?",
                (int(value), self._ns, key),
            )
            found = cur.rowcount == 1
        if found:
            self._notify(job_channel(key))
        return found

    def list_recurring_jobs(self) -> list[RecurringJobRecord]:
        with self._translate("list recurring jobs"), self._read() as cur:
            now = self.now_us()
            rows = cur.execute(
                "SELECT r.key, r.schedule, r.paused, r.triggered, r.last_started_us,"
                " r.last_finished_us, r.last_outcome, r.last_error,"
                " (SELECT min(next_run_us) FROM clustersync_recurring_instances i"
                "  WHERE i.ns = r.ns AND i.key = r.key AND i.expires_us > ?),"
                " (SELECT count(*) FROM clustersync_recurring_instances i"
                "  WHERE i.ns = r.ns AND i.key = r.key AND i.expires_us > ?)"
                " FROM clustersync_recurring r WHERE r.ns = ? ORDER BY r.key",
                (now, now, self._ns),
            ).fetchall()
        return [
            RecurringJobRecord(
                r[0], r[1], bool(r[2]), bool(r[3]), r[4], r[5], r[6], r[7], r[8], r[9]
            )
            for r in rows
        ]

    # -- one-shot jobs -------------------------------------------------------------------

    def put_jobs(self, jobs: Sequence[NewJob]) -> None:
        if not jobs:
            return
        with self._translate("store one-shot jobs"), self._write() as cur:
            cur.executemany(
                "INSERT INTO clustersync_jobs (ns, key, run_at_us, props, due_us,"
                " attempt_due_us, scheduled_by, trace) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (ns, key) DO NOTHING",
                [
                    (
                        self._ns,
                        j.key,
                        j.run_at_us,
                        j.props_json,
                        j.run_at_us,
                        j.run_at_us,
                        j.scheduled_by,
                        j.trace,
                    )
                    for j in jobs
                ],
            )
            inserted = cur.rowcount
            keys = [j.key for j in jobs]
            failed = self._failed_among(cur, keys)
            if inserted != len(jobs) or failed:  # some keys were stored already (or repeat)
                stored: dict[str, tuple[int, str] | None] = dict(self._stored(cur, keys))
                stored.update(dict.fromkeys(failed))
                duplicate = conflicting_job(jobs, stored)
                if duplicate is not None:
                    raise DuplicateJobError(duplicate)  # rolls the transaction back
        if inserted:
            self._notify(JOBS_CHANNEL)

    def _failed_among(self, cur: sqlite3.Cursor, keys: Sequence[str]) -> list[str]:
        """The keys among ``keys`` of failed jobs."""
        found: list[str] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            found += [
                row[0]
                for row in cur.execute(
                    "SELECT key FROM clustersync_failed_jobs WHERE ns = ?"
                    f" AND key IN ({', '.join('?' * len(chunk))})",
                    (self._ns, *chunk),
                )
            ]
        return found

    def _stored(self, cur: sqlite3.Cursor, keys: Sequence[str]) -> dict[str, tuple[int, str]]:
        """``(run_at_us, props)`` of the stored jobs among ``keys``."""
        stored: dict[str, tuple[int, str]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = cur.execute(
                "SELECT key, run_at_us, props FROM clustersync_jobs WHERE ns = ?"
                f" AND key IN ({', '.join('?' * len(chunk))})",
                (self._ns, *chunk),
            ).fetchall()
            stored.update((row[0], (row[1], row[2])) for row in rows)
        return stored

    def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]:
        with self._translate("claim due jobs"), self._write() as cur:
            now = self.now_us()
            rows = cur.execute(
                "SELECT key, run_at_us, props, claim, attempts, attempt_due_us, scheduled_by,"
                " trace FROM clustersync_jobs WHERE ns = ? AND due_us <= ?"
                " ORDER BY due_us, key LIMIT ?",
                (self._ns, now, limit),
            ).fetchall()
            if not rows:
                return []
            until = now + int(claim_ttl * _US)
            cur.executemany(
                "UPDATE clustersync_jobs SET owner = ?, claim = ?, attempts = ?, due_us = ?,"
                " claimed_us = ? WHERE ns = ? AND key = ?",
                [(owner, r[3] + 1, r[4] + 1, until, now, self._ns, r[0]) for r in rows],
            )
        return [
            ClaimedJob(r[0], r[1], r[2], r[3] + 1, r[4] + 1, r[5] or r[1], now, r[6], r[7])
            for r in rows
        ]

    def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]:
        renewed: list[str] = []
        with self._translate("renew job claims"), self._write() as cur:
            now = self.now_us()
            for key, claim in claims:
                cur.execute(
                    "UPDATE clustersync_jobs SET due_us = ? WHERE ns = ? AND key = ?"
                    " AND owner = ? AND claim = ? AND due_us > ?",
                    (now + int(claim_ttl * _US), self._ns, key, owner, claim, now),
                )
                if cur.rowcount == 1:
                    renewed.append(key)
        return renewed

    def _claimed(
        self, cur: sqlite3.Cursor, key: str, owner: str, claim: int
    ) -> tuple[Any, ...] | None:
        """The row of job ``key`` if ``owner`` holds claim ``claim`` of it."""
        row: tuple[Any, ...] | None = cur.execute(
            "SELECT run_at_us, props, attempts, attempt_due_us, claimed_us"
            " FROM clustersync_jobs WHERE ns = ? AND key = ? AND owner = ? AND claim = ?",
            (self._ns, key, owner, claim),
        ).fetchone()
        return row

    def _remember(
        self,
        cur: sqlite3.Cursor,
        run: tuple[str, str, int | None, int | None, int, str, str | None, str, int],
    ) -> None:
        """Add a run to the namespace's recent runs (the last RECENT_RUNS_KEPT)."""
        cur.execute(
            "INSERT INTO clustersync_runs (ns, kind, key, due_us, started_us, finished_us,"
            " outcome, error, owner, attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self._ns, *run),
        )
        newest = cur.lastrowid or 0
        cur.execute(
            "DELETE FROM clustersync_runs WHERE ns = ? AND id <= ("
            " SELECT id FROM clustersync_runs WHERE ns = ? AND id <= ?"
            " ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (self._ns, self._ns, newest, RECENT_RUNS_KEPT),
        )

    def complete_job(
        self, key: str, owner: str, claim: int, outcome: str, error: str | None
    ) -> bool:
        with self._translate("complete a job"), self._write() as cur:
            row = self._claimed(cur, key, owner, claim)
            if row is None:
                return False
            cur.execute("DELETE FROM clustersync_jobs WHERE ns = ? AND key = ?", (self._ns, key))
            self._remember(
                cur, ("once", key, row[3], row[4], self.now_us(), outcome, error, owner, row[2])
            )
            return True

    def retry_job(
        self,
        key: str,
        owner: str,
        claim: int,
        delay: float,
        error: str | None,
        count_attempt: bool,
    ) -> bool:
        with self._translate("retry a job"), self._write() as cur:
            row = self._claimed(cur, key, owner, claim)
            if row is None:
                return False
            now = self.now_us()
            due = now + int(delay * _US)
            if count_attempt:
                self._remember(
                    cur, ("once", key, row[3], row[4], now, "retry", error, owner, row[2])
                )
            cur.execute(
                "UPDATE clustersync_jobs SET owner = NULL, due_us = ?, attempt_due_us = ?,"
                " attempts = ? WHERE ns = ? AND key = ?",
                (due, due, row[2] if count_attempt else row[2] - 1, self._ns, key),
            )
        self._notify(JOBS_CHANNEL)
        return True

    def fail_job(self, key: str, owner: str, claim: int, error: str) -> bool:
        with self._translate("fail a job"), self._write() as cur:
            row = self._claimed(cur, key, owner, claim)
            if row is None:
                return False
            now = self.now_us()
            cur.execute("DELETE FROM clustersync_jobs WHERE ns = ? AND key = ?", (self._ns, key))
            cur.execute(
                "INSERT INTO clustersync_failed_jobs (ns, key, run_at_us, props, attempts,"
                " last_error, failed_at_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self._ns, key, row[0], row[1], row[2], error, now),
            )
            self._remember(cur, ("once", key, row[3], row[4], now, "error", error, owner, row[2]))
            return True

    def list_failed_jobs(self) -> list[FailedJobRecord]:
        with self._translate("list failed jobs"), self._read() as cur:
            rows = cur.execute(
                "SELECT key, run_at_us, props, attempts, last_error, failed_at_us"
                " FROM clustersync_failed_jobs WHERE ns = ? ORDER BY key",
                (self._ns,),
            ).fetchall()
        return [FailedJobRecord(*row) for row in rows]

    def retry_failed_job(self, key: str) -> bool:
        with self._translate("retry a failed job"), self._write() as cur:
            row = cur.execute(
                "DELETE FROM clustersync_failed_jobs WHERE ns = ? AND key = ?"
                " RETURNING run_at_us, props",
                (self._ns, key),
            ).fetchone()
            if row is None:
                return False
            now = self.now_us()
            cur.execute(
                "INSERT INTO clustersync_jobs (ns, key, run_at_us, props, due_us, attempt_due_us)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (self._ns, key, row[0], row[1], now, now),
            )
        self._notify(JOBS_CHANNEL)
        return True

    def recent_runs(self, limit: int) -> list[RunRecord]:
        with self._translate("list recent runs"), self._read() as cur:
            rows = cur.execute(
                "SELECT kind, key, due_us, started_us, finished_us, outcome, error, owner, attempt"
                " FROM clustersync_runs WHERE ns = ? ORDER BY id DESC LIMIT ?",
                (self._ns, limit),
            ).fetchall()
        return [RunRecord(*row) for row in rows]

    def cancel_job(self, key: str) -> bool:
        with self._translate("cancel a job"), self._write() as cur:
            now = self.now_us()
            row = cur.execute(
                "DELETE FROM clustersync_jobs WHERE ns = ? AND key = ? RETURNING owner, due_us",
                (self._ns, key),
            ).fetchone()
            failed = cur.execute(
                "DELETE FROM clustersync_failed_jobs WHERE ns = ? AND key = ?", (self._ns, key)
            ).rowcount
        if row is None:
            return failed == 1
        self._notify(JOBS_CHANNEL)
        # A job whose callback is running (live claim) was no longer pending.
        return bool(row[0] is None or row[1] <= now)

    def list_jobs(self) -> list[StoredJob]:
        with self._translate("list jobs"), self._read() as cur:
            now = self.now_us()
            rows = cur.execute(
                "SELECT key, run_at_us, props FROM clustersync_jobs WHERE ns = ?"
                " AND (owner IS NULL OR due_us <= ?) ORDER BY run_at_us, key",
                (self._ns, now),
            ).fetchall()
        return [StoredJob(r[0], r[1], r[2]) for r in rows]

    def list_jobs_page(
        self, prefix: str, after: str | None, limit: int
    ) -> tuple[list[StoredJob], str | None]:
        high = prefix_end(prefix)
        with self._translate("list jobs"), self._read() as cur:
            now = self.now_us()
            rows = cur.execute(
                "SELECT key, run_at_us, props, owner, due_us FROM clustersync_jobs"
                " WHERE ns = ? AND key >= ? AND (? IS NULL OR key > ?)"
                " AND (? IS NULL OR key < ?) ORDER BY key LIMIT ?",
                (self._ns, prefix, after, after, high, high, limit),
            ).fetchall()
        page = [StoredJob(r[0], r[1], r[2]) for r in rows if r[3] is None or r[4] <= now]
        return page, (rows[-1][0] if len(rows) == limit else None)

    def count_jobs(self) -> int:
        with self._translate("count jobs"), self._read() as cur:
            count: int = cur.execute(
                "SELECT count(*) FROM clustersync_jobs WHERE ns = ?", (self._ns,)
            ).fetchone()[0]
        return count

    def next_job_delay(self) -> float | None:
        with self._translate("find the next due job"), self._read() as cur:
            now = self.now_us()
            row = cur.execute(
                "SELECT min(due_us) FROM clustersync_jobs WHERE ns = ?", (self._ns,)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        due_us: int = row[0]
        return max(0.0, (due_us - now) / _US)
