"""PostgreSQL high availability: multi-host URLs, failovers that lose the last writes, a
primary set read-only for a switchover, a synchronous standby that is away.

Each failover test takes a private :class:`~tests.topologies.PostgresReplicated` (a
primary and a streaming standby; the store's URL is their libpq multi-host URL). The
multi-process failovers under the safety checker are in
``tests/reliability/test_postgres_failover.py``; the conformance and contract suites run
on the ``postgres-multihost`` target (``tests/conftest.py``).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import clustersync as cs
from clustersync.stores.postgres.aio import CANCEL_GRACE, _connect_failure, _url_options
from clustersync.stores.registry import redact
from tests.servers import PostgresServer
from tests.test_server_failures import handoff_latency, wait_until, when_available
from tests.topologies import PostgresReplicated, TopologyStarter

HOUR = timedelta(hours=1)


def new_namespace() -> str:
    return f"ha-{uuid.uuid4().hex[:10]}"


def detach_standby(topology: PostgresReplicated) -> None:
    """Stop the standby's WAL streaming (an empty ``primary_conninfo``): from now on the
    primary's writes never reach it, as if replication lagged at the moment of a crash."""
    standby = topology.standby
    assert standby is not None
    with standby.socket_connect() as conn:
        conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
        conn.execute("SELECT pg_reload_conf()")

    def stopped() -> bool:
        with standby.socket_connect() as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_wal_receiver").fetchone()
        return row == (0,)

    wait_until(stopped, "the standby's WAL receiver stopped", 10)


# -- URLs (no server) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://app:s3cret@db1:5432,db2:5433/app?target_session_attrs=read-write",
            "postgresql://app:***@db1:5432,db2:5433/app?target_session_attrs=read-write",
        ),
        ("postgresql://app:s3cret@[::1]:5432,db2/app", "postgresql://app:***@[::1]:5432,db2/app"),
        ("postgresql://app@db1,db2/app", "postgresql://app@db1,db2/app"),
        (
            "postgresql:///app?host=/run/pg&password=s3cret",
            "postgresql:///app?host=/run/pg&password=***",
        ),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("sqlite:////var/lib/app/cluster.db", "sqlite:////var/lib/app/cluster.db"),
    ],
)
def test_redact_hides_passwords_and_keeps_every_host(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:p@h1:5432,h2:x/db", "port 'x' is not a number"),
        ("postgresql://u:p@h1:5432,h2:70000/db", "port '70000' is not a number"),
        ("postgresql://u:p@h1/db?port=1,2,3&host=a,b", "3 ports for 2 hosts"),
        ("postgresql://u:p@h1,h2/db?target_session_attrs=any", "target_session_attrs=any"),
        ("postgresql://u:p@h1/db?target_session_attrs=standby", "may connect to a standby"),
        ("postgresql://u:p@h1/db?wakeups=push", "wakeups must be 'listen' or 'poll'"),
        ("postgresql://u:p@h1/db?prepared_statements=no", "prepared_statements must be true"),
        ("postgresql://u:p@h1/db?wakeups=poll&wakeups=poll", "given twice"),
    ],
)
def test_malformed_multi_host_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(cs.ConfigurationError, match=message) as info:
        cs.open_store(url)
    assert "p@" not in str(info.value), "the password leaked"


def test_store_options_in_the_url_are_taken_out_of_it() -> None:
    assert _url_options("postgresql://u@h/db?wakeups=poll&sslmode=require#x") == (
        "postgresql://u@h/db?sslmode=require#x",
        {"wakeups": "poll"},
    )
    assert _url_options("postgresql://u@h/db?prepared_statements=false") == (
        "postgresql://u@h/db",
        {"prepared_statements": "false"},
    )
    assert _url_options("postgresql://u@h/db?sslmode=require") == (
        "postgresql://u@h/db?sslmode=require",
        {},
    )
    with pytest.raises(cs.ConfigurationError, match="conflicting wakeups"):
        cs.open_store("postgresql://u@h/db?wakeups=poll", wakeups="listen")


def test_a_failed_multi_host_connection_names_each_host() -> None:
    error = psycopg.OperationalError(
        'connection failed: connection to server at "10.0.0.2", port 5433 failed: session'
        " is read-only\nMultiple connection attempts failed. All failures were:\n"
        "- host: 'db1', port: '5432', hostaddr: '10.0.0.1': connection failed: connection"
        ' to server at "10.0.0.1", port 5432 failed: Connection refused\n'
        "- host: 'db2', port: '5433', hostaddr: '10.0.0.2': connection failed: connection"
        ' to server at "10.0.0.2", port 5433 failed: session is read-only'
    )
    assert _connect_failure(error) == (
        "db1:5432: Connection refused; db2:5433: session is read-only"
    )
    assert _connect_failure(psycopg.OperationalError("one\ntwo")) == "one"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a host that is down behind a
    network that does not refuse: libpq waits its whole ``connect_timeout``)."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield server.getsockname()[1]


def test_the_host_that_answered_last_is_tried_first(
    postgres_server: PostgresServer, silent_port: int
) -> None:
    """After a failover libpq would try the dead host first on every new connection, for
    ``connect_timeout`` each (2 s at least): the store tries the last good host first."""
    good = postgres_server.port
    url = postgres_server.url.replace(f":{good}/", f":{silent_port},127.0.0.1:{good}/")
    began = time.monotonic()
    with cs.open_store(url, namespace=new_namespace(), connect_timeout=2) as store:
        opened = time.monotonic() - began
        assert opened >= 1.9, "the silent host was not tried first"
        assert opened < 4.0, "the LISTEN connection waited for the silent host too"
        backend: Any = store._ops
        for _ in range(3):
            backend.drop_idle_connections()
            began = time.monotonic()
            assert store._ops.now_us() > 0
            assert time.monotonic() - began < 1.0


# -- failovers ----------------------------------------------------------------------------------


def test_a_failover_that_lost_the_last_writes_never_hands_a_token_out_again(
    private_topology: TopologyStarter,
) -> None:
    """Asynchronous replication: the standby misses the last writes (here everything: it
    stopped streaming before the store was even opened), then the primary is killed and
    the standby promoted. The lost lease's holder learns it at its next renewal; the next
    acquisition gets a token above the lost one (max(previous + 1, clock): the new
    primary's row still says "never acquired"); the lost schema is created again; the
    job scheduled is gone."""
    topology = private_topology(PostgresReplicated())
    detach_standby(topology)
    namespace = new_namespace()
    lost_at: list[float] = []
    with cs.open_store(topology.url, namespace=namespace) as store:
        mutex = cs.Mutex(store, "m", ttl=2.0, on_lost=lambda: lost_at.append(time.monotonic()))
        assert mutex.acquire(blocking=False)
        lost_token = mutex.token
        assert lost_token is not None
        scheduler = cs.get_job_once_scheduler(store)
        scheduler.schedule_once("acknowledged-then-lost", datetime.now(UTC) + HOUR)

        topology.kill_primary()
        killed_at = time.monotonic()
        topology.promote_standby()
        # The renewal (every ttl/3) finds no schema, creates it, then finds no lease.
        wait_until(lambda: bool(lost_at), "on_lost", 5)
        assert lost_at[0] - killed_at < 2.0, "told later than the lease's local deadline"
        assert not mutex.locked()
        with pytest.raises(cs.LockLostError):
            mutex.release()

        with cs.open_store(topology.url, namespace=namespace) as other:
            taker = cs.Mutex(other, "m", ttl=5.0)
            assert taker.acquire(timeout=5)
            assert taker.token is not None
            assert taker.token > lost_token, "a token of the lost write was handed out again"
            taker.release()
            assert cs.get_job_once_scheduler(other).list_scheduled_jobs() == []
        assert mutex.acquire(timeout=5)
        assert mutex.token is not None
        assert mutex.token > lost_token
        mutex.release()


def test_a_primary_set_read_only_sends_every_connection_to_the_promoted_standby(
    private_topology: TopologyStarter,
) -> None:
    """A switchover that fences the old primary (``default_transaction_read_only``) and
    leaves it running: pooled connections meet "read-only transaction" and the
    statement is sent again on a new connection, which libpq opens on the new primary;
    the LISTEN connection notices at its next ping and moves too."""
    topology = private_topology(PostgresReplicated())
    old, new = topology.ports
    namespace = new_namespace()
    with (
        cs.open_store(topology.url, namespace=namespace) as store,
        cs.open_store(topology.url, namespace=namespace) as other,
    ):
        scheduler = cs.get_job_once_scheduler(store)
        mutex = cs.Mutex(store, "m")
        for i in range(3):  # pooled connections on the old primary
            with mutex:
                scheduler.schedule_once(f"before-{i}", datetime.now(UTC) + HOUR)
        topology.wait_replicated()
        with topology.primary.socket_connect() as admin:
            admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            admin.execute("SELECT pg_reload_conf()")
        topology.promote_standby()

        began = time.monotonic()
        with mutex:  # no error: retried on the new primary
            scheduler.schedule_once("after", datetime.now(UTC) + HOUR)
        assert time.monotonic() - began < 2.0
        listed = [job.key for job in scheduler.list_scheduled_jobs()]
        assert listed == ["before-0", "before-1", "before-2", "after"]
        backend: Any = store._ops
        feed = backend._feed
        wait_until(lambda: feed._conn is not None and feed._conn.info.port == new, "LISTEN", 15)
        assert handoff_latency(other, store, "handoff") < 1.0
    assert old != new


def test_a_commit_waiting_for_an_absent_synchronous_standby_is_cancelled(
    private_topology: TopologyStarter,
) -> None:
    """Synchronous replication with the standby away: a commit waits for it however long
    (``statement_timeout`` does not end that wait), and a backend whose client gave up
    stays stuck, holding its row locks. The store's ``socket_timeout`` fails the call,
    and its cancel request ends the server's wait: nothing is left behind (without the
    cancel, every attempt left a backend waiting). The write then stands on the primary
    alone and was reported as failed (an unknown outcome)."""
    topology = private_topology(PostgresReplicated(synchronous=True))
    standby = topology.standby
    assert standby is not None
    with cs.open_store(topology.url, namespace=new_namespace(), socket_timeout=1.0) as store:
        ops = store._ops
        token = ops.acquire_lease("m:a", "owner", 60.0).token
        assert token is not None
        standby.stop()
        for _ in range(3):
            began = time.monotonic()
            with pytest.raises(cs.StoreUnavailableError, match="did not answer within 1s"):
                ops.renew_lease("m:a", "owner", token, 60.0)
            assert time.monotonic() - began < 1.0 + CANCEL_GRACE + 1.0

        def stuck() -> list[Any]:
            with topology.primary.socket_connect() as admin:
                return admin.execute(
                    "SELECT pid, wait_event FROM pg_stat_activity"
                    " WHERE datname = %s AND wait_event IN ('SyncRep', 'transactionid', 'tuple')",
                    (topology.dbname,),
                ).fetchall()

        wait_until(lambda: not stuck(), "no backend left waiting", 5)
        standby.start()
        topology.wait_streaming()
        assert when_available(lambda: ops.renew_lease("m:a", "owner", token, 60.0))
