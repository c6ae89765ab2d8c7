"""PostgreSQL store: options that change how statements are sent, schema migration."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import clustersync as cs
from clustersync.stores.postgres.sql import SCHEMA_VERSION


@pytest.mark.parametrize("prepared", [True, False])
def test_every_operation_works_with_and_without_prepared_statements(
    postgres_server: Any, namespace: str, prepared: bool
) -> None:
    """Prepared statements (psycopg prepares a statement on its 5th use) are on by
    default; ``prepared_statements=False`` is for a transaction-pooling PgBouncer older
    than 1.22. Both run each operation more than 5 times."""
    with cs.open_store(
        postgres_server.url, namespace=namespace, prepared_statements=prepared
    ) as store:
        mutex = cs.Mutex(store, "m")
        tokens: list[int] = []
        for _ in range(7):
            mutex.acquire()
            assert mutex.token is not None
            tokens.append(mutex.token)
            mutex.release()
        assert tokens == sorted(set(tokens))
        scheduler = cs.get_job_once_scheduler(store)
        when = datetime.now(UTC) + timedelta(hours=1)
        for i in range(7):
            scheduler.schedule_once(f"k{i}", when, {"i": i})
        with pytest.raises(cs.DuplicateJobError):
            scheduler.schedule_once("k3", when)
        assert [j.key for j in scheduler.list_scheduled_jobs()] == [f"k{i}" for i in range(7)]
        assert all(scheduler.cancel(f"k{i}") for i in range(7))
        assert scheduler.list_scheduled_jobs() == []


@pytest.mark.parametrize("value", ["false", 0, 1, None])
def test_prepared_statements_must_be_a_bool(
    postgres_server: Any, namespace: str, value: object
) -> None:
    with pytest.raises(cs.ConfigurationError, match="prepared_statements"):
        cs.open_store(postgres_server.url, namespace=namespace, prepared_statements=value)


# -- schema migration ---------------------------------------------------------------------

_V1_LEASES = """CREATE TABLE clustersync_leases (
    ns text NOT NULL, name text NOT NULL, owner text, token bigint NOT NULL,
    expires_us bigint NOT NULL, PRIMARY KEY (ns, name))"""
#: The recurring job metadata of schema versions 1 and 2 (moved by the step to 3).
_V1_JOB_METADATA = """CREATE TABLE clustersync_job_metadata (
    ns text NOT NULL, key text NOT NULL, last_finished_us bigint, PRIMARY KEY (ns, key))"""


def test_a_version_1_store_is_migrated_and_keeps_its_tokens(postgres_server: Any) -> None:
    """A store created by schema version 1 (no waiter mark on leases) gets the column on
    first use by this version, keeps its leases' fencing counters, and works."""
    dbname = f"migrate_{uuid.uuid4().hex[:8]}"
    with postgres_server.socket_connect() as admin:
        admin.execute(f'CREATE DATABASE "{dbname}" OWNER "{postgres_server.user}"')
    url = postgres_server.url.rsplit("/", 1)[0] + "/" + dbname
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE clustersync_schema (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO clustersync_schema (version) VALUES (1)")
        conn.execute(_V1_LEASES)
        conn.execute(_V1_JOB_METADATA)
        conn.execute("INSERT INTO clustersync_leases VALUES ('default', 'm:old', NULL, 41, 0)")
        conn.execute("INSERT INTO clustersync_job_metadata VALUES ('default', 'report', 7)")
    with cs.open_store(url) as store:
        mutex = cs.Mutex(store, "old")
        with mutex:
            assert mutex.token == 42
    with psycopg.connect(url, autocommit=True) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM clustersync_schema")]
        assert sorted(versions) == [1, SCHEMA_VERSION]
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'clustersync_leases'"
        ).fetchall()
        assert ("waiters_until_us",) in columns
    with cs.open_store(url) as store:  # opening a current store again changes nothing
        assert store._ops.list_leases() == []
        assert store._ops.get_job_metadata("report").last_finished_us == 7


def test_a_waiter_woken_as_its_pool_timeout_runs_out_takes_the_connection(
    postgres_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check-in that wakes the first pool waiter just as that waiter's ``pool_timeout``
    runs out used to waste the wake-up: the waiter raised "connections stayed busy"
    while a connection was free, and no other waiter was told. Now it takes it."""
    from clustersync._concurrency import threads
    from clustersync.stores.postgres.sync import PostgresBackend

    backend = PostgresBackend.open(
        postgres_server.url, f"pool-{uuid.uuid4().hex[:8]}", {"max_connections": 1}
    )
    try:
        busy = backend._checkout()  # the only connection

        def wait_until_too_late(waker: Any, timeout: float | None, cancel: Any = None) -> bool:
            backend._checkin(busy)  # the check-in picks this waiter and wakes it...
            return False  # ...just as its wait times out

        with monkeypatch.context() as patched:
            patched.setattr(threads.Waker, "wait", wait_until_too_late)
            conn = backend._checkout()
        assert conn is busy, "the freed connection went to waste"
        backend._checkin(conn)
    finally:
        backend.close()
