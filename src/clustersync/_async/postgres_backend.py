"""PostgreSQL store (``postgresql://`` / ``postgres://``): a cluster on the database you run.

Every operation is one SQL statement in autocommit (``INSERT … ON CONFLICT … WHERE
expired``, owner-checked ``UPDATE``/``DELETE … RETURNING``, ``FOR UPDATE SKIP LOCKED``
to claim due jobs), except storing a batch of one-shot jobs, which is one statement in a
transaction so that a duplicate stores nothing. Expiry is judged by the server's
``clock_timestamp()``. The schema is created on first use under a transaction-scoped
advisory lock and versioned in ``clustersync_schema`` for later migrations. See
:mod:`clustersync.backends.postgres_sql`.

Wake-ups: releases and job changes ``pg_notify`` a per-namespace channel; each store
object ``LISTEN``s on a dedicated connection opened before ``open_store`` returns. Every
waiter also has a deadline, so a lost notification costs latency only.

Failure modes: psycopg errors and pool timeouts become ``StoreUnavailableError`` (cause
kept). The listening connection reconnects with backoff and then wakes every waiter to
recheck. Committed one-shot jobs survive server restarts and crashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .. import _aioshim as shim
from .._core.backoff import Backoff
from ..backends import postgres_sql as q
from ..backends.base import (
    ANY_CHANNEL,
    AcquireResult,
    ChangeListener,
    ClaimedJob,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    StoredJob,
)
from ..backends.urls import redact
from ..exceptions import ConfigurationError, DuplicateJobError, StoreUnavailableError

logger = logging.getLogger("clustersync.postgres")

_US = 1_000_000
#: How often the LISTEN reader checks whether the store was closed.
_LISTEN_POLL = 0.1


def notify_channel(namespace: str) -> str:
    """The NOTIFY channel of a namespace (an identifier of at most 63 bytes)."""
    return "clustersync_" + hashlib.sha1(namespace.encode()).hexdigest()[:32]


class PostgresBackend:
    """Lease and job operations on one namespace of a PostgreSQL database."""

    def __init__(self, pool: Any, url: str, namespace: str, connect_timeout: float) -> None:
        self._pool = pool
        self._url = url
        self._safe_url = redact(url)
        self._ns = namespace
        self._channel = notify_channel(namespace)
        self._connect_timeout = connect_timeout
        self._listener: ChangeListener | None = None
        self._listen_conn: Any = None
        self._reader: shim.Task | None = None
        self._closed = False

    @classmethod
    async def open(cls, url: str, namespace: str, options: dict[str, Any]) -> PostgresBackend:
        options = dict(options)
        connect_timeout = float(options.pop("connect_timeout", 5.0))
        pool_timeout = float(options.pop("pool_timeout", 10.0))
        max_connections = int(options.pop("max_connections", 10))
        if options:
            raise ConfigurationError(
                f"unknown option(s) for the postgres store: {', '.join(sorted(options))}"
            )
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"invalid PostgreSQL URL {redact(url)!r}: {exc}") from exc
        pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=pool_timeout,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, int(connect_timeout)),
                # Prepared statements do not survive a transaction-pooling PgBouncer.
                "prepare_threshold": None,
            },
            name="clustersync",
        )
        backend = cls(pool, url, namespace, connect_timeout)
        try:
            await backend._listen()  # connects first: proves the server is reachable
            await pool.open(wait=False)
        except BaseException:
            await backend.close()
            raise
        return backend

    # -- connection management -----------------------------------------------------------

    async def _connect(self) -> Any:
        try:
            return await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
            )
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
            if version is None:
                await conn.execute(
                    "INSERT INTO clustersync_schema (version) VALUES (%s)", (q.SCHEMA_VERSION,)
                )
            elif version > q.SCHEMA_VERSION:
                raise ConfigurationError(
                    f"PostgreSQL store {self._safe_url} has schema version {version}, newer "
                    f"than this clustersync understands ({q.SCHEMA_VERSION}); upgrade"
                )

    @contextlib.asynccontextmanager
    async def _translate(self, action: str) -> AsyncIterator[None]:
        """The one boundary where psycopg errors become StoreUnavailableError."""
        if self._closed:
            raise StoreUnavailableError(f"store {self._safe_url} is closed")
        try:
            yield
        except PoolTimeout as exc:
            raise StoreUnavailableError(
                f"PostgreSQL at {self._safe_url}: no connection available to {action} ({exc})"
            ) from exc
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"PostgreSQL at {self._safe_url} failed to {action}: {exc}"
            ) from exc

    async def _fetch(self, action: str, query: str, params: dict[str, Any]) -> list[Any]:
        async with self._translate(action), self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return list(await cur.fetchall())

    async def _rowcount(self, action: str, query: str, params: dict[str, Any]) -> int:
        async with self._translate(action), self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return int(cur.rowcount)

    # -- notifications -------------------------------------------------------------------

    async def _listen(self) -> None:
        conn = await self._connect()
        try:
            await self._create_schema(conn)
            async with self._translate("listen for changes"):
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            await conn.close()
            raise
        self._listen_conn = conn
        self._reader = shim.spawn(self._read_notifications, name="clustersync-pg-listen")

    async def _read_notifications(self) -> None:
        backoff = Backoff(cap=2.0)
        while not self._closed:
            conn = self._listen_conn
            try:
                if conn is None:
                    conn = await self._connect()
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self._listen_conn = conn
                    self._notify(ANY_CHANNEL)  # notifications may have been missed meanwhile
                async for notice in conn.notifies(timeout=_LISTEN_POLL):
                    self._notify(notice.payload)
                backoff.reset()
            except (psycopg.Error, StoreUnavailableError, OSError) as exc:
                if self._closed:
                    return
                delay = backoff.next_delay()
                logger.warning(
                    "PostgreSQL LISTEN connection lost; retrying in %.2fs: %s", delay, exc
                )
                self._listen_conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                self._notify(ANY_CHANNEL)
                await shim.sleep(delay)

    def _notify(self, channel: str) -> None:
        listener = self._listener
        if listener is not None:
            listener(channel)

    def set_listener(self, listener: ChangeListener | None) -> None:
        self._listener = listener

    def set_watch_interval(self, seconds: float | None) -> None:
        """Nothing to poll: changes arrive by LISTEN/NOTIFY."""

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listener = None
        reader = self._reader
        if reader is not None and not shim.in_task(reader):
            shim.cancel_task(reader)
            await shim.join(reader, 2 * _LISTEN_POLL + 1)
        conn = self._listen_conn
        self._listen_conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
        with contextlib.suppress(Exception):
            await self._pool.close()

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

    async def list_leases(self) -> list[LeaseInfo]:
        rows = await self._fetch("list leases", q.LIST_LEASES, {"ns": self._ns})
        return [LeaseInfo(r[0], r[1], int(r[2]), int(r[3]) / _US) for r in rows]

    # -- recurring job metadata ----------------------------------------------------------

    async def get_job_metadata(self, key: str) -> JobMetadataRecord:
        rows = await self._fetch("read job metadata", q.GET_METADATA, {"ns": self._ns, "key": key})
        last, now = rows[0]
        return JobMetadataRecord(None if last is None else int(last), int(now))

    async def set_job_finished(self, key: str, lease_name: str, owner: str, token: int) -> bool:
        params = {"ns": self._ns, "key": key, "lease": lease_name, "owner": owner, "token": token}
        return await self._rowcount("write job metadata", q.SET_FINISHED, params) == 1

    # -- one-shot jobs -------------------------------------------------------------------

    async def put_jobs(self, jobs: Sequence[NewJob]) -> None:
        if not jobs:
            return
        keys = [job.key for job in jobs]
        params = {
            "ns": self._ns,
            "keys": keys,
            "run_ats": [job.run_at_us for job in jobs],
            "props": [job.props_json for job in jobs],
            "channel": self._channel,
        }
        async with self._translate("store one-shot jobs"), self._pool.connection() as conn:
            inserted = 0
            async with conn.transaction():
                cur = await conn.execute(q.PUT_JOBS, params)
                row = await cur.fetchone()
                inserted = int(row[0]) if row else 0
                if inserted != len(jobs):
                    raise psycopg.Rollback()  # all or nothing: a duplicate stores none
            if inserted == len(jobs):
                return
            cur = await conn.execute(q.EXISTING_KEYS, {"ns": self._ns, "keys": keys})
            existing = {str(r[0]) for r in await cur.fetchall()}
        raise DuplicateJobError(_first_duplicate(keys, existing))

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

    async def next_job_delay(self) -> float | None:
        rows = await self._fetch("find the next due job", q.NEXT_DELAY, {"ns": self._ns})
        delay = rows[0][0]
        return None if delay is None else max(0.0, int(delay) / _US)


def _first_duplicate(keys: Sequence[str], existing: set[str]) -> str:
    seen: set[str] = set()
    for key in keys:
        if key in existing or key in seen:
            return key
        seen.add(key)
    return keys[0]
