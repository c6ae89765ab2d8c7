"""The high-availability topologies of ``tests/topologies.py`` with the raw drivers
(redis-py's ``Sentinel`` and ``RedisCluster``, psycopg): replication, each failover
helper, the multi-host PostgreSQL URL, synchronous commits, PgBouncer's transaction
pooling. Shared (session) topologies for the tests that leave them as they are; private
ones for the destructive tests. Timings are printed (``pytest -s`` shows them)."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
from redis.cluster import ClusterNode as RedisPyClusterNode
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from tests import servers, topologies
from tests.servers import PgBouncerServer, PostgresServer, ServerBinaryMissing, ServerStarter
from tests.topologies import (
    CLUSTER_SLOTS,
    PostgresReplicated,
    RedisClusterTopology,
    RedisSentinel,
    Topology,
    TopologyStarter,
    start_topology_or_skip,
)

#: Each topology must start well within this (the target is < 10 s on 2 cores).
STARTUP_BUDGET = 20.0


def _report(name: str, topology: Topology) -> None:
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in topology.timings.items())
    print(f"\n[{name}] start-up {topology.startup_seconds:.2f} s; {timings or 'no failover'}")


def _key() -> str:
    return f"k-{uuid.uuid4().hex[:12]}"


def _sentinel(topology: RedisSentinel) -> Sentinel:
    return Sentinel(
        topology.sentinel_addresses,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        decode_responses=True,
    )


def _cluster(topology: RedisClusterTopology) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[
            RedisPyClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in topology.startup_nodes
        ],
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        decode_responses=True,
    )


def _assert_closed(topology: Topology) -> None:
    for server in topology.servers:
        assert not server.running
        assert server._base is None or not server._base.exists()


# -- Redis Sentinel ----------------------------------------------------------------------


def test_sentinel_replicates_and_reports_the_master(redis_sentinel: RedisSentinel) -> None:
    topology = redis_sentinel
    _report("sentinel", topology)
    assert topology.startup_seconds < STARTUP_BUDGET
    ports = ",".join(f"127.0.0.1:{port}" for _, port in topology.sentinel_addresses)
    assert topology.url == f"redis+sentinel://{ports}/mymaster/0"
    assert len(topology.sentinels) == 3
    assert len(topology.nodes) == 2

    sentinel = _sentinel(topology)
    assert sentinel.discover_master("mymaster") == topology.master_address()
    assert sentinel.discover_slaves("mymaster") == [topology.replicas[0].address]
    key = _key()
    with sentinel.master_for("mymaster") as master:
        assert master.set(key, "v1")
    topology.wait_replicated()
    with sentinel.slave_for("mymaster") as replica:
        assert replica.get(key) == "v1"
        with pytest.raises(redis.ReadOnlyError):
            replica.set(key, "v2")
    # The nodes answer DEBUG (enabled for freeze_master).
    with topology.master.client() as client:
        assert client.execute_command("DEBUG", "SLEEP", "0") == "OK"


@pytest.mark.slow
def test_sentinel_failover_moves_the_master_and_keeps_the_data(
    private_topology: TopologyStarter,
) -> None:
    topology = private_topology(RedisSentinel())
    sentinel = _sentinel(topology)
    old = topology.master_address()
    keys = [_key() for _ in range(50)]
    with sentinel.master_for("mymaster") as master:
        for key in keys:
            master.set(key, key)
    topology.wait_replicated()

    elapsed = topology.failover()  # Sentinel itself demotes the old master (~10 s)
    _report("sentinel failover", topology)
    assert topology.timings["failover_new_master"] < 5.0
    assert elapsed < 20.0
    new = topology.master_address()
    assert new != old
    assert topology.node_at(new).role()[0] == "master"
    old_role = topology.node_at(old).role()
    assert old_role[:4] == ["slave", new[0], new[1], "connected"]

    # A new client finds the new master, with the data, and writes there.
    assert _sentinel(topology).discover_master("mymaster") == new
    with _sentinel(topology).master_for("mymaster") as master:
        assert master.mget(keys) == keys
        assert master.set("after-failover", "1")
    topology.wait_replicated()
    with topology.node_at(old).client() as client:
        assert client.get("after-failover") == "1"

    # A quick failover back, the old master demoted by the helper (no 10 s wait).
    assert topology.failover(demote_old_master=True) < 10.0
    _report("sentinel failover, demoted by the helper", topology)
    assert topology.master_address() == old


@pytest.mark.slow
def test_sentinel_kill_master_promotes_the_replica(private_topology: TopologyStarter) -> None:
    topology = private_topology(RedisSentinel())
    old = topology.master_address()
    with _sentinel(topology).master_for("mymaster") as master:
        master.set("before-kill", "1")
    topology.wait_replicated()

    elapsed = topology.kill_master()
    assert elapsed < 25.0  # ~2-3 s; a split vote of the sentinels retries after 6 s
    new = topology.master_address()
    assert new != old
    assert not topology.node_at(old).running
    with _sentinel(topology).master_for("mymaster") as master:
        assert master.get("before-kill") == "1"
        assert master.set("after-kill", "2")

    topology.restart_old_master()
    _report("sentinel kill", topology)
    assert topology.master_address() == new
    topology.wait_replicated()
    with topology.node_at(old).client() as client:
        assert client.execute_command("ROLE")[0] == "slave"
        assert client.get("after-kill") == "2"  # resynced from the new master

    # The sentinels can fail over again, back to the restarted node.
    topology.kill_master()
    assert topology.master_address() == old
    with _sentinel(topology).master_for("mymaster") as master:
        assert master.get("after-kill") == "2"


@pytest.mark.slow
def test_sentinel_frozen_master_is_replaced_and_loses_its_late_writes(
    private_topology: TopologyStarter,
) -> None:
    topology = private_topology(RedisSentinel())
    old = topology.master
    freeze = topology.freeze_master(5.0)
    promoted_after = topology.wait_for_new_master(old.address)
    new = topology.master
    freeze.join()
    woke_after = time.monotonic() - freeze.started_at
    print(f"\n[sentinel freeze 5 s] new master after {promoted_after:.2f} s")
    assert new is not old

    # Awake, the old master still believes it is a master and accepts writes, which
    # Sentinel discards when it reconfigures it as a replica (~10 s later).
    assert old.role()[0] == "master"
    with old.client() as client:
        assert client.set("split-brain-write", "lost")
    demoted_after = topology.wait_for_stable()
    print(f"[sentinel freeze] old master demoted {demoted_after:.2f} s after it woke up")
    assert old.role()[:4] == ["slave", *new.address, "connected"]
    topology.wait_replicated()
    for node in (old, new):
        with node.client() as client:
            assert client.get("split-brain-write") is None
    assert woke_after >= 5.0


# -- Redis Cluster -----------------------------------------------------------------------


def test_cluster_covers_all_slots_with_a_replica_per_master(
    redis_cluster: RedisClusterTopology,
) -> None:
    topology = redis_cluster
    _report("cluster", topology)
    assert topology.startup_seconds < STARTUP_BUDGET
    seeds = ",".join(f"127.0.0.1:{port}" for _, port in topology.startup_nodes[:3])
    assert topology.url == f"redis+cluster://{seeds}"
    with _cluster(topology) as client:
        shards = client.execute_command("CLUSTER SHARDS")
        slots = client.cluster_slots()
    covered = sorted(slot for (low, high) in slots for slot in range(low, high + 1))
    assert covered == list(range(CLUSTER_SLOTS))
    assert len(slots) == 3
    for info in slots.values():
        assert len(info["replicas"]) == 1  # listed once their offset is not 0
        assert info["primary"][0] == "127.0.0.1"  # addresses are reported as given
    assert len(shards) == 3
    masters = topology.masters()
    assert len(masters) == 3
    for master in masters:
        assert len(topology.replicas_of(master)) == 1


def test_cluster_writes_reach_the_replicas(redis_cluster: RedisClusterTopology) -> None:
    topology = redis_cluster
    keys = [_key() for _ in range(100)]
    with _cluster(topology) as client:
        for key in keys:
            client.set(key, key)
    topology.wait_replicated()
    # Each key is on the replica of its master (READONLY lets a replica answer reads).
    for key in keys[:10]:
        replica = topology.replicas_of(topology.master_of(key))[0]
        with replica.client() as node:
            node.execute_command("READONLY")
            assert node.get(key) == key
    masters = {topology.master_of(key).port for key in keys}
    assert len(masters) == 3  # 100 random keys spread over the three masters


@pytest.mark.slow
def test_cluster_failover_swaps_master_and_replica(private_topology: TopologyStarter) -> None:
    topology = private_topology(RedisClusterTopology())
    key = _key()
    client = _cluster(topology)
    keys = [f"{{{key}}}:{i}" for i in range(20)]  # one hash slot
    for k in keys:
        client.set(k, k)
    topology.wait_replicated()
    old_master = topology.master_of(key)
    replica = topology.replicas_of(old_master)[0]

    elapsed = topology.failover(key)
    assert elapsed < 10.0
    assert topology.master_of(key) is replica
    assert old_master.role()[:2] == ["slave", "127.0.0.1"]
    assert int(old_master.role()[2]) == replica.port
    # The client, whose slot map is now stale, follows the MOVED redirection.
    assert client.mget(keys) == keys
    assert client.set(keys[0], "after-failover")

    elapsed = topology.kill_master_of(key)
    assert elapsed < 15.0
    assert topology.master_of(key) is old_master
    assert client.get(keys[0]) == "after-failover"
    topology.restart_killed()
    _report("cluster failover, kill, restart", topology)
    assert topology.replicas_of(old_master) == [replica]
    client.close()


@pytest.mark.slow
def test_cluster_frozen_master_is_replaced(private_topology: TopologyStarter) -> None:
    topology = private_topology(RedisClusterTopology())
    key = _key()
    with _cluster(topology) as client:
        client.set(key, "v")
    topology.wait_replicated()
    freeze = topology.freeze_master_of(key, 5.0)
    old = freeze.node
    promoted_after = topology.wait_for_new_master_of(key, old)
    freeze.join()
    settled_after = topology.wait_for_stable()
    print(
        f"\n[cluster freeze 5 s] new master after {promoted_after:.2f} s, "
        f"old one a replica {settled_after:.2f} s after it woke up"
    )
    assert topology.master_of(key) is not old
    assert old.role()[0] == "slave"  # it learnt the new configuration from the bus
    with _cluster(topology) as client:
        assert client.get(key) == "v"


# -- PostgreSQL primary + standby --------------------------------------------------------


def _server_port(url: str) -> tuple[int, bool]:
    """(port, in recovery) of the server a connection to ``url`` lands on."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


def test_postgres_standby_replays_the_primary(postgres_replicated: PostgresReplicated) -> None:
    topology = postgres_replicated
    _report("postgres async", topology)
    assert topology.startup_seconds < STARTUP_BUDGET
    p1, p2 = topology.ports
    assert topology.url == (
        f"postgresql://clustersync:{topology.password}@127.0.0.1:{p1},127.0.0.1:{p2}"
        "/clustersync_test?target_session_attrs=read-write"
    )
    assert _server_port(topology.url) == (p1, False)
    table = f"t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(topology.url) as conn:
        conn.execute(f"CREATE TABLE {table} (v int)")
        conn.execute(f"INSERT INTO {table} SELECT generate_series(1, 100)")
    topology.wait_replicated()
    standby = topology.standby
    assert standby is not None
    with psycopg.connect(standby.url) as conn:
        row = conn.execute(f"SELECT count(*), pg_is_in_recovery() FROM {table}").fetchone()
        assert row == (100, True)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute(f"INSERT INTO {table} VALUES (0)")
    (state,) = topology.replication_state()
    assert state["state"] == "streaming"
    assert state["sync_state"] == "async"


def test_postgres_sync_commit_is_on_the_standby_when_it_returns(
    postgres_sync_replicated: PostgresReplicated,
) -> None:
    topology = postgres_sync_replicated
    _report("postgres sync", topology)
    assert topology.startup_seconds < STARTUP_BUDGET
    (state,) = topology.replication_state()
    assert state["sync_state"] == "sync"
    standby = topology.standby
    assert standby is not None
    table = f"t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(topology.url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (v int)")
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    # synchronous_commit=on: the standby has flushed the commit (replay may lag).
    with psycopg.connect(standby.url) as conn:
        flushed = conn.execute(
            "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", (row[0],)
        ).fetchone()
    assert flushed == (True,)


@pytest.mark.slow
def test_postgres_multi_host_url_follows_a_failover(private_topology: TopologyStarter) -> None:
    topology = private_topology(PostgresReplicated())
    p1, p2 = topology.ports
    assert _server_port(topology.url) == (p1, False)
    with psycopg.connect(topology.url) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (1)")
    topology.wait_replicated()

    topology.kill_primary()
    # The standby is still in recovery: no host accepts a read-write session.
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(topology.url, connect_timeout=5).close()
    print(f"\n[postgres] multi-host URL with no primary: {refused.value}")
    assert re.search(r"read-only|hot standby", str(refused.value))

    promoted_after = topology.promote_standby()
    assert promoted_after < 10.0
    assert _server_port(topology.url) == (p2, False)
    with psycopg.connect(topology.url) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]
        conn.execute("INSERT INTO t VALUES (2)")

    # A new standby on the old primary's port: the URL still finds the primary on P2.
    topology.rebuild_standby()
    topology.wait_replicated()
    assert topology.standby is not None
    assert topology.standby.port == p1
    assert _server_port(topology.url) == (p2, False)
    with psycopg.connect(topology.standby.url) as conn:
        assert conn.execute("SELECT v FROM t ORDER BY v").fetchall() == [(1,), (2,)]

    # And back: the failover helper (kill + promote) returns to P1.
    elapsed = topology.failover()
    _report("postgres async failover", topology)
    assert elapsed < 10.0
    assert _server_port(topology.url) == (p1, False)


@pytest.mark.slow
def test_postgres_sync_commit_blocks_while_the_standby_is_down(
    private_topology: TopologyStarter,
) -> None:
    topology = private_topology(PostgresReplicated(synchronous=True))
    standby = topology.standby
    assert standby is not None
    notices: list[str] = []
    with psycopg.connect(topology.primary.url) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("CREATE TABLE t (v int)")
        conn.commit()

        standby.stop()
        conn.execute("INSERT INTO t VALUES (1)")
        # statement_timeout would not help: PostgreSQL disarms it before the commit.
        conn.execute("SET statement_timeout = '200ms'")
        canceller = threading.Timer(1.5, conn.cancel_safe)
        began = time.monotonic()
        canceller.start()
        try:
            conn.commit()
        finally:
            canceller.cancel()
        blocked = time.monotonic() - began
        print(f"\n[postgres sync] commit without the standby returned after {blocked:.2f} s")
        # The commit waited for the standby until the cancel request ended the wait:
        # PostgreSQL then warns, and the transaction stays committed locally.
        assert blocked >= 1.4
        assert notices == ["canceling wait for synchronous replication due to user request"]
        assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]
        conn.execute("RESET statement_timeout")
        conn.commit()

        standby.start()
        topology.wait_streaming()
        began = time.monotonic()
        conn.execute("INSERT INTO t VALUES (2)")
        conn.commit()
        assert time.monotonic() - began < 1.0
        assert len(notices) == 1
    topology.wait_replicated()
    with psycopg.connect(standby.url) as conn:
        assert conn.execute("SELECT v FROM t ORDER BY v").fetchall() == [(1,), (2,)]


@pytest.mark.slow
def test_postgres_sync_failover_and_rebuild(private_topology: TopologyStarter) -> None:
    topology = private_topology(PostgresReplicated(synchronous=True))
    p1, p2 = topology.ports
    with psycopg.connect(topology.url) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (1)")
    # No wait_replicated(): a synchronous commit is on the standby when it returns.
    topology.failover()
    with psycopg.connect(topology.url) as conn:
        assert conn.execute("SELECT inet_server_port(), v FROM t").fetchall() == [(p2, 1)]
    topology.rebuild_standby()
    _report("postgres sync failover", topology)
    (state,) = topology.replication_state()
    assert state["sync_state"] == "sync"
    standby = topology.standby
    assert standby is not None
    assert standby.port == p1


# -- PgBouncer ---------------------------------------------------------------------------


def test_pgbouncer_transaction_pooling_runs_simple_queries(
    pgbouncer: PgBouncerServer, postgres_server: PostgresServer
) -> None:
    print(f"\n[pgbouncer] start-up {pgbouncer.startup_seconds:.2f} s")
    assert pgbouncer.url == postgres_server.url.replace(
        f":{postgres_server.port}/", f":{pgbouncer.port}/"
    )
    table = f"t_{uuid.uuid4().hex[:8]}"
    # prepare_threshold=None: no server-side prepared statements (see the test below).
    with psycopg.connect(pgbouncer.url, prepare_threshold=None) as conn:
        conn.execute(f"CREATE TABLE {table} (v int)")
        conn.commit()
        for i in range(10):
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (i,))
        conn.commit()
        assert conn.execute(f"SELECT sum(v) FROM {table}").fetchone() == (45,)
        port = conn.execute("SELECT inet_server_port()").fetchone()
        assert port == (postgres_server.port,)
    with psycopg.connect(
        pgbouncer.admin_url, autocommit=True, cursor_factory=psycopg.ClientCursor
    ) as admin:
        cur = admin.execute("SHOW POOLS")
        names = [column.name for column in cur.description or []]
        pools = {row[names.index("database")]: row for row in cur.fetchall()}
    assert pools[postgres_server.dbname][names.index("pool_mode")] == "transaction"
    if os.geteuid() == 0:  # PgBouncer refuses root: it runs as postgres (or nobody)
        status = Path(f"/proc/{pgbouncer.pid}/status").read_text()
        uid = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
        assert uid is not None
        assert int(uid.group(1)) != 0


def test_pgbouncer_transaction_pooling_loses_listen_notify(
    private_server: ServerStarter, postgres_server: PostgresServer
) -> None:
    """Observed with PgBouncer 1.18: a ``LISTEN`` sent through PgBouncer subscribes the
    server connection it ran on, which goes back to the pool. A notification arriving
    while that connection is idle is dropped (PgBouncer logs "got packet 'A' from server
    when not linked"); one arriving while another client's transaction holds it is
    delivered to *that* client. The listening client never gets any."""
    # One server connection: every client shares it, which makes the routing certain.
    bouncer = private_server(PgBouncerServer(postgres_server, pool_size=1))
    channel = f"ch_{uuid.uuid4().hex[:8]}"
    with (
        psycopg.connect(bouncer.url, autocommit=True, prepare_threshold=None) as listener,
        psycopg.connect(bouncer.url, autocommit=True, prepare_threshold=None) as other,
        psycopg.connect(postgres_server.url, autocommit=True) as direct,
    ):
        listener.execute(f"LISTEN {channel}")
        direct.execute(f"NOTIFY {channel}, 'while idle'")
        assert list(listener.notifies(timeout=1.0, stop_after=1)) == []
        wait_until_logged(bouncer, "got packet 'A' from server when not linked")

        with other.transaction():
            other.execute("SELECT 1")
            direct.execute(f"NOTIFY {channel}, 'during a transaction'")
        leaked = list(other.notifies(timeout=1.0, stop_after=1))
        assert [n.payload for n in leaked] == ["during a transaction"]
        assert list(listener.notifies(timeout=1.0, stop_after=1)) == []


def wait_until_logged(server: servers.ManagedServer, text: str) -> None:
    topologies.wait_until(lambda: text in server.log_tail(20000), timeout=5.0, what=text)


def test_pgbouncer_transaction_pooling_breaks_prepared_statements(
    private_server: ServerStarter, postgres_server: PostgresServer
) -> None:
    """psycopg's prepared statements (``prepare_threshold``, default 5; 0 here: at once)
    are named per client connection (``_pg3_0``, ...) but live on the server connection:
    in transaction mode the next transaction may run on a server connection where that
    name is another client's statement. PgBouncer 1.18 does not track them (1.21+ can,
    with ``max_prepared_statements``). Clients must use ``prepare_threshold=None``."""
    bouncer = private_server(
        PgBouncerServer(postgres_server, pool_size=2, settings={"server_round_robin": "0"})
    )
    with (
        psycopg.connect(bouncer.url, autocommit=True, prepare_threshold=0) as first,
        psycopg.connect(bouncer.url, autocommit=True, prepare_threshold=0) as second,
    ):
        first.execute("SELECT 1")  # _pg3_0 on server connection A
        with first.transaction():  # holds A
            first.execute("SELECT 2")
            # _pg3_0 of the second client, on server connection B
            assert second.execute("SELECT %s::int", (1,)).fetchone() == (1,)
        # A was released last: the second client's next transaction runs there (LIFO),
        # where _pg3_0 is the first client's "SELECT 1".
        with pytest.raises(psycopg.Error, match="_pg3_0"):
            second.execute("SELECT %s::int", (2,))


# -- the machinery -----------------------------------------------------------------------


def test_missing_redis_cli_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing() -> str:
        raise ServerBinaryMissing(f"redis-cli is missing; run {servers.INSTALL_SCRIPT}")

    monkeypatch.setattr(topologies, "find_redis_cli", missing)
    monkeypatch.setenv("CI", "true")
    topology = RedisClusterTopology()
    with pytest.raises(ServerBinaryMissing):
        start_topology_or_skip(topology)
    _assert_closed(topology)
    monkeypatch.delenv("CI")
    topology = RedisClusterTopology()
    with pytest.raises(pytest.skip.Exception, match=re.escape(servers.INSTALL_SCRIPT)):
        start_topology_or_skip(topology)
    _assert_closed(topology)


def test_missing_pgbouncer_names_the_install_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(servers, "SBIN_PATH", str(tmp_path))
    with pytest.raises(ServerBinaryMissing, match=re.escape(servers.INSTALL_SCRIPT)):
        servers.find_pgbouncer()


def test_a_failed_start_closes_what_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """A topology that fails half-way (here: the cluster is never created) leaves no
    process and no directory behind."""

    pids: list[int] = []

    def broken_wait(self: RedisClusterTopology, timeout: float | None = None) -> float:
        pids.extend(server.pid or 0 for server in self.servers)
        raise topologies.TopologyError("no cluster today")

    monkeypatch.setattr(RedisClusterTopology, "wait_for_stable", broken_wait)
    topology = RedisClusterTopology()
    with pytest.raises(topologies.TopologyError, match="no cluster today"):
        start_topology_or_skip(topology)
    assert len(pids) == 6
    assert all(pids)
    assert not any(servers._group_alive(pid) for pid in pids)
    _assert_closed(topology)
