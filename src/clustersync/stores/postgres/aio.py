"""PostgreSQL store (``postgresql://`` / ``postgres://``): a cluster on the database you run.

Every operation is one SQL statement in autocommit (``INSERT … ON CONFLICT … WHERE
expired``, owner-checked ``UPDATE``/``DELETE … RETURNING``, ``FOR UPDATE SKIP LOCKED``
to claim due jobs), except storing a batch of one-shot jobs, which is one statement in a
transaction so that a duplicate stores nothing. Expiry is judged by the server's
``clock_timestamp()``. The schema is created on first use under a transaction-scoped
advisory lock and versioned in ``clustersync_schema`` for later migrations. See
:mod:`clustersync.stores.postgres.sql`.

Wake-ups: releases and job changes ``pg_notify`` a per-namespace channel; each store
object ``LISTEN``s on a dedicated connection opened before ``open_store`` returns. Every
waiter also has a deadline, so a lost notification costs latency only. Where LISTEN
cannot work (a transaction-pooling PgBouncer), ``wakeups="poll"`` replaces it with one
polling statement per interval while someone waits (:data:`LOCK_POLL` for lock
waiters, :data:`CHANGE_POLL` for schedulers and recurring jobs).

High availability: a libpq multi-host URL (``postgresql://u:p@h1:5432,h2:5432/db``)
reaches whichever host accepts read-write sessions (``target_session_attrs=read-write``
is the default for such URLs). After a failover the pool's connections to the old
primary are dropped and new ones find the promoted standby (the host that last
accepted a session is tried first); a statement that meets a read-only session is
retried on a new connection, and a statement that meets a schema the new primary lost
(asynchronous replication) re-creates it first. Fencing tokens survive a failover that
lost the last writes: see :mod:`clustersync.stores.postgres.sql`.

Failure modes: psycopg errors and pool timeouts become ``StoreUnavailableError`` (cause
kept). Connections come from a small pool of the backend's own (at most
``max_connections``): an idle connection the server has closed (restart, crash,
terminated backend) is noticed before use and dropped, and new connections are opened
on demand, never behind a background reconnection backoff — so while the server is down
an operation fails as fast as a connection attempt does, and it works again as soon as
the server answers. Only waiting for a free connection when all are busy is bounded by
``pool_timeout``. The listening connection reconnects with backoff and then wakes every
waiter to recheck. Committed one-shot jobs survive server restarts and crashes.

A server that stops answering on an open connection (hung, or a network partition that
the kernel's TCP does not notice, e.g. behind a proxy) would leave libpq waiting forever:
an operation that gets no answer within ``socket_timeout`` (5 s, like the Redis store)
has its socket shut down by a watchdog, so it fails with ``StoreUnavailableError`` and
the connection is discarded. The watchdog first sends a cancel request (waiting up to
:data:`CANCEL_GRACE` for it): a statement stuck on the server — a commit waiting for a
synchronous standby that is away, or a row lock held by such a commit — would otherwise
keep its server backend (and its row locks) after the client gave up.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import select
import socket
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import unquote

import psycopg
from psycopg import capabilities, pq, sql
from psycopg.pq import TransactionStatus

from ..._concurrency import aio as shim
from ...exceptions import ConfigurationError, DuplicateJobError, StoreUnavailableError
from ..contract import (
    ANY_CHANNEL,
    JOBS_CHANNEL,
    JOBS_DUE_PREFIX,
    AcquireResult,
    ClaimedJob,
    FailedJobRecord,
    GrantResult,
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
from ..feed.aio import POLL, ChangeFeed, ChangePoller, PushNotifications
from ..options import (
    DEFAULT_GRANT_WAITERS,
    option_count,
    option_grant_waiters,
    option_grant_waiters_text,
    option_timeout,
)
from ..registry import redact
from . import sql as q

logger = logging.getLogger("clustersync.postgres")

_US = 1_000_000
#: Idle pooled connections older than this are closed rather than reused (a firewall or
#: NAT may have dropped them silently).
_MAX_IDLE = 300.0
#: Longest wait for an answer on one connection (see the Redis store's).
DEFAULT_SOCKET_TIMEOUT = 5.0
#: How long the watchdog waits for its cancel request before it shuts the socket down.
CANCEL_GRACE = 0.5
#: How many times a statement that met a read-only session (a standby, or a primary
#: set read-only) is sent again on a new connection.
READ_ONLY_RETRIES = 2
#: ``wakeups`` values: LISTEN/NOTIFY, or polling (no LISTEN: e.g. behind a
#: transaction-pooling PgBouncer, which does not deliver notifications to its clients).
WAKEUPS = ("listen", "poll")
#: Polling pace (``wakeups="poll"``) while a lock waiter of this store waits: a release
#: elsewhere is seen within this.
LOCK_POLL = 0.05
#: Polling pace while only schedulers and recurring jobs wait: a job scheduled elsewhere
#: (due before the scheduler's next wake-up) or a pause/resume/trigger is seen within this.
CHANGE_POLL = 0.5
#: A lease whose acquisition was refused is polled for this long (a waiter asks again
#: at least every 2 s, which extends it).
WATCH_REFUSED = 3.0
#: ``handoff`` values: waiters are notified of a release (LISTEN or polling), or blocked
#: acquisitions queue in the server on a session-level advisory lock (see
#: :data:`~clustersync.stores.postgres.sql.QUEUE_FUNCTIONS`).
HANDOFFS = ("notify", "advisory")
#: Longest single wait in the advisory lock queue (shorter for short leases): a holder
#: paused past its expiry, or a lease broken by an operator, keeps its advisory lock, and
#: its waiters see the row free when their wait runs out.
ADVISORY_WAIT = 2.0
#: Idle connections kept for the next acquisitions through the advisory queue.
SPARE_SESSIONS = 4
#: How often a waiter that holds the advisory lock, but not the lease (taken without the
#: queue: a non-blocking acquire, a job), checks the lease again.
ROW_POLL = 0.05
#: Store options that may also be given in the URL's query (libpq would reject them).
_URL_OPTIONS = ("wakeups", "prepared_statements", "handoff", "grant_waiters")
#: ``target_session_attrs`` values that may land on a standby, where nothing works.
_STANDBY_SESSIONS = ("read-only", "standby", "prefer-standby")

T = TypeVar("T")


def notify_channel(namespace: str) -> str:
    """The NOTIFY channel of a namespace (an identifier of at most 63 bytes)."""
    return "clustersync_" + hashlib.sha1(namespace.encode()).hexdigest()[:32]


class PostgresBackend(PushNotifications):
    """Lease and job operations on one namespace of a PostgreSQL database."""

    capabilities: frozenset[str] = frozenset()

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        connect_timeout: float = 5.0,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        pool_timeout: float = 10.0,
        max_connections: int = 10,
        prepared_statements: bool = True,
        wakeups: str = "listen",
        handoff: str = "notify",
        grant_waiters: int = DEFAULT_GRANT_WAITERS,
        hosts: _Hosts | None = None,
    ) -> None:
        self._url = url
        self._prepared_statements = prepared_statements
        self._safe_url = redact(url)
        self._ns = namespace
        self._channel = notify_channel(namespace)
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._hosts = hosts or _Hosts([], [], [], None)
        self._feed: ChangeFeed[Any] | None = None
        self._poller: ChangePoller | None = None
        #: The wake-up pace the hub asks for (None: nobody waits), and the leases a
        #: waiter of this store was refused, with until when to poll them (poll mode).
        self._watch_interval: float | None = None
        self._watched: dict[str, float] = {}
        self._watched_lock = threading.Lock()
        #: What the last poll saw: the earliest due time, paused and triggered jobs.
        self._seen_due_us: int | None = None
        self._seen_control: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        self.wakeups = wakeups
        if wakeups == "poll":
            self._poller = ChangePoller(
                what="PostgreSQL change poller",
                poll=self._poll_changes,
                interval=self._poll_interval,
                errors=(StoreUnavailableError,),
            )
        else:
            self._feed = ChangeFeed(
                what="PostgreSQL LISTEN connection",
                connect=self._listen,
                receive=self._receive,
                disconnect=_close_connection,
                notify=self._notify,
                errors=(psycopg.Error, StoreUnavailableError, OSError),
                ping=self._ping_listener,
                answer_within=socket_timeout,
            )
        self._closed = False
        #: ``"advisory"``: blocked acquisitions queue in the server (capability
        #: ``grant``, see :meth:`wait_for_grant`); ``"notify"``: they are woken.
        self.handoff = handoff
        self.capabilities = frozenset({"grant"}) if handoff == "advisory" else frozenset()
        self.max_blocked_waiters = grant_waiters
        #: Connections of their own holding the advisory lock of a lease: (name, owner)
        #: -> connection; and idle ones kept for the next acquisitions.
        self._sessions: dict[tuple[str, str], Any] = {}
        self._spare_sessions: list[Any] = []
        self._sessions_lock = threading.Lock()
        # The connection pool: idle connections with when they were checked in (newest
        # last), how many are open or being opened, and who waits for one when all
        # max_connections are busy.
        self._pool_timeout = pool_timeout
        self._max_connections = max_connections
        self._idle: list[tuple[Any, float]] = []
        self._opened = 0
        self._slot_waiters: deque[shim.Waker] = deque()
        self._pool_lock = shim.Lock()
        #: Every connection opened, for a forked child to detach them (see after_fork).
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()

    @classmethod
    async def open(cls, url: str, namespace: str, options: dict[str, Any]) -> PostgresBackend:
        options = dict(options)
        connect_timeout = option_timeout(options.pop("connect_timeout", 5.0), "connect_timeout")
        socket_timeout = option_timeout(
            options.pop("socket_timeout", DEFAULT_SOCKET_TIMEOUT), "socket_timeout"
        )
        pool_timeout = option_timeout(
            options.pop("pool_timeout", 10.0), "pool_timeout", allow_zero=True
        )
        max_connections = option_count(options.pop("max_connections", 10), "max_connections")
        url, in_url = _url_options(url)
        prepared = _bool_option(
            "prepared_statements", in_url.get("prepared_statements"), options, True
        )
        wakeups = _choice_option("wakeups", in_url.get("wakeups"), options, WAKEUPS)
        handoff = _choice_option("handoff", in_url.get("handoff"), options, HANDOFFS)
        waiters = _merged_option("grant_waiters", None, options)
        if "grant_waiters" in in_url:
            waiters.insert(0, option_grant_waiters_text(in_url["grant_waiters"]))
        waiters = [option_grant_waiters(value) for value in waiters]
        if len(set(waiters)) > 1:
            raise ConfigurationError(
                "conflicting grant_waiters settings in the URL and the options"
            )
        if handoff == "advisory" and wakeups == "poll":
            raise ConfigurationError(
                "invalid store options: handoff='advisory' holds session-level advisory locks,"
                " which need a direct connection to PostgreSQL; wakeups='poll' marks a"
                " transaction-pooling PgBouncer, where they cannot work (use handoff='notify')"
            )
        if options:
            raise ConfigurationError(
                f"unknown option(s) for the postgres store: {', '.join(sorted(options))}"
            )
        try:
            params = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(
                f"invalid PostgreSQL URL {redact(url)!r}: {str(exc).strip()}"
            ) from exc
        except UnicodeError as exc:  # percent-escapes that are not UTF-8 (%ED%A0%80)
            raise ConfigurationError(
                f"invalid PostgreSQL URL {redact(url)!r}: an escaped part is not UTF-8"
            ) from exc
        hosts = _Hosts.of(params, url)
        backend = cls(
            url,
            namespace,
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            pool_timeout=pool_timeout,
            max_connections=max_connections,
            prepared_statements=prepared,
            wakeups=wakeups,
            handoff=handoff,
            grant_waiters=waiters[0] if waiters else DEFAULT_GRANT_WAITERS,
            hosts=hosts,
        )
        try:
            # Also proves the server is reachable.
            await backend._run("create the schema", backend._create_schema)
            if backend._feed is not None:
                await backend._feed.start()
            if backend._poller is not None:
                await backend._poller.start()
        except BaseException:
            await backend.close()
            raise
        return backend

    # -- connection management -----------------------------------------------------------

    async def _connect(self) -> Any:
        # Multi-host: a read-write session, the host that last had one first.
        params = self._hosts.connect_params()
        conninfo = psycopg.conninfo.make_conninfo(self._url, **params) if params else self._url
        try:
            conn = await psycopg.AsyncConnection.connect(
                conninfo,
                autocommit=True,
                connect_timeout=max(1, int(self._connect_timeout)),
                # psycopg prepares a statement on its 5th use on a connection (-40 % time
                # per operation here). Off for a transaction-pooling PgBouncer < 1.21.
                prepare_threshold=5 if self._prepared_statements else None,
            )
            self._connections.add(conn)
            self._hosts.connected(conn.info.host, conn.info.port)
            return conn
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(
                f"cannot connect to PostgreSQL at {self._safe_url}: {_connect_failure(exc)}"
            ) from exc
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"cannot connect to PostgreSQL at {self._safe_url}: {exc}"
            ) from exc

    async def _create_schema(self, conn: Any) -> None:
        """Create or migrate the schema (errors are translated by the caller, ``_run``)."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (q.SCHEMA_LOCK_KEY,))
            for statement in q.SCHEMA:
                await conn.execute(statement)
            if self.handoff == "advisory":
                for statement in q.QUEUE_FUNCTIONS:
                    await conn.execute(statement)
            cur = await conn.execute("SELECT max(version) FROM clustersync_schema")
            row = await cur.fetchone()
            version = row[0] if row else None
            if version is not None and version > q.SCHEMA_VERSION:
                raise ConfigurationError(
                    f"PostgreSQL store {self._safe_url} has schema version {version}, newer "
                    f"than this clustersync understands ({q.SCHEMA_VERSION}); upgrade"
                )
            if version != q.SCHEMA_VERSION:
                # A fresh schema is already current; an older one is migrated step by step.
                for step in range((version or q.SCHEMA_VERSION) + 1, q.SCHEMA_VERSION + 1):
                    for statement in q.MIGRATIONS[step]:
                        await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO clustersync_schema (version) VALUES (%s)", (q.SCHEMA_VERSION,)
                )

    @contextlib.asynccontextmanager
    async def _translate(self, action: str) -> AsyncIterator[None]:
        """The one boundary where psycopg errors become StoreUnavailableError."""
        if self._closed:
            raise StoreUnavailableError(f"store {self._safe_url} is closed")
        try:
            yield
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"PostgreSQL at {self._safe_url} failed to {action}: {exc}"
            ) from exc

    async def _run(self, action: str, work: Callable[[Any], Awaitable[T]]) -> T:
        """``work(conn)`` on a pooled connection, its errors translated (``_translate``).

        Failing over is the one case where a statement that failed is sent again, on a
        new connection: it met a read-only session (a standby, or a primary set
        read-only), so it changed nothing; at most :data:`READ_ONLY_RETRIES` times (libpq
        then picks the read-write host). A statement that found no clustersync table or
        column (a failover to an asynchronous standby that missed the schema) re-creates
        the schema once, then runs again."""
        schema_checked = False
        for attempt in itertools.count():
            read_only = False
            async with self._translate(action), self._connection() as conn:
                try:
                    return await work(conn)
                except psycopg.errors.ReadOnlySqlTransaction:
                    if attempt >= READ_ONLY_RETRIES:
                        raise
                    read_only = True
                    await conn.close()  # not returned to the pool
                except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
                    if schema_checked:
                        raise
                    schema_checked = True
                    logger.warning(
                        "PostgreSQL at %s: the clustersync schema is missing or older"
                        " (a failover lost it?); creating it again",
                        self._safe_url,
                    )
                    await self._create_schema(conn)
            if read_only:  # its siblings in the pool are likely on the same host
                logger.warning(
                    "PostgreSQL at %s: a session is read-only (a standby, or a demoted"
                    " primary); retrying on a new connection",
                    self._safe_url,
                )
                await self.drop_idle_connections()
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A connection of the pool for one operation (use inside ``_translate``), bounded
        by ``socket_timeout``. A connection whose operation the watchdog timed out is
        closed, even if an answer came (the answer to a cancelled commit is not one)."""
        conn = await self._checkout()
        watchdog = self._bounded(conn)
        try:
            with watchdog:
                yield conn
        finally:
            if watchdog.expired:
                with contextlib.suppress(Exception):
                    await conn.close()
            await self._checkin(conn)
            if watchdog.expired:  # the others may have stopped answering too
                await self.drop_idle_connections()

    async def drop_idle_connections(self) -> None:
        """Close the pooled connections not in use (after a call got no answer: those
        may be stuck too), so that the next call opens a new one."""
        async with self._pool_lock:
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
        for conn, _ in idle:
            with contextlib.suppress(Exception):
                await conn.close()

    def _bounded(self, conn: Any) -> _Watchdog:
        """A context bounding one operation on ``conn`` by ``socket_timeout``."""
        return _Watchdog(conn, self._socket_timeout, self._safe_url)

    async def _execute_bounded(self, conn: Any, query: Any) -> None:
        with self._bounded(conn):
            await conn.execute(query)

    async def _checkout(self) -> Any:
        """An idle connection the server has not closed, else a new one if fewer than
        ``max_connections`` are open, else wait (up to ``pool_timeout``) for one."""
        deadline = shim.monotonic() + self._pool_timeout
        stale: list[Any] = []
        try:
            while True:
                async with self._pool_lock:
                    if self._closed:
                        raise StoreUnavailableError(f"store {self._safe_url} is closed")
                    while self._idle:
                        conn, since = self._idle.pop()
                        if shim.monotonic() - since < _MAX_IDLE and not _closed_by_server(conn):
                            return conn
                        self._opened -= 1
                        stale.append(conn)
                    if self._opened < self._max_connections:
                        self._opened += 1
                        break
                    waker = shim.Waker()
                    self._slot_waiters.append(waker)
                try:
                    remaining = deadline - shim.monotonic()
                    woken = remaining > 0 and await waker.wait(remaining)
                finally:
                    async with self._pool_lock:
                        if waker in self._slot_waiters:
                            self._slot_waiters.remove(waker)
                # A check-in may have chosen this waiter just as its wait ran out: take
                # the connection then, rather than waste the wake-up (no other waiter
                # would be woken for it).
                woken = woken or waker.is_set()
                if not woken:
                    raise StoreUnavailableError(
                        f"PostgreSQL at {self._safe_url}: all {self._max_connections}"
                        f" connections of this store stayed busy for {self._pool_timeout:g}s"
                        " (see the max_connections and pool_timeout options)"
                    )
        finally:
            for conn in stale:
                with contextlib.suppress(Exception):
                    await conn.close()
        try:
            return await self._connect()
        except BaseException:
            await self._release_slot()
            raise

    async def _checkin(self, conn: Any) -> None:
        """Keep ``conn`` for reuse if it is idle and healthy, else close it."""
        reusable = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        async with self._pool_lock:
            keep = reusable and not self._closed
            if keep:
                self._idle.append((conn, shim.monotonic()))
            else:
                self._opened -= 1
            if self._slot_waiters:
                self._slot_waiters.popleft().set_threadsafe()
        if not keep:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _release_slot(self) -> None:
        async with self._pool_lock:
            self._opened -= 1
            if self._slot_waiters:
                self._slot_waiters.popleft().set_threadsafe()

    async def _fetch(self, action: str, query: str, params: dict[str, Any]) -> list[Any]:
        async def fetch(conn: Any) -> list[Any]:
            cur = await conn.execute(query, params)
            return list(await cur.fetchall())

        return await self._run(action, fetch)

    async def _rowcount(self, action: str, query: str, params: dict[str, Any]) -> int:
        async def count(conn: Any) -> int:
            cur = await conn.execute(query, params)
            return int(cur.rowcount)

        return await self._run(action, count)

    # -- notifications -------------------------------------------------------------------

    async def _listen(self) -> Any:
        conn = await self._connect()
        try:
            async with self._translate("listen for changes"):
                await self._execute_bounded(
                    conn, sql.SQL("LISTEN {}").format(sql.Identifier(self._channel))
                )
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _receive(self, conn: Any) -> tuple[list[str], bool]:
        # stop_after=1: return as soon as a notification arrives, not at the end of POLL
        # (collecting for the whole window delayed every wake-up by up to 100 ms).
        payloads = [notice.payload async for notice in conn.notifies(timeout=POLL, stop_after=1)]
        return payloads, bool(payloads)

    async def _ping_listener(self, conn: Any) -> bool:
        """A round trip on the LISTEN connection, bounded by ``socket_timeout``. A session
        that has become read-only (its primary was demoted, or set read-only before a
        switchover) would hear nothing of the new primary's changes: it is replaced."""
        with self._bounded(conn):
            cur = await conn.execute(
                "SELECT pg_is_in_recovery()"
                " OR current_setting('default_transaction_read_only')::boolean"
            )
            row = await cur.fetchone()
        if row is not None and row[0]:
            raise StoreUnavailableError(
                f"PostgreSQL at {self._safe_url}: the LISTEN session is now read-only"
            )
        return True

    # -- wakeups="poll" ------------------------------------------------------------------

    def set_watch_interval(self, seconds: float | None) -> None:
        """Poll mode: poll while someone waits (LISTEN mode: nothing to do)."""
        was = self._watch_interval
        self._watch_interval = seconds
        if self._poller is not None and was is None and seconds is not None:
            self._poller.wake()

    def _poll_interval(self) -> float | None:
        if self._watch_interval is None:
            return None
        return LOCK_POLL if self._watched else CHANGE_POLL

    def _watch_refused(self, name: str) -> None:
        """Poll mode: a waiter of this store was refused ``name``; watch it for a while."""
        with self._watched_lock:
            new = name not in self._watched
            self._watched[name] = shim.monotonic() + WATCH_REFUSED
        if new and self._poller is not None:
            self._poller.wake()  # poll at the lock waiters' pace from now on

    def _local_change(self, channel: str) -> None:
        """Poll mode: tell this store's own waiters at once (no NOTIFY reaches them)."""
        if self._poller is not None:
            self._notify(channel)

    async def _poll_changes(self, fresh: bool) -> None:
        """One polling statement: tell the waiters of this store what changed since the
        last poll (every waiter after a pause or an error: ``fresh``)."""
        now = shim.monotonic()
        with self._watched_lock:
            for name, until in list(self._watched.items()):
                if until < now:
                    del self._watched[name]
            names = sorted(self._watched)
        rows = await self._fetch(
            "poll for changes", q.POLL_CHANGES, {"ns": self._ns, "names": names}
        )
        now_us, due_us, free, paused, triggered = rows[0]
        control = (frozenset(paused), frozenset(triggered))
        due_us = None if due_us is None else int(due_us)
        seen_due, seen_control = self._seen_due_us, self._seen_control
        self._seen_due_us, self._seen_control = due_us, control
        if fresh:
            self._notify(ANY_CHANNEL)
            return
        for name in free:
            self._notify(lease_channel(name))
        if due_us is not None and due_us != seen_due:
            self._notify(f"{JOBS_DUE_PREFIX}{due_us - int(now_us)}")
        elif due_us is None and seen_due is not None:
            self._notify(JOBS_CHANNEL)
        for key in sorted((control[0] ^ seen_control[0]) | (control[1] ^ seen_control[1])):
            self._notify(job_channel(key))

    def after_fork(self) -> bool:
        """In a forked child: the connections are shared with the parent. Each socket is
        replaced, in this process only, by ``/dev/null``, so that nothing the child's
        copies do (libpq's goodbye message when they are finalized) reaches the server
        on the parent's sessions; the store then opens connections of its own."""
        with self._sessions_lock:  # the parent's advisory locks stay the parent's
            self._sessions.clear()
            self._spare_sessions.clear()
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for conn in list(self._connections):
                with contextlib.suppress(Exception):
                    os.dup2(devnull, conn.pgconn.socket)
        finally:
            os.close(devnull)
        return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listener = None
        with self._sessions_lock:
            sessions = [*self._sessions.values(), *self._spare_sessions]
            self._sessions.clear()
            self._spare_sessions.clear()
        for conn in sessions:  # the server frees their advisory locks
            with contextlib.suppress(Exception):
                await conn.close()
        if self._feed is not None:
            await self._feed.close()
        if self._poller is not None:
            await self._poller.close()
        async with self._pool_lock:
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
            waiters, self._slot_waiters = list(self._slot_waiters), deque()
        for waiter in waiters:
            waiter.set_threadsafe()
        for conn, _ in idle:  # connections in use are closed when they are checked in
            with contextlib.suppress(Exception):
                await conn.close()

    # -- leases --------------------------------------------------------------------------

    async def now_us(self) -> int:
        rows = await self._fetch("read the time", q.NOW, {})
        return int(rows[0][0])

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult:
        params = {"ns": self._ns, "name": name, "owner": owner, "ttl_us": int(ttl * _US)}
        token, remaining_us = (await self._fetch("acquire a lease", q.ACQUIRE, params))[0]
        if token is not None:
            return AcquireResult(True, token=int(token))
        if self._poller is not None:
            self._watch_refused(name)
        return AcquireResult(False, retry_after=max(0, int(remaining_us or 0)) / _US)

    async def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool:
        params = {
            "ns": self._ns,
            "name": name,
            "owner": owner,
            "token": token,
            "ttl_us": int(ttl * _US),
        }
        return await self._rowcount("renew a lease", q.RENEW, params) == 1

    async def release_lease(self, name: str, owner: str, token: int) -> bool:
        with self._sessions_lock:
            session = self._sessions.pop((name, owner), None)
        if session is not None:  # taken through the advisory queue
            args = (self._ns, name, owner, token, self._channel, self._advisory_key(name))
            row = await self._on_session("release a lease", session, q.QUEUE_RELEASE, args, 0.0)
            await self._spare(session)
            if row[0]:
                self._local_change(lease_channel(name))
            return bool(row[0])
        params = {
            "ns": self._ns,
            "name": name,
            "owner": owner,
            "token": token,
            "channel": self._channel,
        }
        released = len(await self._fetch("release a lease", q.RELEASE, params)) == 1
        if released:
            self._local_change(lease_channel(name))
        return released

    async def break_lease(self, name: str) -> bool:
        params = {"ns": self._ns, "name": name, "channel": self._channel}
        broken = len(await self._fetch("break a lease", q.BREAK, params)) == 1
        if broken:
            self._local_change(lease_channel(name))
        return broken

    # -- the advisory queue (handoff="advisory") ---------------------------------------------

    def grant_wait(self, ttl: float) -> float:
        """At most :data:`ADVISORY_WAIT` and a quarter of the ttl: when a wait in the queue
        runs out, the waiter tries the lease row itself, so a holder paused past its
        expiry (which keeps its advisory lock) loses the lease to it by then."""
        return min(ADVISORY_WAIT, ttl / 4, self._socket_timeout / 2)

    async def wait_for_grant(self, name: str, owner: str, ttl: float, wait: float) -> GrantResult:
        """Queue in the server for the lease (``handoff="advisory"``): on a connection of
        its own, wait up to ``wait`` seconds for the session-level advisory lock of the
        name, then take the lease row (free or expired: the row stays the truth), in one
        call. While the lease is held, that connection keeps the advisory lock, and
        :meth:`release_lease` frees the row, then the lock, in one call: the next
        waiter's backend, already queued, takes the row at once. A wait that runs out
        still tries the row (a holder paused past its expiry). A waiter that got the
        advisory lock while the lease was taken without the queue keeps the lock and
        checks the row every :data:`ROW_POLL`."""
        with self._sessions_lock:
            session = self._sessions.get((name, owner))
        queued = session is not None  # we hold the advisory lock already
        if session is None:
            async with self._translate("wait for a lease"):
                session = await self._session()
        try:
            if queued:
                params = {"ns": self._ns, "name": name, "owner": owner, "ttl_us": int(ttl * _US)}
                token, remaining_us = await self._on_session(
                    "wait for a lease", session, q.ACQUIRE, params, 0.0
                )
                locked = waited = True
            else:
                args = (
                    self._ns,
                    name,
                    owner,
                    int(ttl * _US),
                    self._advisory_key(name),
                    max(1, int(wait * 1000)),
                )
                locked, token, remaining_us, waited = await self._on_session(
                    "wait for a lease", session, q.QUEUE_ACQUIRE, args, wait
                )
        except BaseException:
            with self._sessions_lock:
                self._sessions.pop((name, owner), None)
            raise
        if locked and not queued:
            with self._sessions_lock:
                self._sessions[(name, owner)] = session
        if token is not None:
            if not locked:  # taken from a holder past its expiry, without the queue
                await self._spare(session)
            # Handed over: the lock was not free when this call (or an earlier one) came.
            return GrantResult(int(token), valid_for=ttl, handed_over=bool(waited))
        left = max(0, int(remaining_us or 0)) / _US
        if not locked:  # the wait ran out: the caller queues again at once
            await self._spare(session)
            return GrantResult(None, retry_after=left)
        await shim.sleep(min(wait, left + 0.001, ROW_POLL))
        return GrantResult(None, retry_after=left)

    async def withdraw_waiter(self, name: str, owner: str) -> bool:
        """Leave the queue of ``name``: free the advisory lock if we hold it, and the
        lease if a call whose answer we never saw took it for ``owner``. True if it did."""
        with self._sessions_lock:
            session = self._sessions.pop((name, owner), None)
        if session is not None:
            args = (self._ns, name, owner, self._channel, self._advisory_key(name))
            row = await self._on_session(
                "leave the queue of a lease", session, q.QUEUE_WITHDRAW, args, 0.0
            )
            await self._spare(session)
            freed = bool(row[0])
        else:
            params = {"ns": self._ns, "name": name, "owner": owner, "channel": self._channel}
            rows = await self._fetch("leave the queue of a lease", q.RELEASE_OWNED, params)
            freed = len(rows) == 1
        if freed:
            self._local_change(lease_channel(name))
        return freed

    def _advisory_key(self, name: str) -> int:
        """The advisory lock key of a lease: 64 bits of a hash of the namespace and name
        (a collision only makes two names queue together; the rows stay apart)."""
        digest = hashlib.blake2b(f"{self._ns}\0{name}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    async def _session(self) -> Any:
        """An idle connection of its own (not of the pool) for the advisory queue."""
        while True:
            with self._sessions_lock:
                if self._closed:
                    raise StoreUnavailableError(f"store {self._safe_url} is closed")
                conn = self._spare_sessions.pop() if self._spare_sessions else None
            if conn is None:
                return await self._connect()
            if not conn.closed and not _closed_by_server(conn):
                return conn
            with contextlib.suppress(Exception):
                await conn.close()

    async def _spare(self, conn: Any) -> None:
        """Keep an idle session connection (holding no advisory lock) for later."""
        with self._sessions_lock:
            keep = not self._closed and not conn.closed
            keep = keep and len(self._spare_sessions) < SPARE_SESSIONS
            if keep:
                self._spare_sessions.append(conn)
        if not keep:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _on_session(
        self, action: str, conn: Any, query: str, params: Any, wait: float
    ) -> Any:
        """The one row of ``query`` on a session connection, bounded by ``wait`` plus
        ``socket_timeout``. A failover that lost the queue's functions creates them
        again once. Any error closes the connection (the server then ends the session
        and frees its advisory lock) and raises ``StoreUnavailableError``."""
        try:
            async with self._translate(action):
                try:
                    with _Watchdog(conn, wait + self._socket_timeout, self._safe_url):
                        return await (await conn.execute(query, params)).fetchone()
                except (psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedTable):
                    logger.warning(
                        "PostgreSQL at %s: the clustersync schema is missing or older"
                        " (a failover lost it?); creating it again",
                        self._safe_url,
                    )
                    await self._create_schema(conn)
                    with _Watchdog(conn, wait + self._socket_timeout, self._safe_url):
                        return await (await conn.execute(query, params)).fetchone()
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise

    async def list_leases(self) -> list[LeaseInfo]:
        rows = await self._fetch("list leases", q.LIST_LEASES, {"ns": self._ns})
        return [LeaseInfo(r[0], r[1], int(r[2]), int(r[3]) / _US) for r in rows]

    async def read_lease(self, name: str) -> LeaseInfo | None:
        rows = await self._fetch("read a lease", q.READ_LEASE, {"ns": self._ns, "name": name})
        if not rows:
            return None
        owner, token, left_us = rows[0]
        return LeaseInfo(name, str(owner), int(token), int(left_us) / _US)

    # -- slots ---------------------------------------------------------------------------

    async def acquire_slot(
        self, name: str, owner: str, limit: int, ttl: float, wait: float
    ) -> AcquireResult:
        params = {
            "ns": self._ns,
            "name": name,
            "owner": owner,
            "limit": limit,
            "ttl_us": int(ttl * _US),
            "wait_us": int(wait * _US),
        }
        token, left_us = (await self._fetch("acquire a slot", q.ACQUIRE_SLOT, params))[0]
        if token is not None:
            return AcquireResult(True, token=int(token))
        return AcquireResult(False, retry_after=max(0, int(left_us or 0)) / _US)

    async def leave_slot_queue(self, name: str, owner: str) -> bool:
        params = {"ns": self._ns, "name": name, "owner": owner, "channel": self._channel}
        rows = await self._fetch("leave the line of a semaphore", q.LEAVE_SLOT_QUEUE, params)
        return len(rows) == 1

    async def renew_slot(self, name: str, owner: str, token: int, ttl: float) -> bool:
        params = {
            "ns": self._ns,
            "name": name,
            "owner": owner,
            "token": token,
            "ttl_us": int(ttl * _US),
        }
        return await self._rowcount("renew a slot", q.RENEW_SLOT, params) == 1

    async def release_slot(self, name: str, owner: str, token: int) -> bool:
        params = {
            "ns": self._ns,
            "name": name,
            "owner": owner,
            "token": token,
            "channel": self._channel,
        }
        return len(await self._fetch("release a slot", q.RELEASE_SLOT, params)) == 1

    async def break_slots(self, name: str, token: int | None) -> int:
        params = {"ns": self._ns, "name": name, "token": token, "channel": self._channel}
        rows = await self._fetch("break slots", q.BREAK_SLOTS, params)
        return max(1, int(rows[0][0])) if rows else 0

    async def list_slots(self, name: str) -> list[LeaseInfo]:
        rows = await self._fetch("list slots", q.LIST_SLOTS, {"ns": self._ns, "name": name})
        return [LeaseInfo(name, str(r[0]), int(r[1]), int(r[2]) / _US) for r in rows]

    # -- recurring job metadata ----------------------------------------------------------

    async def get_job_metadata(self, key: str) -> JobMetadataRecord:
        rows = await self._fetch("read job metadata", q.GET_METADATA, {"ns": self._ns, "key": key})
        last, paused, triggered, now = rows[0]
        return JobMetadataRecord(
            None if last is None else int(last), int(now), bool(paused), bool(triggered)
        )

    async def register_recurring_job(
        self, key: str, instance: str, schedule: str, next_run_us: int | None, ttl: float
    ) -> None:
        params = {
            "ns": self._ns,
            "key": key,
            "instance": instance,
            "schedule": schedule,
            "next_run_us": next_run_us,
            "ttl_us": int(ttl * _US),
        }
        await self._rowcount("register a recurring job", q.REGISTER_RECURRING, params)

    async def unregister_recurring_job(self, key: str, instance: str) -> None:
        params = {"ns": self._ns, "key": key, "instance": instance}
        await self._rowcount("unregister a recurring job", q.UNREGISTER_RECURRING, params)

    async def start_job_run(self, key: str, lease_name: str, owner: str, token: int) -> bool:
        params = {"ns": self._ns, "key": key, "lease": lease_name, "owner": owner, "token": token}
        return await self._rowcount("start a recurring job's run", q.START_RUN, params) == 1

    async def set_job_finished(
        self,
        key: str,
        lease_name: str,
        owner: str,
        token: int,
        outcome: str,
        error: str | None,
    ) -> bool:
        params = {
            "ns": self._ns,
            "key": key,
            "lease": lease_name,
            "owner": owner,
            "token": token,
            "outcome": outcome,
            "error": error,
        }
        return int((await self._fetch("write job metadata", q.SET_FINISHED, params))[0][0]) == 1

    async def control_recurring_job(self, key: str, action: str) -> bool:
        params = {"ns": self._ns, "key": key, "action": action, "channel": self._channel}
        rows = await self._fetch(f"{action} a recurring job", q.CONTROL_RECURRING, params)
        found = len(rows) == 1
        if found:
            self._local_change(job_channel(key))
        return found

    async def list_recurring_jobs(self) -> list[RecurringJobRecord]:
        rows = await self._fetch("list recurring jobs", q.LIST_RECURRING, {"ns": self._ns})
        return [
            RecurringJobRecord(
                str(r[0]),
                str(r[1]),
                bool(r[2]),
                bool(r[3]),
                _int_or_none(r[4]),
                _int_or_none(r[5]),
                r[6],
                r[7],
                _int_or_none(r[8]),
                int(r[9]),
            )
            for r in rows
        ]

    # -- one-shot jobs -------------------------------------------------------------------

    async def put_jobs(self, jobs: Sequence[NewJob]) -> None:
        if not jobs:
            return
        keys = [job.key for job in jobs]
        params: dict[str, Any] = {
            "ns": self._ns,
            "first_us": min(job.run_at_us for job in jobs),
            "channel": self._channel,
            "keys": keys,
            "run_ats": [job.run_at_us for job in jobs],
            "props": [job.props_json for job in jobs],
            "bys": [job.scheduled_by for job in jobs],
            "traces": [job.trace for job in jobs],
        }
        if len(jobs) == 1:
            query = q.PUT_JOB
            params |= {
                "key": jobs[0].key,
                "prop": jobs[0].props_json,
                "by": jobs[0].scheduled_by,
                "trace": jobs[0].trace,
            }
        else:
            query = q.PUT_JOBS

        async def put(conn: Any) -> bool:
            try:
                # One statement, so all or nothing: a duplicate key (or a failed job's
                # key) stores none.
                row = await (await conn.execute(query, params)).fetchone()
                if row is not None and int(row[0]) == len(jobs):
                    return True
            except psycopg.errors.UniqueViolation:
                pass
            async with conn.transaction():
                inserted = (await conn.execute(q.PUT_JOBS_IF_ABSENT, params)).rowcount
                rows = await (await conn.execute(q.STORED_JOBS, params)).fetchall()
                stored: dict[str, tuple[int, str] | None] = {
                    str(r[0]): (int(r[1]), str(r[2])) for r in rows
                }
                failed = await (await conn.execute(q.FAILED_AMONG, params)).fetchall()
                stored.update((str(r[0]), None) for r in failed)
                duplicate = conflicting_job(jobs, stored)
                if duplicate is not None:
                    raise DuplicateJobError(duplicate)  # rolls the transaction back
                if inserted:
                    await conn.execute(q.NOTIFY_JOBS, params)
                return bool(inserted)

        if await self._run("store one-shot jobs", put):
            self._local_change(JOBS_CHANNEL)

    async def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]:
        params = {"ns": self._ns, "owner": owner, "limit": limit, "ttl_us": int(claim_ttl * _US)}
        rows = await self._fetch("claim due jobs", q.CLAIM_DUE, params)
        return [
            ClaimedJob(
                str(r[0]),
                int(r[1]),
                str(r[2]),
                int(r[3]),
                int(r[4]),
                int(r[5]),
                int(r[6]),
                str(r[7]),
                str(r[8]),
            )
            for r in rows
        ]

    async def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]:
        if not claims:
            return []
        params = {
            "ns": self._ns,
            "owner": owner,
            "keys": [key for key, _ in claims],
            "claims": [claim for _, claim in claims],
            "ttl_us": int(claim_ttl * _US),
        }
        rows = await self._fetch("renew job claims", q.RENEW_CLAIMS, params)
        return [str(r[0]) for r in rows]

    async def complete_job(
        self, key: str, owner: str, claim: int, outcome: str, error: str | None
    ) -> bool:
        params = {
            "ns": self._ns,
            "key": key,
            "owner": owner,
            "claim": claim,
            "outcome": outcome,
            "error": error,
        }
        return int((await self._fetch("complete a job", q.COMPLETE, params))[0][0]) == 1

    async def retry_job(
        self,
        key: str,
        owner: str,
        claim: int,
        delay: float,
        error: str | None,
        count_attempt: bool,
    ) -> bool:
        params = {
            "ns": self._ns,
            "key": key,
            "owner": owner,
            "claim": claim,
            "delay_us": int(delay * _US),
            "error": error,
            "count": count_attempt,
            "channel": self._channel,
        }
        retried = int((await self._fetch("retry a job", q.RETRY_JOB, params))[0][0]) == 1
        if retried:
            self._local_change(JOBS_CHANNEL)
        return retried

    async def fail_job(self, key: str, owner: str, claim: int, error: str) -> bool:
        params = {"ns": self._ns, "key": key, "owner": owner, "claim": claim, "error": error}
        return int((await self._fetch("fail a job", q.FAIL_JOB, params))[0][0]) == 1

    async def list_failed_jobs(self) -> list[FailedJobRecord]:
        rows = await self._fetch("list failed jobs", q.LIST_FAILED, {"ns": self._ns})
        return [
            FailedJobRecord(str(r[0]), int(r[1]), str(r[2]), int(r[3]), str(r[4]), int(r[5]))
            for r in rows
        ]

    async def retry_failed_job(self, key: str) -> bool:
        params = {"ns": self._ns, "key": key, "channel": self._channel}
        rows = await self._fetch("retry a failed job", q.RETRY_FAILED, params)
        retried = int(rows[0][0]) == 1
        if retried:
            self._local_change(JOBS_CHANNEL)
        return retried

    async def recent_runs(self, limit: int) -> list[RunRecord]:
        rows = await self._fetch(
            "list recent runs", q.RECENT_RUNS, {"ns": self._ns, "limit": limit}
        )
        return [
            RunRecord(
                str(r[0]),
                str(r[1]),
                _int_or_none(r[2]),
                _int_or_none(r[3]),
                int(r[4]),
                str(r[5]),
                r[6],
                str(r[7]),
                int(r[8]),
            )
            for r in rows
        ]

    async def cancel_job(self, key: str) -> bool:
        params = {"ns": self._ns, "key": key, "channel": self._channel}
        rows = await self._fetch("cancel a job", q.CANCEL, params)
        if rows:
            self._local_change(JOBS_CHANNEL)
        return bool(rows and rows[0][0])

    async def list_jobs(self) -> list[StoredJob]:
        rows = await self._fetch("list jobs", q.LIST_JOBS, {"ns": self._ns})
        return [StoredJob(str(r[0]), int(r[1]), str(r[2])) for r in rows]

    async def list_jobs_page(
        self, prefix: str, after: str | None, limit: int
    ) -> tuple[list[StoredJob], str | None]:
        # Resume after ``after`` when it is inside the prefix's range (or past its start).
        resume = after is not None and after.encode() >= prefix.encode()
        high = prefix_end(prefix)
        params = {
            "ns": self._ns,
            "low": after if resume else prefix,
            "high": high,
            "limit": limit,
        }
        statement = q.LIST_JOBS_PAGE[resume, high is not None]
        rows = await self._fetch("list jobs", statement, params)
        page = [StoredJob(str(r[0]), int(r[1]), str(r[2])) for r in rows if r[3]]
        return page, (str(rows[-1][0]) if len(rows) == limit else None)

    async def count_jobs(self) -> int:
        rows = await self._fetch("count jobs", q.COUNT_JOBS, {"ns": self._ns})
        return int(rows[0][0])

    async def next_job_delay(self) -> float | None:
        rows = await self._fetch("find the next due job", q.NEXT_DELAY, {"ns": self._ns})
        delay = rows[0][0]
        return None if delay is None else max(0.0, int(delay) / _US)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


async def open_backend(url: str, namespace: str, options: dict[str, Any]) -> PostgresBackend:
    """Open the PostgreSQL store of ``url`` (see :meth:`PostgresBackend.open`)."""
    return await PostgresBackend.open(url, namespace, options)


class _Watchdog:
    """Bounds the operations of a ``with`` block on one connection: if the block outlives
    ``seconds``, a cancel request is sent for the connection's statement and, once it was
    delivered (or after :data:`CANCEL_GRACE`), the connection's socket is shut down:
    libpq sees the connection closed and the waiting driver call fails
    (``StoreUnavailableError``) instead of waiting forever for a server that stopped
    answering. The block fails even if an answer arrives after the expiry: a commit
    whose wait for a synchronous standby the cancel ended is committed on the primary
    alone, which must not count as acknowledged.

    Why cancel first: a backend waiting for a synchronous standby does not notice that
    its client left (nor does one queued behind its row locks), so without the cancel
    every timed-out attempt would leave a server backend behind, holding its locks,
    until the standby returns. The socket is shut down through a duplicate of its
    descriptor taken at the expiry, so a later shutdown never hits a descriptor number
    that the closed connection's socket gave back and another socket reused."""

    __slots__ = ("_conn", "_seconds", "_timer", "_url", "expired")

    def __init__(self, conn: Any, seconds: float, url: str) -> None:
        self._conn = conn
        self._seconds = seconds
        self._url = url
        self.expired = False

    def __enter__(self) -> None:
        self._timer = shim.call_later(self._seconds, self._expire)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        if self.expired and (exc is None or isinstance(exc, psycopg.Error)):
            raise StoreUnavailableError(
                f"PostgreSQL at {self._url} did not answer within {self._seconds:g}s"
                " (socket_timeout); connection dropped"
            ) from exc

    def _expire(self) -> None:
        self.expired = True
        pgconn = self._conn.pgconn
        try:
            fd = os.dup(pgconn.socket)
        except (OSError, psycopg.Error):
            return  # already closed
        cancel = None
        # libpq 17+ only: its cancel connection can be driven without blocking (the
        # older PQcancel blocks, holding the GIL, for as long as a silent server makes
        # it wait); with an older libpq the socket is just shut down.
        if capabilities.has_cancel_safe():
            with contextlib.suppress(psycopg.Error):
                cancel = pgconn.cancel_conn()
        threading.Thread(
            target=_cancel_then_shut_down,
            args=(cancel, fd),
            name="clustersync-postgres-watchdog",
            daemon=True,
        ).start()


def _cancel_then_shut_down(cancel: Any, fd: int) -> None:
    """Send the cancel request (for at most :data:`CANCEL_GRACE`), then shut the socket
    down: shutdown() acts on the socket behind every descriptor of it (here the
    duplicate ``fd``, closed afterwards); libpq's own descriptor stays open until the
    connection is closed, so the waiting call wakes up and reads end-of-file."""
    if cancel is not None:
        try:
            _send_cancel(cancel, shim.monotonic() + CANCEL_GRACE)
        except (psycopg.Error, OSError, ValueError) as exc:
            logger.debug("PostgreSQL cancel request failed: %s", exc)
        finally:
            cancel.finish()
    with contextlib.suppress(OSError), socket.socket(fileno=fd) as sock:
        sock.shutdown(socket.SHUT_RDWR)


def _send_cancel(cancel: Any, deadline: float) -> None:
    """Drive a libpq cancel connection (``PGcancelConn``) until the server took the
    request or ``deadline`` passed, waiting in ``select`` (which releases the GIL)."""
    cancel.start()
    while True:
        status = cancel.poll()
        if status == pq.PollingStatus.OK:
            return
        if status == pq.PollingStatus.FAILED:
            raise psycopg.OperationalError(cancel.get_error_message())
        remaining = deadline - shim.monotonic()
        if remaining <= 0:
            return
        fd = cancel.socket
        if status == pq.PollingStatus.WRITING:
            select.select([], [fd], [], remaining)
        else:
            select.select([fd], [], [], remaining)


def _closed_by_server(conn: Any) -> bool:
    """Whether an idle connection has input waiting or is closed: the server said something
    unprompted, which on an idle connection means it closed it (restart, crash,
    terminated backend)."""
    if conn.closed:
        return True
    try:
        fd = conn.pgconn.socket
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([fd], [], [], 0)[0])
    except (psycopg.Error, OSError, ValueError):
        return True


class _Hosts:
    """The hosts of a (multi-host) URL, and which of them to try first.

    libpq tries the hosts in the URL's order, each for up to ``connect_timeout``: after a
    failover every new connection would first wait for the old primary (a host that is
    down may not refuse, just stay silent). So the host that last accepted a read-write
    session is tried first, then the others in the URL's order."""

    def __init__(
        self, hosts: list[str], ports: list[str], addresses: list[str], sessions: str | None
    ) -> None:
        self.hosts = hosts
        self.ports = ports
        self.addresses = addresses
        #: ``target_session_attrs`` to add (multi-host URLs default to read-write).
        self.sessions = sessions
        self.first = 0

    @classmethod
    def of(cls, params: dict[str, Any], url: str) -> _Hosts:
        """Check the hosts and ports of ``params`` (libpq only checks them when
        connecting: a malformed one is a configuration error)."""

        def invalid(reason: str) -> ConfigurationError:
            return ConfigurationError(f"invalid PostgreSQL URL {redact(url)!r}: {reason}")

        hosts = str(params.get("host") or "").split(",")
        ports = unquote(str(params.get("port") or "")).split(",")
        addresses = str(params.get("hostaddr") or "").split(",")
        for raw in ports:
            port = raw.strip()
            if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
                raise invalid(f"port {port!r} is not a number from 1 to 65535")
        if len(ports) not in (1, len(hosts)):
            raise invalid(f"{len(ports)} ports for {len(hosts)} hosts")
        sessions = params.get("target_session_attrs")
        if sessions in _STANDBY_SESSIONS:
            raise invalid(
                f"target_session_attrs={sessions} may connect to a standby, where the"
                " store cannot write; use read-write (the default with several hosts)"
            )
        if len(hosts) < 2:
            return cls([], [], [], None)
        if sessions == "any":
            raise invalid(
                "target_session_attrs=any may connect to a standby; with several hosts"
                " use read-write (the default) or primary"
            )
        if len(ports) == 1:
            ports = ports * len(hosts)
        if len(addresses) != len(hosts):
            addresses = []
        return cls(hosts, ports, addresses, None if sessions else "read-write")

    def connect_params(self) -> dict[str, str]:
        """Connection parameters overriding the URL's (none for one host)."""
        params: dict[str, str] = {}
        if self.sessions:
            params["target_session_attrs"] = self.sessions
        if self.first:
            order = [self.first, *(i for i in range(len(self.hosts)) if i != self.first)]
            params["host"] = ",".join(self.hosts[i] for i in order)
            params["port"] = ",".join(self.ports[i] for i in order)
            if self.addresses:
                params["hostaddr"] = ",".join(self.addresses[i] for i in order)
        return params

    def connected(self, host: str, port: int) -> None:
        """A connection was made to ``host``:``port``: try it first from now on."""
        for index, (name, number) in enumerate(zip(self.hosts, self.ports, strict=True)):
            if name == host and number in (str(port), ""):
                self.first = index
                return


#: One attempt in psycopg's report of a multi-host connection failure.
_ATTEMPT = re.compile(r"^- host: '([^']*)', port: '([^']*)'.*?: (.*)$")


def _connect_failure(exc: BaseException) -> str:
    """A readable reason for a failed connection: libpq's first line, or with several
    hosts, each host's (``h1:5432: connection refused; h2:5432: server is in hot
    standby mode``)."""
    text = str(exc).strip()
    if not text:
        return repr(exc)
    reasons = []
    for line in text.splitlines():
        attempt = _ATTEMPT.match(line.strip())
        if attempt is not None:
            host, port, reason = attempt.groups()
            reason = reason.rsplit(" failed: ", 1)[-1].removeprefix("connection failed: ")
            reasons.append(f"{host}:{port}: {reason.strip()}")
    return "; ".join(reasons) if len(reasons) > 1 else text.splitlines()[0]


def _url_options(url: str) -> tuple[str, dict[str, str]]:
    """The URL without the store options of its query (``?wakeups=poll``, which libpq
    would reject), and those options."""
    base, question, rest = url.partition("?")
    if not question:
        return url, {}
    query, hash_, fragment = rest.partition("#")
    kept, found = [], {}
    for field_ in query.split("&"):
        name, _, value = field_.partition("=")
        if unquote(name) in _URL_OPTIONS:
            if unquote(name) in found:
                raise ConfigurationError(f"store option {unquote(name)} given twice in the URL")
            found[unquote(name)] = unquote(value)
        else:
            kept.append(field_)
    if not found:
        return url, {}
    rebuilt = base + ("?" + "&".join(kept) if kept else "")
    return rebuilt + (hash_ + fragment if hash_ else ""), found


def _merged_option(name: str, in_url: Any, options: dict[str, Any]) -> list[Any]:
    values = [] if in_url is None else [in_url]
    if name in options:
        values.append(options.pop(name))
    return values


def _bool_option(name: str, in_url: str | None, options: dict[str, Any], default: bool) -> bool:
    """A True/False store option, also accepted in the URL (``?name=true|false``)."""
    values: list[Any] = []
    if in_url is not None:
        if in_url.lower() not in ("true", "false"):
            raise ConfigurationError(
                f"invalid store option: {name} must be true or false in the URL, got {in_url!r}"
            )
        values.append(in_url.lower() == "true")
    values += _merged_option(name, None, options)
    for value in values:
        if not isinstance(value, bool):
            raise ConfigurationError(
                f"invalid store option: {name} must be True or False, got {value!r}"
            )
    if len(set(values)) > 1:
        raise ConfigurationError(f"conflicting {name} settings in the URL and the options")
    return bool(values[0]) if values else default


def _choice_option(
    name: str, in_url: str | None, options: dict[str, Any], choices: tuple[str, ...]
) -> str:
    """A store option that is one of ``choices`` (the first is the default), also
    accepted in the URL."""
    values = _merged_option(name, in_url, options)
    for value in values:
        if value not in choices:
            allowed = " or ".join(repr(choice) for choice in choices)
            raise ConfigurationError(
                f"invalid store option: {name} must be {allowed}, got {value!r}"
            )
    if len(set(values)) > 1:
        raise ConfigurationError(f"conflicting {name} settings in the URL and the options")
    return str(values[0]) if values else choices[0]


async def _close_connection(conn: Any) -> None:
    await conn.close()
