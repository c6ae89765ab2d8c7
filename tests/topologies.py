"""High-availability topologies for the test suite, built of the private servers of
``tests/servers.py`` (free loopback ports, temporary directories, process groups killed
at exit, a missing binary skips locally and fails in CI):

* :class:`RedisSentinel`: a master, a replica and three sentinels (quorum 2) monitoring
  ``mymaster``; ``url`` is ``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster/0``.
* :class:`RedisClusterTopology`: six cluster nodes, three masters with a replica each;
  ``url`` is ``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`` (seed nodes).
* :class:`PostgresReplicated`: a primary and a streaming standby (asynchronous, or
  synchronous with ``synchronous=True``); ``url`` is a libpq multi-host URL with
  ``target_session_attrs=read-write``.
* :class:`~tests.servers.PgBouncerServer` (in ``tests/servers.py``): PgBouncer in
  transaction-pooling mode in front of a :class:`~tests.servers.PostgresServer`.

Every topology is a context manager (start on enter, close on exit); ``startup_seconds``
says how long ``start()`` took and ``timings`` how long each failover helper took. All the
Redis nodes run with ``--enable-debug-command yes`` (``DEBUG SLEEP`` freezes one) and
``--repl-diskless-sync-delay 0`` (a replica's first sync does not wait 5 s).

Fixtures (register them in a conftest, as ``tests/conftest.py`` does):

* ``redis_sentinel``, ``redis_cluster``, ``postgres_replicated``,
  ``postgres_sync_replicated`` and ``pgbouncer`` are **session-scoped and shared: a test
  must leave them as it found them** (no failover, no kill, no freeze, no stopped node;
  isolate data with unique keys). They are for tests that only read and write.
* A destructive test (failover, kill, freeze, stopping a node) takes a **private**
  topology, closed when the test ends::

      topology = private_topology(RedisSentinel())
      topology.kill_master()

Facts the library implementer should know are in each class's docstring.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import pytest

from tests.servers import (
    INSTALL_SCRIPT,
    LOOPBACK,
    STARTUP_TIMEOUT,
    ManagedServer,
    PgBouncerServer,
    PostgresServer,
    RedisServer,
    ServerBinaryMissing,
    ServerStartError,
    free_port,
    in_ci,
)

if TYPE_CHECKING:
    from types import TracebackType

    import redis

#: (host, port) of a server.
Address = tuple[str, int]

#: How long a helper waits for a topology to settle (failover, promotion, sync).
WAIT_TIMEOUT = 30.0
#: The service name the sentinels monitor.
SENTINEL_SERVICE = "mymaster"
#: The number of hash slots of a Redis Cluster.
CLUSTER_SLOTS = 16384
#: The PostgreSQL role that streams WAL to the standbys.
REPLICATION_USER = "replicator"

#: Options of every Redis node of a topology.
REDIS_NODE_ARGS = (
    "--enable-debug-command", "yes",  # DEBUG SLEEP (Redis 7 disables DEBUG by default)
    "--repl-diskless-sync-delay", "0",  # a replica's full sync starts at once (default 5 s)
    # The master pings its replicas through the replication stream every second (default
    # 10 s): their offsets leave 0 at once, and a cluster replica whose offset is still 0
    # counts as "loading" (left out of CLUSTER SLOTS, health "loading" in CLUSTER SHARDS).
    "--repl-ping-replica-period", "1",
)  # fmt: skip


class TopologyError(RuntimeError):
    """A topology did not reach the state a helper waits for (the message says which)."""


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors of a node that is down, starting, or busy: a wait tries again."""
    errors: list[type[BaseException]] = [OSError]
    with contextlib.suppress(ImportError):
        import redis.exceptions

        errors.append(redis.exceptions.RedisError)
    with contextlib.suppress(ImportError):
        import psycopg

        errors.append(psycopg.Error)
    return tuple(errors)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    describe: Callable[[], str] | None = None,
    interval: float = 0.05,
) -> float:
    """Call ``check`` until it returns true; return the seconds it took. A driver or socket
    error counts as "not yet". After ``timeout`` s raise :class:`TopologyError` naming
    ``what``, the last error and ``describe()`` (the state seen)."""
    began = time.monotonic()
    deadline = began + timeout
    transient = _transient_errors()
    last_error: BaseException | None = None
    while True:
        try:
            if check():
                return time.monotonic() - began
            last_error = None
        except transient as exc:
            last_error = exc
        if time.monotonic() > deadline:
            detail = f"; last error: {last_error!r}" if last_error is not None else ""
            state = ""
            if describe is not None:
                try:
                    state = "\n" + describe()
                except transient as exc:
                    state = f"\n(state unknown: {exc!r})"
            raise TopologyError(
                f"timed out after {timeout:.0f} s waiting for {what}{detail}{state}"
            )
        time.sleep(interval)


class Topology:
    """Servers started together; ``close()`` closes them all (also at exit, through the
    servers' own clean-up). ``start()`` closes whatever it started if it fails."""

    kind = "topology"

    def __init__(
        self, *, startup_timeout: float = STARTUP_TIMEOUT, wait_timeout: float = WAIT_TIMEOUT
    ) -> None:
        self.startup_timeout = startup_timeout
        self.wait_timeout = wait_timeout
        self.servers: list[ManagedServer] = []
        #: Seconds the last ``start()`` took (every server started and the topology settled).
        self.startup_seconds = 0.0
        #: Seconds each helper took, by helper name (the last call of each).
        self.timings: dict[str, float] = {}
        self._started = False
        self._freezes: list[Freeze] = []

    def __repr__(self) -> str:
        ports = ",".join(str(server.port) for server in self.servers)
        return f"<{type(self).__name__} {ports}>"

    def start(self) -> None:
        if self._started:
            raise RuntimeError(f"{self!r} was already started")
        self._started = True
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.monotonic() - began

    def close(self) -> None:
        """Stop every server and remove their directories. A node still frozen is killed
        at once (a sleeping Redis handles SIGTERM only when it wakes up)."""
        for freeze in self._freezes:
            if not freeze.done:
                with contextlib.suppress(Exception):
                    freeze.node.kill()
        for server in reversed(self.servers):
            with contextlib.suppress(Exception):
                server.close()
        for freeze in self._freezes:
            freeze.thread.join(timeout=1.0)

    def __enter__(self) -> Self:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- for subclasses ---------------------------------------------------------------

    def _start(self) -> None:
        raise NotImplementedError

    def _add(self, server: ServerT) -> ServerT:
        """Start ``server`` as part of this topology (closed with it)."""
        self.servers.append(server)
        server.start()
        return server

    def _wait(
        self,
        check: Callable[[], bool],
        what: str,
        *,
        timeout: float | None = None,
        describe: Callable[[], str] | None = None,
    ) -> float:
        return wait_until(
            check,
            timeout=self.wait_timeout if timeout is None else timeout,
            what=f"{what} ({self!r})",
            describe=describe,
        )


ServerT = TypeVar("ServerT", bound=ManagedServer)
TopologyT = TypeVar("TopologyT", bound=Topology)


# -- Redis -----------------------------------------------------------------------------


def redis_client(address: Address, *, timeout: float = 2.0) -> redis.Redis:
    """A redis-py client of one node (strings decoded, no retries: a dead node fails at
    once instead of after redis-py's default backoff)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        host=address[0],
        port=address[1],
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries=0),
        decode_responses=True,
    )


def _command(address: Address, *args: str | int, timeout: float = 2.0) -> Any:
    """Run one command on a node and close the connection (the raw reply: the arguments
    are passed separately so that redis-py applies no reply parser)."""
    with redis_client(address, timeout=timeout) as client:
        return client.execute_command(*args)


def _as_dict(reply: Any) -> dict[str, Any]:
    """A Redis map reply: a dict (RESP3) or a flat [key, value, ...] list (RESP2)."""
    if isinstance(reply, dict):
        return {str(k): v for k, v in reply.items()}
    items = list(reply)
    return {str(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _info(address: Address, section: str) -> dict[str, str]:
    """``INFO section`` (as redis-py parses it), values as strings."""
    with redis_client(address) as client:
        info = client.info(section)
    return {str(name): str(value) for name, value in info.items()}


def find_redis_cli() -> str:
    """The ``redis-cli`` binary on PATH (Debian: package redis-tools)."""
    found = shutil.which("redis-cli")
    if found is None:
        raise ServerBinaryMissing(
            f"redis-cli is not installed (not on PATH); run {INSTALL_SCRIPT} to install it"
        )
    return found


class RedisNode(RedisServer):
    """A ``redis-server`` of a topology: ``DEBUG`` enabled, no delay before a full sync,
    and a replica of ``replicaof`` (host, port) when given (read at each start)."""

    def __init__(
        self,
        *,
        replicaof: Address | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        super().__init__(
            extra_args=[*REDIS_NODE_ARGS, *extra_args], port=port, startup_timeout=startup_timeout
        )
        self.replicaof = replicaof

    @property
    def address(self) -> Address:
        return (LOOPBACK, self.port)

    def client(self, *, timeout: float = 2.0) -> redis.Redis:
        return redis_client(self.address, timeout=timeout)

    def role(self) -> list[Any]:
        """The reply of ``ROLE``: ``["master", offset, [[ip, port, offset], ...]]`` or
        ``["slave", master_ip, master_port, state, offset]``."""
        return list(_command(self.address, "ROLE"))

    def info(self, section: str = "replication") -> dict[str, str]:
        return _info(self.address, section)

    def _argv(self) -> list[str]:
        argv = super()._argv()
        if self.replicaof is not None:
            argv += ["--replicaof", self.replicaof[0], str(self.replicaof[1])]
        return argv


class Freeze:
    """A node frozen by ``DEBUG SLEEP seconds`` on a connection of a background thread
    (the node answers nobody, not even the cluster bus or the sentinels, until it ends)."""

    def __init__(self, node: RedisNode, seconds: float) -> None:
        self.node = node
        self.seconds = seconds
        self.error: BaseException | None = None
        self.started_at = time.monotonic()
        self._sent = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"freeze-{node.port}", daemon=True)
        self.thread.start()
        # DEBUG SLEEP is sent (the node freezes a few ms later, when it reads it).
        self._sent.wait(timeout=5.0)

    def _run(self) -> None:
        try:
            with self.node.client(timeout=self.seconds + 30.0) as client:
                client.ping()
                conn = client.connection_pool.get_connection()
                try:
                    conn.send_command("DEBUG", "SLEEP", str(self.seconds))
                    self._sent.set()
                    conn.read_response()
                finally:
                    client.connection_pool.release(conn)
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self._sent.set()

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the node answered ``DEBUG SLEEP`` (it is awake again); re-raise the
        error of the thread if there was one (e.g. the node was killed while asleep)."""
        self.thread.join(timeout=self.seconds + 30.0 if timeout is None else timeout)
        if self.thread.is_alive():
            raise TopologyError(f"node {self.node.port} still frozen after {self.seconds} s")
        if self.error is not None:
            raise self.error


class SentinelServer(RedisServer):
    """A Redis Sentinel (``redis-server CONFIG --sentinel``) monitoring one master. Its
    configuration file is in its directory: a sentinel rewrites it with what it learns."""

    kind = "sentinel"

    def __init__(
        self,
        *,
        master: Address,
        service_name: str = SENTINEL_SERVICE,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.master = master
        self.service_name = service_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    @property
    def address(self) -> Address:
        return (LOOPBACK, self.port)

    @property
    def config_path(self) -> str:
        return str(self.base_dir / "sentinel.conf")

    def client(self, *, timeout: float = 2.0) -> redis.Redis:
        return redis_client(self.address, timeout=timeout)

    def _prepare(self) -> None:
        super()._prepare()
        name = self.service_name
        lines = [
            f"port {self.port}",
            f"bind {LOOPBACK}",
            "daemonize no",
            'logfile ""',
            f"dir {self.data_dir}",
            f"sentinel monitor {name} {self.master[0]} {self.master[1]} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        with open(self.config_path, "w") as config:
            config.write("\n".join(lines) + "\n")

    def _argv(self) -> list[str]:
        return [self.binary, self.config_path, "--sentinel"]


class RedisSentinel(Topology):
    """A Redis master, one replica (``replicaof``) and three sentinels monitoring
    ``service_name`` with quorum 2, ``down-after-milliseconds`` 1000 and
    ``failover-timeout`` 3000 by default.

    What a client sees:

    * The sentinels report addresses as ``127.0.0.1`` and the port (the master's as given
      to ``sentinel monitor``, the replicas' as the master's ``INFO`` lists them): a
      client can connect to them as they are.
    * ``SENTINEL GET-MASTER-ADDR-BY-NAME`` changes as soon as a sentinel has promoted the
      replica (``+switch-master``); the other sentinels follow within about a second.
    * An old master that is still alive (``SENTINEL FAILOVER``, or a frozen master waking
      up) stays a writable master until a sentinel reconfigures it as a replica, which
      Sentinel does only once the instance has reported the wrong role for 8 s
      (``4 * SENTINEL_PUBLISH_PERIOD``), checked when its ``INFO`` is refreshed (every
      10 s): about 10-11 s after the switch here. Writes sent to it in that window are
      lost when it resyncs from the new master. A redis-py ``Sentinel.master_for`` client
      connected before the failover keeps writing there without any error (measured:
      every write of the ~11 s between the promotion and the demotion acknowledged and
      lost); it rediscovers the master only when its connection breaks or the node
      answers ``READONLY``. A kill, by contrast, gives ~1 s of ``ConnectionError`` then
      ~1 s of ``MasterNotFoundError`` (the sentinels report the master down) and no loss
      of acknowledged writes once replicated.
    * Right after a switch, a sentinel may mark the new master down within
      ``down-after-milliseconds`` (seen once in about 15 runs, the sentinel that had not
      led the failover, its link to the new master just created) and, counting the other
      sentinels' "down" answers about the *old* master, reach ``o_down`` at once and fail
      over again: to the old master if it is back as a replica by then. So the master can
      change twice in a row; ``wait_for_stable()`` waits until the state has held for
      ``down-after-milliseconds`` + 0.5 s, and ``kill_master()`` waits for that too.
    * What the sentinels report about a replica (``SENTINEL REPLICAS``: role,
      ``master-link-status``) comes from its ``INFO``, refreshed every 10 s (every second
      during a failover): it lags behind ``ROLE`` on the node itself.
    * Replication is asynchronous: a write acknowledged by the master may be missing on the
      promoted replica (``WAIT 1 timeout`` narrows the window, ``wait_replicated()`` is
      the helper the tests use before a failover).
    """

    kind = "redis-sentinel"

    def __init__(
        self,
        *,
        service_name: str = SENTINEL_SERVICE,
        quorum: int = 2,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        startup_timeout: float = STARTUP_TIMEOUT,
        wait_timeout: float = WAIT_TIMEOUT,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, wait_timeout=wait_timeout)
        self.service_name = service_name
        self.quorum = quorum
        self.sentinel_count = sentinels
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.nodes: list[RedisNode] = []
        self.sentinels: list[SentinelServer] = []
        self._killed: RedisNode | None = None

    # -- addresses ----------------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[Address]:
        return [sentinel.address for sentinel in self.sentinels]

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster/0``."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)
        return f"redis+sentinel://{hosts}/{self.service_name}/0"

    def master_address(self) -> Address:
        """The master's address, as the first sentinel that answers reports it."""
        errors: list[str] = []
        for sentinel in self.sentinels:
            try:
                address = self._sentinel_master(sentinel)
            except _transient_errors() as exc:
                errors.append(f"{sentinel.port}: {exc!r}")
                continue
            if address is not None:
                return address
            errors.append(f"{sentinel.port}: no master")
        raise TopologyError(f"no sentinel reports a master for {self.service_name}: {errors}")

    def node_at(self, address: Address) -> RedisNode:
        for node in self.nodes:
            if node.address == address:
                return node
        raise TopologyError(f"no node of {self!r} at {address}")

    @property
    def master(self) -> RedisNode:
        """The node the sentinels report as master."""
        return self.node_at(self.master_address())

    @property
    def replicas(self) -> list[RedisNode]:
        """The running nodes other than the master."""
        master = self.master
        return [node for node in self.nodes if node is not master and node.running]

    # -- start ------------------------------------------------------------------------

    def _start(self) -> None:
        master = self._add(RedisNode(startup_timeout=self.startup_timeout))
        self.nodes.append(master)
        replica = self._add(
            RedisNode(replicaof=master.address, startup_timeout=self.startup_timeout)
        )
        self.nodes.append(replica)
        # The replica is attached before the sentinels start: their first INFO of the
        # master lists it (the next one would come 10 s later).
        self._wait(lambda: self._replica_synced(replica, master), "the replica's first sync")
        for _ in range(self.sentinel_count):
            sentinel = SentinelServer(
                master=master.address,
                service_name=self.service_name,
                quorum=self.quorum,
                down_after_ms=self.down_after_ms,
                failover_timeout_ms=self.failover_timeout_ms,
                startup_timeout=self.startup_timeout,
            )
            self.sentinels.append(self._add(sentinel))
        self.wait_for_stable()

    # -- state ------------------------------------------------------------------------

    def _sentinel_master(self, sentinel: SentinelServer) -> Address | None:
        reply = _command(sentinel.address, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        if not reply:
            return None
        return (str(reply[0]), int(reply[1]))

    @staticmethod
    def _replica_synced(replica: RedisNode, master: RedisNode) -> bool:
        role = replica.role()
        return (
            role[0] == "slave"
            and (str(role[1]), int(role[2])) == master.address
            and role[3] == "connected"
        )

    def _stable(self) -> bool:
        addresses = {self._sentinel_master(sentinel) for sentinel in self.sentinels}
        if len(addresses) != 1:
            return False
        address = addresses.pop()
        if address is None:
            return False
        master = self.node_at(address)
        if not master.running or master.role()[0] != "master":
            return False
        live_replicas = [node for node in self.nodes if node is not master and node.running]
        if not all(self._replica_synced(node, master) for node in live_replicas):
            return False
        for sentinel in self.sentinels:
            state = _as_dict(_command(sentinel.address, "SENTINEL", "MASTER", self.service_name))
            if state.get("flags") != "master":  # no s_down, o_down, failover_in_progress
                return False
            if int(state.get("num-other-sentinels", 0)) != self.sentinel_count - 1:
                return False
            replicas = {
                int(entry["port"]): entry
                for entry in map(
                    _as_dict,
                    _command(sentinel.address, "SENTINEL", "REPLICAS", self.service_name),
                )
            }
            for node in live_replicas:
                entry = replicas.get(node.port)
                # Only what the sentinels see by pinging: the replica fields that come from
                # its INFO (role, master-link-status, master-port) are refreshed every 10 s.
                if entry is None:
                    return False
                flags = set(str(entry.get("flags", "")).split(","))
                if "slave" not in flags or flags & {"s_down", "o_down", "disconnected"}:
                    return False
        return True

    def describe(self) -> str:
        """The state as each sentinel and node sees it (for error messages)."""
        lines = []
        for sentinel in self.sentinels:
            try:
                state = _as_dict(
                    _command(sentinel.address, "SENTINEL", "MASTER", self.service_name)
                )
                summary = {k: state.get(k) for k in ("ip", "port", "flags", "num-slaves")}
                summary["num-other-sentinels"] = state.get("num-other-sentinels")
                lines.append(f"sentinel {sentinel.port}: {summary}")
            except _transient_errors() as exc:
                lines.append(f"sentinel {sentinel.port}: {exc!r}")
        for node in self.nodes:
            try:
                lines.append(f"node {node.port}: ROLE {node.role()}")
            except _transient_errors() as exc:
                lines.append(f"node {node.port}: {exc!r}")
        return "\n".join(lines)

    def wait_for_stable(self, timeout: float | None = None) -> float:
        """Wait until every sentinel reports the same master, sees the other sentinels,
        no failover in progress and each running replica linked; the master answers
        ``ROLE`` as master and every running replica is connected to it; and all of that
        has held for ``down_after_ms`` + 0.5 s: right after a switch a sentinel may still
        mark the new master down (see the class docstring)."""
        settle = self.down_after_ms / 1000 + 0.5
        since: list[float] = []

        def settled() -> bool:
            if not self._stable():
                since.clear()
                return False
            if not since:
                since.append(time.monotonic())
            return time.monotonic() - since[0] >= settle

        return self._wait(
            settled, "a stable sentinel topology", timeout=timeout, describe=self.describe
        )

    def wait_replicated(self, timeout: float | None = None) -> float:
        """Wait until every running replica has the master's replication offset of now."""
        master = self.master
        offset = int(master.info()["master_repl_offset"])

        def caught_up() -> bool:
            for replica in self.replicas:
                info = replica.info()
                if info.get("master_link_status") != "up":
                    return False
                if int(info.get("slave_repl_offset", -1)) < offset:
                    return False
            return True

        return self._wait(caught_up, "the replicas to catch up", timeout=timeout)

    def wait_for_new_master(self, old: Address, timeout: float | None = None) -> float:
        """Wait until every sentinel reports a master other than ``old`` that answers
        ``ROLE`` as master."""

        def promoted() -> bool:
            addresses = {self._sentinel_master(sentinel) for sentinel in self.sentinels}
            if len(addresses) != 1:
                return False
            address = addresses.pop()
            if address is None or address == old:
                return False
            return bool(self.node_at(address).role()[0] == "master")

        return self._wait(
            promoted, f"a master other than {old}", timeout=timeout, describe=self.describe
        )

    # -- failures ---------------------------------------------------------------------

    def failover(self, *, demote_old_master: bool = False, timeout: float | None = None) -> float:
        """``SENTINEL FAILOVER``: wait until the sentinels report the replica as master,
        then until the old master is its replica. Sentinel itself reconfigures the old
        master about 10 s after the switch (see the class docstring);
        ``demote_old_master=True`` sends it ``REPLICAOF`` at once instead (as an operator
        would), for a failover of 1-2 s. Return the seconds it took; the time to the new
        master alone is ``timings["failover_new_master"]``."""
        self.wait_for_stable()
        old = self.master
        began = time.monotonic()
        _command(self.sentinels[0].address, "SENTINEL", "FAILOVER", self.service_name)
        self.timings["failover_new_master"] = self.wait_for_new_master(old.address, timeout)
        if demote_old_master:
            self.demote_old_masters()
        self.wait_for_stable(timeout)
        elapsed = self.timings["failover"] = time.monotonic() - began
        return elapsed

    def demote_old_masters(self) -> list[RedisNode]:
        """Send ``REPLICAOF <master>`` to every running node other than the master the
        sentinels report that still answers ``ROLE`` as a master (an old master after a
        failover or a freeze: what Sentinel does by itself some 10 s later). Return them."""
        master = self.master_address()
        demoted = []
        for node in self.nodes:
            if node.running and node.address != master and node.role()[0] == "master":
                _command(node.address, "REPLICAOF", master[0], master[1])
                demoted.append(node)
        return demoted

    def kill_master(self, timeout: float | None = None) -> float:
        """SIGKILL the master, wait until the sentinels have promoted the replica, then
        until the topology is stable; return the seconds from the kill to the new master
        (``timings["kill_master_stable"]``: to the stable topology). The killed node stays
        down (and listed by the sentinels as a replica in ``s_down``) until
        ``restart_old_master()``."""
        self.wait_for_stable()
        old = self.master
        began = time.monotonic()
        old.kill()
        self._killed = old
        elapsed = self.timings["kill_master"] = self.wait_for_new_master(old.address, timeout)
        self.wait_for_stable(timeout)
        self.timings["kill_master_stable"] = time.monotonic() - began
        return elapsed

    def restart_old_master(self, timeout: float | None = None) -> float:
        """Start the node ``kill_master()`` killed, as a replica of the current master (a
        master restarted without persistence must not come back as an empty master), and
        wait until the topology is stable again; return the seconds it took."""
        node = self._killed
        if node is None:
            raise RuntimeError("restart_old_master() without kill_master() before")
        began = time.monotonic()
        node.replicaof = self.master_address()
        node.start()
        self._killed = None
        self.wait_for_stable(timeout)
        elapsed = self.timings["restart_old_master"] = time.monotonic() - began
        return elapsed

    def freeze_master(self, seconds: float) -> Freeze:
        """``DEBUG SLEEP seconds`` on the master, in a background thread; returns at once.
        Longer than ``down_after_ms`` (plus about a second to agree), it makes the
        sentinels fail over; the frozen master wakes up as a master and is reconfigured
        as a replica about 8 s later."""
        freeze = Freeze(self.master, seconds)
        self._freezes.append(freeze)
        return freeze


# -- Redis Cluster ---------------------------------------------------------------------


class ClusterNode(RedisNode):
    """A ``redis-server`` with ``cluster-enabled yes``. The cluster bus listens on its own
    free port (``cluster-port``), not on port + 10000, which may be taken or above 65535.
    ``nodes.conf`` is kept in the data directory, so a restarted node rejoins."""

    kind = "redis-cluster"

    def __init__(
        self,
        *,
        node_timeout_ms: int = 1000,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        super().__init__(extra_args=extra_args, port=port, startup_timeout=startup_timeout)
        self.node_timeout_ms = node_timeout_ms
        self.cluster_port = 0

    def _prepare(self) -> None:
        super()._prepare()
        self.cluster_port = free_port()
        while self.cluster_port == self.port:
            self.cluster_port = free_port()

    def _argv(self) -> list[str]:
        return [
            *super()._argv(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-port", str(self.cluster_port),
        ]  # fmt: skip

    def node_id(self) -> str:
        return str(_command(self.address, "CLUSTER", "MYID"))


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    link_state: str
    slots: tuple[tuple[int, int], ...] = field(default=())

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


def parse_cluster_nodes(text: str) -> list[ClusterNodeView]:
    """``CLUSTER NODES`` as a list (slot ranges only; migrating/importing marks ignored)."""
    views = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@")[0].split(",")[0]
        slots: list[tuple[int, int]] = []
        for item in parts[8:]:
            if item.startswith("["):
                continue
            low, _, high = item.partition("-")
            slots.append((int(low), int(high or low)))
        views.append(
            ClusterNodeView(
                node_id=parts[0],
                port=int(address.rsplit(":", 1)[1]),
                flags=frozenset(parts[2].split(",")),
                master_id=None if parts[3] == "-" else parts[3],
                link_state=parts[7],
                slots=tuple(slots),
            )
        )
    return views


class RedisClusterTopology(Topology):
    """A Redis Cluster of ``masters`` masters with ``replicas_per_master`` replicas each
    (six nodes by default), made by ``redis-cli --cluster create``, with
    ``cluster-node-timeout`` 1000 ms.

    What a client sees:

    * ``cluster-require-full-coverage`` is on (the default): while a killed master's
      replica is not yet promoted (about node timeout + 1-2 s), **every** node answers
      ``CLUSTERDOWN`` to every key, not only to the failed master's slots.
    * A replica whose replication offset is 0 (no write and no replication ping yet) is
      left out of ``CLUSTER SLOTS`` and marked ``loading`` in ``CLUSTER SHARDS``; the
      nodes here ping their replicas every second, and ``wait_for_stable()`` waits until
      every node is ``online``.
    * After a failover the nodes answer ``MOVED`` for the moved slots; redis-py's
      ``RedisCluster`` refreshes its slot map then. Nodes report their addresses as
      ``127.0.0.1:port`` (``CLUSTER SLOTS``/``SHARDS``/``NODES``).
    * Replication is asynchronous, as with Sentinel: a killed master's last writes may
      be missing on the promoted replica (``wait_replicated()`` first in the tests).
    * A frozen master (``DEBUG SLEEP`` longer than the node timeout) is failed over; when
      it wakes up it learns the newer configuration from the bus and turns into a replica
      within a bus round trip (much faster than Sentinel's 8 s).
    """

    kind = "redis-cluster"

    def __init__(
        self,
        *,
        masters: int = 3,
        replicas_per_master: int = 1,
        node_timeout_ms: int = 1000,
        startup_timeout: float = STARTUP_TIMEOUT,
        wait_timeout: float = WAIT_TIMEOUT,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, wait_timeout=wait_timeout)
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.master_count = masters
        self.replicas_per_master = replicas_per_master
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[ClusterNode] = []
        self.killed: list[ClusterNode] = []
        #: The output of ``redis-cli --cluster create``.
        self.create_output = ""

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`` (three seed nodes)."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.startup_nodes[:3])
        return f"redis+cluster://{hosts}"

    @property
    def startup_nodes(self) -> list[Address]:
        """Every node's address."""
        return [node.address for node in self.nodes]

    def _start(self) -> None:
        redis_cli = find_redis_cli()
        total = self.master_count * (1 + self.replicas_per_master)
        for _ in range(total):
            node = ClusterNode(
                node_timeout_ms=self.node_timeout_ms, startup_timeout=self.startup_timeout
            )
            self.nodes.append(self._add(node))
        argv = [
            redis_cli,
            "--cluster", "create",
            *(f"{host}:{port}" for host, port in self.startup_nodes),
            "--cluster-replicas", str(self.replicas_per_master),
            "--cluster-yes",
        ]  # fmt: skip
        completed = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.startup_timeout,
            check=False,
        )
        self.create_output = completed.stdout + completed.stderr
        if completed.returncode != 0:
            raise ServerStartError(
                f"redis-cli --cluster create failed (exit {completed.returncode}):\n"
                + self.create_output[-3000:]
            )
        self.wait_for_stable()

    # -- state ------------------------------------------------------------------------

    @property
    def live_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running]

    def node_by_port(self, port: int) -> ClusterNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise TopologyError(f"no node of {self!r} on port {port}")

    def _observer(self) -> ClusterNode:
        """A running node that is not frozen, to ask about the cluster."""
        frozen = {freeze.node for freeze in self._freezes if not freeze.done}
        for node in self.live_nodes:
            if node not in frozen:
                return node
        raise TopologyError(f"no running node of {self!r} that is not frozen")

    def view(self, node: ClusterNode | None = None) -> list[ClusterNodeView]:
        """``CLUSTER NODES`` as ``node`` (default: a running node, not frozen) sees it."""
        node = node or self._observer()
        return parse_cluster_nodes(str(_command(node.address, "CLUSTER", "NODES")))

    @staticmethod
    def slot_of(key: str) -> int:
        """The hash slot of ``key`` (CRC16 of the key or of its ``{hash tag}``)."""
        from redis.crc import key_slot

        return key_slot(key.encode())

    def master_of_slot(self, slot: int) -> ClusterNode:
        for entry in self.view():
            serves = any(low <= slot <= high for low, high in entry.slots)
            if entry.is_master and not entry.failing and serves:
                return self.node_by_port(entry.port)
        raise TopologyError(f"no master serves slot {slot}:\n{self.describe()}")

    def master_of(self, key: str) -> ClusterNode:
        """The master that serves ``key``'s slot (as a running node sees it)."""
        return self.master_of_slot(self.slot_of(key))

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        """The running replicas of ``master`` (as a running node sees them)."""
        master_id = master.node_id()
        return [
            self.node_by_port(entry.port)
            for entry in self.view()
            if entry.master_id == master_id and not entry.failing
        ]

    def masters(self) -> list[ClusterNode]:
        """The running masters that serve slots."""
        return [
            self.node_by_port(entry.port)
            for entry in self.view()
            if entry.is_master and entry.slots and not entry.failing
        ]

    def _stable(self) -> bool:
        live = self.live_nodes
        live_ports = {node.port for node in live}
        summaries = set()
        for node in live:
            cluster_info = self._cluster_info(node)
            if cluster_info.get("cluster_state") != "ok":
                return False
            if int(cluster_info.get("cluster_slots_ok", 0)) != CLUSTER_SLOTS:
                return False
            if int(cluster_info.get("cluster_known_nodes", 0)) != len(self.nodes):
                return False
            entries = [entry for entry in self.view(node) if entry.port in live_ports]
            if len(entries) != len(live) or any(entry.failing for entry in entries):
                return False
            ids = {entry.node_id: entry.port for entry in entries}
            summaries.add(
                frozenset(
                    (
                        entry.port,
                        entry.is_master,
                        ids.get(entry.master_id or "", 0),
                        entry.slots,
                    )
                    for entry in entries
                )
            )
        if len(summaries) != 1:
            return False  # the nodes do not agree yet
        for node in live:  # every node sees every running node as "online"
            for shard in map(_as_dict, _command(node.address, "CLUSTER", "SHARDS")):
                for entry in map(_as_dict, shard["nodes"]):
                    if int(entry["port"]) in live_ports and entry.get("health") != "online":
                        return False
        summary = summaries.pop()
        masters = [item for item in summary if item[1] and item[3]]
        if len(masters) != self.master_count:
            return False
        if sum(high - low + 1 for item in masters for low, high in item[3]) != CLUSTER_SLOTS:
            return False
        if len(live) == len(self.nodes):  # with a node down, its master may lack a replica
            for master in masters:
                replicas = [item for item in summary if not item[1] and item[2] == master[0]]
                if len(replicas) < self.replicas_per_master:
                    return False
        # Every running replica replicates from its master, and says so itself.
        for port, is_master, master_port, _slots in summary:
            role = self.node_by_port(port).role()
            if is_master:
                if role[0] != "master":
                    return False
            elif role[0] != "slave" or int(role[2]) != master_port or role[3] != "connected":
                return False
        return True

    @staticmethod
    def _cluster_info(node: ClusterNode) -> dict[str, str]:
        text = str(_command(node.address, "CLUSTER", "INFO"))
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def describe(self) -> str:
        lines = []
        for node in self.nodes:
            if not node.running:
                lines.append(f"node {node.port}: down")
                continue
            try:
                state = self._cluster_info(node).get("cluster_state")
                lines.append(f"node {node.port}: cluster_state={state} ROLE {node.role()}")
            except _transient_errors() as exc:
                lines.append(f"node {node.port}: {exc!r}")
        with contextlib.suppress(*_transient_errors(), TopologyError):
            lines.append(str(_command(self._observer().address, "CLUSTER", "NODES")))
        return "\n".join(lines)

    def wait_for_stable(self, timeout: float | None = None) -> float:
        """Wait until every running node says ``cluster_state:ok`` with all 16384 slots
        ok and knows every node, all running nodes agree on who is master of which slots
        and who replicates whom, each master has its replicas, and each replica is
        connected to its master (``ROLE``)."""
        return self._wait(self._stable, "a stable cluster", timeout=timeout, describe=self.describe)

    def wait_replicated(self, timeout: float | None = None) -> float:
        """Wait until every running replica has its master's replication offset of now."""
        targets = []
        for master in self.masters():
            offset = int(master.info()["master_repl_offset"])
            targets += [(replica, offset) for replica in self.replicas_of(master)]

        def caught_up() -> bool:
            for replica, offset in targets:
                info = replica.info()
                if info.get("master_link_status") != "up":
                    return False
                if int(info.get("slave_repl_offset", -1)) < offset:
                    return False
            return True

        return self._wait(caught_up, "the replicas to catch up", timeout=timeout)

    # -- failures ---------------------------------------------------------------------

    def _wait_promoted(
        self, replica: ClusterNode, old_master: ClusterNode, timeout: float | None
    ) -> float:
        def promoted() -> bool:
            if replica.role()[0] != "master":
                return False
            return self._stable()

        return self._wait(
            promoted,
            f"replica {replica.port} to replace master {old_master.port}",
            timeout=timeout,
            describe=self.describe,
        )

    def _replica_to_promote(self, master: ClusterNode) -> ClusterNode:
        replicas = self.replicas_of(master)
        if not replicas:
            raise TopologyError(
                f"master {master.port} has no running replica (restart_killed() first?)"
            )
        return replicas[0]

    def failover(self, key: str, timeout: float | None = None) -> float:
        """``CLUSTER FAILOVER`` on the replica of the master serving ``key``; wait until
        the two swapped roles and the cluster is stable. Return the seconds it took."""
        self.wait_for_stable()
        master = self.master_of(key)
        replica = self._replica_to_promote(master)
        began = time.monotonic()
        reply = _command(replica.address, "CLUSTER", "FAILOVER")
        if reply not in ("OK", b"OK", True):
            raise TopologyError(f"CLUSTER FAILOVER on {replica.port} answered {reply!r}")
        self._wait_promoted(replica, master, timeout)
        if self.master_of(key) is not replica:
            raise TopologyError(f"{key!r} is not served by the promoted replica {replica.port}")
        elapsed = self.timings["failover"] = time.monotonic() - began
        return elapsed

    def kill_master_of(self, key: str, timeout: float | None = None) -> float:
        """SIGKILL the master serving ``key`` and wait until its replica is promoted and
        the cluster is ok again; return the seconds from the kill. The killed node stays
        down (``killed``) until ``restart_killed()``."""
        self.wait_for_stable()
        master = self.master_of(key)
        replica = self._replica_to_promote(master)
        began = time.monotonic()
        master.kill()
        self.killed.append(master)
        self._wait_promoted(replica, master, timeout)
        elapsed = self.timings["kill_master"] = time.monotonic() - began
        return elapsed

    def restart_killed(self, timeout: float | None = None) -> float:
        """Start the killed nodes again (same ports and ``nodes.conf``): each rejoins as a
        replica of the master that replaced it (its data is gone: no persistence, it
        resyncs). Wait until the cluster is stable; return the seconds it took."""
        began = time.monotonic()
        while self.killed:
            self.killed.pop().start()
        self.wait_for_stable(timeout)
        elapsed = self.timings["restart_killed"] = time.monotonic() - began
        return elapsed

    def wait_for_new_master_of(
        self, key: str, old: RedisNode, timeout: float | None = None
    ) -> float:
        """Wait until a running node that is not frozen reports a master other than
        ``old`` serving ``key``'s slot, answering ``ROLE`` as master."""
        slot = self.slot_of(key)

        def moved() -> bool:
            for entry in self.view():
                serves = any(low <= slot <= high for low, high in entry.slots)
                if entry.is_master and not entry.failing and serves:
                    node = self.node_by_port(entry.port)
                    return node is not old and node.role()[0] == "master"
            return False

        return self._wait(
            moved, f"a new master of {key!r} (slot {slot})", timeout=timeout, describe=self.describe
        )

    def freeze_master_of(self, key: str, seconds: float) -> Freeze:
        """``DEBUG SLEEP seconds`` on the master serving ``key``, in a background thread;
        returns at once. Longer than the node timeout (plus 1-2 s for the election), it
        makes the replica take over."""
        freeze = Freeze(self.master_of(key), seconds)
        self._freezes.append(freeze)
        return freeze


# -- PostgreSQL ------------------------------------------------------------------------


class StandbyServer(PostgresServer):
    """A streaming hot standby of ``source`` (a running :class:`PostgresServer`), made by
    ``pg_basebackup -R`` on its own port, with ``application_name`` in its
    ``primary_conninfo`` (what ``synchronous_standby_names`` and ``pg_stat_replication``
    name it by). Same roles and passwords as the source (it is a copy)."""

    kind = "postgres-standby"

    def __init__(
        self,
        source: PostgresServer,
        *,
        application_name: str,
        replication_password: str,
        replication_user: str = REPLICATION_USER,
        settings: Mapping[str, str] | None = None,
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        super().__init__(
            user=source.user,
            password=source.password,
            dbname=source.dbname,
            fsync=source.fsync,
            settings=settings,
            port=port,
            startup_timeout=startup_timeout,
        )
        self.superuser_password = source.superuser_password
        self.source = source
        self.application_name = application_name
        self.replication_user = replication_user
        self.replication_password = replication_password

    def _check_binaries(self) -> None:
        super()._check_binaries()
        if not os.access(self.bindir / "pg_basebackup", os.X_OK):
            raise ServerBinaryMissing(
                f"pg_basebackup is not in {self.bindir}; run {INSTALL_SCRIPT} to install it"
            )

    def _prepare(self) -> None:
        if self.data_dir.exists():
            return
        base = self.base_dir
        account = self._account()
        if account is not None:
            os.chown(base, *account)
        base.chmod(0o700)
        conninfo = " ".join(
            [
                f"host={LOOPBACK}",
                f"port={self.source.port}",
                f"user={self.replication_user}",
                f"password={self.replication_password}",
                f"application_name={self.application_name}",
            ]
        )
        self._run(
            [
                str(self.bindir / "pg_basebackup"),
                "--pgdata", str(self.data_dir),
                "--dbname", conninfo,
                "--write-recovery-conf",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
            "pg_basebackup",
        )  # fmt: skip
        # A copied synchronous_standby_names would make this node wait for a standby of
        # its own once promoted: the topology names the standby of each primary itself.
        auto_conf = self.data_dir / "postgresql.auto.conf"
        lines = auto_conf.read_text().splitlines(keepends=True)
        auto_conf.write_text(
            "".join(line for line in lines if not line.startswith("synchronous_standby_names"))
        )

    def _bootstrap(self) -> None:
        """Nothing: the roles and the database come with the copy."""


class PostgresReplicated(Topology):
    """A PostgreSQL primary and a streaming hot standby on two ports, P1 and P2.

    ``synchronous=False``: asynchronous streaming (a commit returns before the standby has
    the WAL: a killed primary may take the last commits with it). ``synchronous=True``:
    ``synchronous_commit=on`` and ``synchronous_standby_names`` naming the standby's
    ``application_name``: a commit returns once the standby has flushed its WAL, and
    **blocks for as long as the standby is away**. ``statement_timeout`` does not end that
    wait (PostgreSQL disarms it before the commit); a cancel request
    (``conn.cancel_safe()``) or terminating the backend does: the COMMIT then succeeds
    with the WARNING "canceling wait for synchronous replication due to user request",
    and the transaction *is* committed locally (visible on the primary, maybe lost in a
    failover).

    ``url`` is ``postgresql://user:pass@127.0.0.1:P1,127.0.0.1:P2/db?target_session_attrs=
    read-write``: libpq (psycopg) tries P1 then P2 and keeps the first server that accepts
    writes. Before a promotion a standby refuses such a session; a dead host is skipped.

    The node on each port keeps its role until a helper changes it: ``kill_primary()``
    (SIGKILL), ``promote_standby()``, then ``rebuild_standby()`` makes a new standby of
    the new primary on the port of the old one, so ``url`` stays valid throughout.
    ``primary``/``standby`` are the current ones. Fast settings as in
    :class:`~tests.servers.PostgresServer` (``fsync=off``): fine for failovers, not for
    power losses.
    """

    kind = "postgres-replicated"

    def __init__(
        self,
        *,
        synchronous: bool = False,
        user: str = "clustersync",
        dbname: str = "clustersync_test",
        settings: Mapping[str, str] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
        wait_timeout: float = WAIT_TIMEOUT,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, wait_timeout=wait_timeout)
        self.synchronous = synchronous
        self.user = user
        self.dbname = dbname
        self.replication_password = secrets.token_hex(12)
        self.settings = {
            "wal_level": "replica",
            "max_wal_senders": "10",
            "hot_standby": "on",
            "wal_keep_size": "256MB",
            # A standby reports its position at least every second (default 10 s).
            "wal_receiver_status_interval": "1s",
            # After losing its primary, a standby retries every second (default 5 s).
            "wal_retrieve_retry_interval": "1s",
            **(settings or {}),
        }
        # A commit flushes (writes) its WAL at once, and the WAL sender streams it: the
        # usual production setting (PostgresServer's fast default is "off", which leaves
        # commits in memory for up to wal_writer_delay, out of the standby's reach).
        self.settings.setdefault("synchronous_commit", "on")
        #: The node on each port, in the order of ``url`` (P1, P2).
        self.nodes: list[PostgresServer] = []
        self._primary: PostgresServer | None = None
        self._standby: PostgresServer | None = None
        #: A node no longer in the topology (killed, or left behind by a promotion).
        self._retired: PostgresServer | None = None
        self._generation = 0

    # -- addresses ----------------------------------------------------------------------

    @property
    def primary(self) -> PostgresServer:
        if self._primary is None:
            raise TopologyError(f"{self!r} has no primary (promote the standby)")
        return self._primary

    @property
    def standby(self) -> PostgresServer | None:
        return self._standby

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def password(self) -> str:
        return self.nodes[0].password

    @property
    def url(self) -> str:
        """The test user's libpq multi-host URL, read-write sessions only."""
        return self._url(self.user, self.nodes[0].password)

    @property
    def admin_url(self) -> str:
        """The superuser's multi-host URL, read-write sessions only."""
        return self._url(self.nodes[0].superuser, self.nodes[0].superuser_password)

    def _url(self, user: str, password: str) -> str:
        from urllib.parse import quote

        hosts = ",".join(f"{LOOPBACK}:{port}" for port in self.ports)
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{hosts}"
            f"/{quote(self.dbname, safe='')}?target_session_attrs=read-write"
        )

    # -- start ------------------------------------------------------------------------

    def _start(self) -> None:
        from psycopg import sql

        primary = PostgresServer(
            user=self.user,
            dbname=self.dbname,
            settings=self.settings,
            startup_timeout=self.startup_timeout,
        )
        self.servers.append(primary)
        primary.start()
        with primary.socket_connect() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} REPLICATION LOGIN PASSWORD {}").format(
                    sql.Identifier(REPLICATION_USER), sql.Literal(self.replication_password)
                )
            )
        self.nodes.append(primary)
        self._primary = primary
        standby = self._new_standby(port=None)
        self.nodes.append(standby)
        self.wait_replicated()

    def _new_standby(self, port: int | None) -> StandbyServer:
        """A new standby of the primary, streaming (and the synchronous one if so)."""
        primary = self.primary
        self._generation += 1
        standby = StandbyServer(
            primary,
            application_name=f"standby{self._generation}",
            replication_password=self.replication_password,
            settings=self.settings,
            port=port,
            startup_timeout=self.startup_timeout,
        )
        self.servers.append(standby)
        standby.start()
        self._standby = standby
        if self.synchronous:
            with primary.socket_connect() as conn:
                conn.execute(
                    f"ALTER SYSTEM SET synchronous_standby_names = '\"{standby.application_name}\"'"
                )
                conn.execute("SELECT pg_reload_conf()")
        self.wait_streaming()
        return standby

    # -- state ------------------------------------------------------------------------

    def replication_state(self) -> list[dict[str, Any]]:
        """``pg_stat_replication`` on the primary (one row per standby)."""
        from psycopg.rows import dict_row

        with self.primary.socket_connect() as conn:
            cur = conn.cursor(row_factory=dict_row)
            cur.execute(
                "SELECT application_name, state, sync_state, sent_lsn::text, replay_lsn::text"
                " FROM pg_stat_replication"
            )
            return list(cur.fetchall())

    def wait_streaming(self, timeout: float | None = None) -> float:
        """Wait until the standby streams from the primary (``state = streaming``, and
        ``sync_state = sync`` in synchronous mode)."""
        standby = self._standby
        if standby is None:
            raise TopologyError(f"{self!r} has no standby")
        assert isinstance(standby, StandbyServer)
        want_sync = "sync" if self.synchronous else "async"

        def streaming() -> bool:
            return any(
                row["application_name"] == standby.application_name
                and row["state"] == "streaming"
                and row["sync_state"] == want_sync
                for row in self.replication_state()
            )

        return self._wait(
            streaming,
            f"{standby.application_name} streaming ({want_sync})",
            timeout=timeout,
            describe=lambda: str(self.replication_state()),
        )

    def wait_replicated(self, timeout: float | None = None) -> float:
        """Wait until the standby has replayed the primary's WAL up to its current LSN."""
        standby = self._standby
        if standby is None:
            raise TopologyError(f"{self!r} has no standby")
        with self.primary.socket_connect() as conn:
            # A transaction with an xid, committed with a local flush: every WAL record
            # before it is flushed too (even with synchronous_commit=off), hence sendable.
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = local")
                conn.execute("SELECT pg_current_xact_id()")
            row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        assert row is not None
        target: str = row[0]

        def replayed() -> bool:
            with standby.socket_connect(timeout=2) as conn:
                done = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
                ).fetchone()
            return bool(done and done[0])

        return self._wait(replayed, f"the standby to replay up to {target}", timeout=timeout)

    @staticmethod
    def in_recovery(node: PostgresServer) -> bool:
        with node.socket_connect(timeout=2) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        return bool(row and row[0])

    # -- failures ---------------------------------------------------------------------

    def kill_primary(self) -> None:
        """SIGKILL the postmaster and its backends (a crash, see ``PostgresServer.kill``). The
        standby keeps trying to reconnect; nothing accepts writes until
        ``promote_standby()``."""
        primary = self.primary
        primary.kill()
        self._primary = None
        self._retired = primary

    def promote_standby(self, timeout: float | None = None) -> float:
        """Promote the standby (``pg_promote()``, what ``pg_ctl promote`` does) and wait
        until ``pg_is_in_recovery()`` is false; return the seconds it took. A primary
        still running is left alone (then there are two primaries: kill it first)."""
        standby = self._standby
        if standby is None:
            raise TopologyError(f"{self!r} has no standby to promote")
        began = time.monotonic()
        with standby.socket_connect() as conn:
            conn.execute("SELECT pg_promote(wait => false)")
        self._wait(
            lambda: not self.in_recovery(standby), "the promotion of the standby", timeout=timeout
        )
        if self._primary is not None:
            self._retired = self._primary
        self._primary = standby
        self._standby = None
        elapsed = self.timings["promote_standby"] = time.monotonic() - began
        return elapsed

    def failover(self, timeout: float | None = None) -> float:
        """``kill_primary()`` then ``promote_standby()``; return the seconds from the kill
        to a writable new primary."""
        began = time.monotonic()
        self.kill_primary()
        self.promote_standby(timeout)
        elapsed = self.timings["failover"] = time.monotonic() - began
        return elapsed

    def rebuild_standby(self, timeout: float | None = None) -> float:
        """Close the node left out by the last failover (data removed) and make a new
        standby of the current primary on its port (``pg_basebackup`` again, since the
        old primary's timeline diverged); in synchronous mode the primary names the new
        standby. Return the seconds it took."""
        retired = self._retired
        if retired is None or self._standby is not None:
            raise RuntimeError("rebuild_standby() needs a promotion before")
        began = time.monotonic()
        index = self.nodes.index(retired)
        port = retired.port
        retired.close()
        self.servers.remove(retired)
        self._retired = None
        self.nodes[index] = self._new_standby(port=port)
        self.wait_replicated(timeout)
        elapsed = self.timings["rebuild_standby"] = time.monotonic() - began
        return elapsed


# -- pytest fixtures ---------------------------------------------------------------------


def start_topology_or_skip(topology: TopologyT) -> TopologyT:
    """Start ``topology``; if a binary is missing, skip the test outside CI and fail in
    CI (as ``tests.servers.start_or_skip``)."""
    try:
        topology.start()
    except ServerBinaryMissing as exc:
        topology.close()
        if in_ci():
            raise
        pytest.skip(str(exc))
    return topology


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinel]:
    """A sentinel topology shared by the session: do not fail it over, kill or freeze a
    node (use ``private_topology(RedisSentinel())``)."""
    with start_topology_or_skip(RedisSentinel()) as topology:
        yield topology


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterTopology]:
    """A six-node cluster shared by the session: do not fail it over, kill or freeze a
    node (use ``private_topology(RedisClusterTopology())``)."""
    with start_topology_or_skip(RedisClusterTopology()) as topology:
        yield topology


@pytest.fixture(scope="session")
def postgres_replicated() -> Iterator[PostgresReplicated]:
    """An asynchronous primary + standby shared by the session: do not kill, promote or
    stop a node (use ``private_topology(PostgresReplicated())``)."""
    with start_topology_or_skip(PostgresReplicated()) as topology:
        yield topology


@pytest.fixture(scope="session")
def postgres_sync_replicated() -> Iterator[PostgresReplicated]:
    """A synchronous primary + standby shared by the session: do not kill, promote or
    stop a node (use ``private_topology(PostgresReplicated(synchronous=True))``)."""
    with start_topology_or_skip(PostgresReplicated(synchronous=True)) as topology:
        yield topology


@pytest.fixture(scope="session")
def pgbouncer(postgres_server: PostgresServer) -> Iterator[PgBouncerServer]:
    """PgBouncer in transaction-pooling mode in front of the session's ``postgres_server``,
    shared by the session: do not stop it (use ``private_server(PgBouncerServer(...))``)."""
    from tests.servers import start_or_skip

    with start_or_skip(PgBouncerServer(postgres_server)) as server:
        yield server


class TopologyStarter(Protocol):
    """The ``private_topology`` fixture: starts the topology given, returns it."""

    def __call__(self, topology: TopologyT, /) -> TopologyT: ...


@pytest.fixture
def private_topology() -> Iterator[TopologyStarter]:
    """Start topologies private to one test (for failovers, kills, freezes), closed when
    it ends::

    topology = private_topology(RedisClusterTopology())
    topology.kill_master_of("key")
    """
    started: list[Topology] = []

    def start(topology: TopologyT, /) -> TopologyT:
        started.append(topology)
        return start_topology_or_skip(topology)

    yield start
    for topology in reversed(started):
        topology.close()


__all__ = [
    "ClusterNode",
    "Freeze",
    "PostgresReplicated",
    "RedisClusterTopology",
    "RedisNode",
    "RedisSentinel",
    "SentinelServer",
    "StandbyServer",
    "Topology",
    "TopologyError",
    "pgbouncer",
    "postgres_replicated",
    "postgres_sync_replicated",
    "private_topology",
    "redis_cluster",
    "redis_sentinel",
    "start_topology_or_skip",
    "wait_until",
]
