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
waiter also has a deadline, so a lost notification costs latency only.

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
the connection is discarded.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import socket
import weakref
from collections import deque
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from ..._concurrency import aio as shim
from ...exceptions import ConfigurationError, DuplicateJobError, StoreUnavailableError
from ..contract import (
    AcquireResult,
    ClaimedJob,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    RecurringJobRecord,
    StoredJob,
    conflicting_job,
    prefix_end,
)
from ..feed.aio import POLL, ChangeFeed, PushNotifications
from ..options import option_count, option_timeout
from ..registry import redact
from . import sql as q

logger = logging.getLogger("clustersync.postgres")

_US = 1_000_000
#: Idle pooled connections older than this are closed rather than reused (a firewall or
#: NAT may have dropped them silently).
_MAX_IDLE = 300.0
#: Longest wait for an answer on one connection (see the Redis store's).
DEFAULT_SOCKET_TIMEOUT = 5.0


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
    ) -> None:
        self._url = url
        self._prepared_statements = prepared_statements
        self._safe_url = redact(url)
        self._ns = namespace
        self._channel = notify_channel(namespace)
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._feed: ChangeFeed[Any] = ChangeFeed(
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
        prepared = options.pop("prepared_statements", True)
        if not isinstance(prepared, bool):
            raise ConfigurationError(
                f"invalid store option: prepared_statements must be True or False, got {prepared!r}"
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
        _check_ports(str(params.get("port") or ""), url)
        backend = cls(
            url,
            namespace,
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            pool_timeout=pool_timeout,
            max_connections=max_connections,
            prepared_statements=prepared,
        )
        try:
            async with backend._translate("create the schema"), backend._connection() as conn:
                await backend._create_schema(conn)  # also proves the server is reachable
            await backend._feed.start()
        except BaseException:
            await backend.close()
            raise
        return backend

    # -- connection management -----------------------------------------------------------

    async def _connect(self) -> Any:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(1, int(self._connect_timeout)),
                # psycopg prepares a statement on its 5th use on a connection (-40 % time
                # per operation here). Off for a transaction-pooling PgBouncer < 1.22.
                prepare_threshold=5 if self._prepared_statements else None,
            )
            self._connections.add(conn)
            return conn
        except psycopg.OperationalError as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise StoreUnavailableError(
                f"cannot connect to PostgreSQL at {self._safe_url}: {message}"
            ) from exc
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"cannot connect to PostgreSQL at {self._safe_url}: {exc}"
            ) from exc

    async def _create_schema(self, conn: Any) -> None:
        async with self._translate("create the schema"), conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (q.SCHEMA_LOCK_KEY,))
            for statement in q.SCHEMA:
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

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A connection of the pool for one operation (use inside ``_translate``), bounded
        by ``socket_timeout``."""
        conn = await self._checkout()
        watchdog = self._bounded(conn)
        try:
            with watchdog:
                yield conn
        finally:
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
        async with self._translate(action), self._connection() as conn:
            cur = await conn.execute(query, params)
            return list(await cur.fetchall())

    async def _rowcount(self, action: str, query: str, params: dict[str, Any]) -> int:
        async with self._translate(action), self._connection() as conn:
            cur = await conn.execute(query, params)
            return int(cur.rowcount)

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
        """A round trip on the LISTEN connection, bounded by ``socket_timeout``."""
        await self._execute_bounded(conn, "SELECT 1")
        return True

    def after_fork(self) -> bool:
        """In a forked child: the connections are shared with the parent. Each socket is
        replaced, in this process only, by ``/dev/null``, so that nothing the child's
        copies do (libpq's goodbye message when they are finalized) reaches the server
        on the parent's sessions; the store then opens connections of its own."""
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
        await self._feed.close()
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
        params = {
            "ns": self._ns,
            "name": name,
            "owner": owner,
            "token": token,
            "channel": self._channel,
        }
        return len(await self._fetch("release a lease", q.RELEASE, params)) == 1

    async def break_lease(self, name: str) -> bool:
        params = {"ns": self._ns, "name": name, "channel": self._channel}
        return len(await self._fetch("break a lease", q.BREAK, params)) == 1

    async def list_leases(self) -> list[LeaseInfo]:
        rows = await self._fetch("list leases", q.LIST_LEASES, {"ns": self._ns})
        return [LeaseInfo(r[0], r[1], int(r[2]), int(r[3]) / _US) for r in rows]

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
        return await self._rowcount("write job metadata", q.SET_FINISHED, params) == 1

    async def control_recurring_job(self, key: str, action: str) -> bool:
        params = {"ns": self._ns, "key": key, "action": action, "channel": self._channel}
        return len(await self._fetch(f"{action} a recurring job", q.CONTROL_RECURRING, params)) == 1

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
        }
        if len(jobs) == 1:
            query = q.PUT_JOB
            params |= {"key": jobs[0].key, "props": jobs[0].props_json}
        else:
            query = q.PUT_JOBS
        async with self._translate("store one-shot jobs"), self._connection() as conn:
            try:
                # One statement, so all or nothing: a duplicate key stores none.
                await conn.execute(query, params)
                return
            except psycopg.errors.UniqueViolation:
                pass
            params["props"] = [job.props_json for job in jobs]
            async with conn.transaction():
                inserted = (await conn.execute(q.PUT_JOBS_IF_ABSENT, params)).rowcount
                rows = await (await conn.execute(q.STORED_JOBS, params)).fetchall()
                stored = {str(r[0]): (int(r[1]), str(r[2])) for r in rows}
                duplicate = conflicting_job(jobs, stored)
                if duplicate is not None:
                    raise DuplicateJobError(duplicate)  # rolls the transaction back
                if inserted:
                    await conn.execute(q.NOTIFY_JOBS, params)

    async def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]:
        params = {"ns": self._ns, "owner": owner, "limit": limit, "ttl_us": int(claim_ttl * _US)}
        rows = await self._fetch("claim due jobs", q.CLAIM_DUE, params)
        return [ClaimedJob(str(r[0]), int(r[1]), str(r[2]), int(r[3])) for r in rows]

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

    async def complete_job(self, key: str, owner: str, claim: int) -> bool:
        params = {"ns": self._ns, "key": key, "owner": owner, "claim": claim}
        return await self._rowcount("complete a job", q.COMPLETE, params) == 1

    async def cancel_job(self, key: str) -> bool:
        params = {"ns": self._ns, "key": key, "channel": self._channel}
        rows = await self._fetch("cancel a job", q.CANCEL, params)
        return bool(rows and rows[0][0])

    async def list_jobs(self) -> list[StoredJob]:
        rows = await self._fetch("list jobs", q.LIST_JOBS, {"ns": self._ns})
        return [StoredJob(str(r[0]), int(r[1]), str(r[2])) for r in rows]

    async def list_jobs_page(
        self, prefix: str, after: str | None, limit: int
    ) -> tuple[list[StoredJob], str | None]:
        params = {
            "ns": self._ns,
            "prefix": prefix,
            "after": after,
            "high": prefix_end(prefix),
            "limit": limit,
        }
        rows = await self._fetch("list jobs", q.LIST_JOBS_PAGE, params)
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
    ``seconds``, the connection's socket is shut down, libpq sees the connection closed
    and the waiting driver call fails (``StoreUnavailableError``) instead of waiting
    forever for a server that stopped answering. The timer is cancelled (and a shutdown
    under way completed) when the block ends, before the connection can be closed, so
    the descriptor shut down is never one reused by another socket."""

    __slots__ = ("_fd", "_seconds", "_timer", "_url", "expired")

    def __init__(self, conn: Any, seconds: float, url: str) -> None:
        self._fd: int = conn.pgconn.socket
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
        if self.expired and isinstance(exc, psycopg.OperationalError):
            raise StoreUnavailableError(
                f"PostgreSQL at {self._url} did not answer within {self._seconds:g}s"
                " (socket_timeout); connection dropped"
            ) from exc

    def _expire(self) -> None:
        self.expired = True
        # shutdown() acts on the socket behind every descriptor of it (here a duplicate,
        # closed at once); libpq's own descriptor stays open until the connection is
        # closed, so the waiting call wakes up and reads end-of-file.
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(self._fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)


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


def _check_ports(ports: str, url: str) -> None:
    """libpq only checks ports when connecting; a malformed one is a configuration error."""
    for raw in unquote(ports).split(","):
        port = raw.strip()
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigurationError(
                f"invalid PostgreSQL URL {redact(url)!r}: port {port!r} is not a number"
                " from 1 to 65535"
            )


async def _close_connection(conn: Any) -> None:
    await conn.close()
