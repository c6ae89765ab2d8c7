"""Routes to the master of a namespace (the source; ``sync.py`` is generated from it).

Every call of the Redis store is one round trip on one connection to the master that
serves its namespace: :meth:`Route.exchange` takes a connection from the pool of that
master, sends the commands in one write (a script, and ``WAIT`` after it with
``min_replicas``, must share a connection) and reads every reply. A connection that
could not be made is :class:`NotSent`: nothing of the call left this process, so it
surely did not run (the store retries those while a failover completes).

- :class:`Route`: one server (``redis://``, ``rediss://``, ``unix://``).
- :class:`SentinelRoute`: the master of a Sentinel service, found through the sentinels
  (redis-py's ``Sentinel.master_for``). Discovery asks every sentinel and believes the
  one that knows the newest configuration (the highest ``config-epoch``), so a sentinel
  that has not heard of a failover yet cannot send us back to the old master. Every
  sentinel is also watched (pub/sub): when the leader of a failover promotes a replica
  (``+failover-state-send-slaveof-noone``) the old master is *fenced* — its connections
  are closed, in-flight calls fail (outcome unknown) and no new connection is made to it
  — until the switch is announced (``+switch-master``), the failover is aborted, or
  :data:`FENCE_SECONDS` pass. A write the old master would have acknowledged after the
  promotion is lost when it is turned into a replica (Sentinel does that ~10 s later):
  fencing stops this client from making any.
- :class:`ClusterRoute`: the master of the namespace's hash slot in a Redis Cluster (the
  slot map comes from redis-py's ``RedisCluster``; ``MOVED`` updates it, a refused
  connection or ``CLUSTERDOWN`` refreshes it).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as redis_client
from redis import backoff
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel

from ...._concurrency import aio as shim
from ...feed.aio import POLL, ChangeFeed
from ..errors import AuthenticationError, NotSent, RedisClusterException, RedisError, ResponseError
from ..urls import Address, Target

logger = logging.getLogger("clustersync.redis")

#: Longest fence of an old master after its replica was promoted, if neither the switch
#: nor an abort is heard (a sentinel's messages may be missed while reconnecting).
FENCE_SECONDS = 10.0
#: Longest wait for a sentinel's answer (or connection).
SENTINEL_TIMEOUT = 1.0
#: Shortest time between two refreshes of a cluster's slot map.
MIN_REFRESH = 0.1
#: The Sentinel events a route acts on (see :class:`SentinelRoute`).
SENTINEL_EVENTS = (
    "+failover-state-send-slaveof-noone",
    "+switch-master",
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
    "+failover-end-for-timeout",
)


def connection_options(
    *, socket_timeout: float, connect_timeout: float, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Options of every data connection: decoded replies, our timeouts, and no retry of
    redis-py's own (the store decides what to retry: it knows which calls are safe to)."""
    return {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "health_check_interval": 30,
        "retry": Retry(backoff.NoBackoff(), 0),
        **(extra or {}),
    }


class Route:
    """A pool of connections to one server."""

    #: Whether messages go to a shard channel (``SSUBSCRIBE``/``SPUBLISH``).
    sharded = False

    def __init__(self, pool: Any) -> None:
        self._pool_of_server = pool

    async def _pool(self, address: Address | None) -> Any:
        return self._pool_of_server

    async def start(self, on_switch: Callable[[], None]) -> None:
        """Start watching the topology; ``on_switch()`` runs when the master changed."""

    def moved(self, address: Address) -> None:
        """A ``MOVED`` redirection: the namespace's slot is served at ``address`` now."""

    def suspect(self) -> None:
        """A call failed in a way that may mean the master changed: look again."""

    async def exchange(
        self, commands: Sequence[tuple[Any, ...]], address: Address | None = None
    ) -> list[Any]:
        """Send ``commands`` in one write on one connection to the master (or to
        ``address``, an ``ASK`` target) and read every reply; an error reply is returned
        in its place as the ``ResponseError`` it is. :class:`NotSent` if no connection
        could be made; any other error leaves the outcome unknown."""
        try:
            pool = await self._pool(address)
            conn = await pool.get_connection()
        except AuthenticationError:
            raise
        except (RedisError, OSError, RedisClusterException) as exc:
            raise NotSent(str(exc)) from exc
        broken = True  # until every reply is read: replies may still be on their way
        try:
            await conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            broken = False
            return replies
        finally:
            await shim.shielded(_put_back(pool, conn, broken))

    async def subscribe(self, channel: str) -> Any:
        """A pub/sub connection to the master, subscribed to ``channel`` (a shard channel
        if :attr:`sharded`)."""
        pool = await self._pool(None)
        pubsub = redis_client.Redis(connection_pool=pool).pubsub()
        try:
            if self.sharded:
                await pubsub.ssubscribe(channel)
            else:
                await pubsub.subscribe(channel)
        except BaseException:
            await pubsub.aclose()
            raise
        return pubsub

    async def drop_idle(self) -> None:
        """Close the pooled connections not in use (after a call got no answer: those
        may be stuck too), so that the next call opens a new one."""
        with contextlib.suppress(Exception):
            await self._pool_of_server.disconnect(inuse_connections=False)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._pool_of_server.disconnect()


class _Sentinel(Sentinel):
    """redis-py's Sentinel client, with a discovery that believes the sentinel knowing the
    newest configuration and refuses a fenced old master."""

    #: (address, monotonic deadline) of an old master being failed over, if any.
    fence: tuple[Address, float] | None = None

    def _usable(self, state: dict[str, Any]) -> bool:
        """redis-py's ``check_master_state``: a master, not down, that sees enough
        other sentinels."""
        return (
            bool(state.get("is_master"))
            and not state.get("is_sdown")
            and not state.get("is_odown")
            and int(state.get("num-other-sentinels", 0)) >= self.min_other_sentinels
        )

    async def discover_master(self, service_name: str) -> Address:
        best: dict[str, Any] | None = None
        errors: list[str] = []
        for sentinel in self.sentinels:
            try:
                state: Any = await sentinel.sentinel_master(service_name)
            except (RedisError, OSError) as exc:
                errors.append(f"{sentinel}: {exc}")
                continue
            if not isinstance(state, dict) or not self._usable(state):
                continue
            if best is None or int(state.get("config-epoch", 0)) > int(best.get("config-epoch", 0)):
                best = state
        if best is None:
            detail = f": {'; '.join(errors)}" if errors else ""
            raise MasterNotFoundError(f"No master found for {service_name!r}{detail}")
        address = (str(best["ip"]), int(best["port"]))
        fence = self.fence
        if fence is not None and fence[0] == address and shim.monotonic() < fence[1]:
            raise MasterNotFoundError(
                f"{service_name!r}: a failover away from {address[0]}:{address[1]} is under way"
            )
        return address


class SentinelRoute(Route):
    """The master of a Sentinel service (see the module docstring)."""

    def __init__(
        self,
        target: Target,
        *,
        socket_timeout: float,
        connect_timeout: float,
        max_connections: int | None,
        sentinel_password: str | None,
    ) -> None:
        # Sentinels answer from memory: one that takes a second is as good as gone (every
        # discovery asks all of them).
        sentinel_options: dict[str, Any] = {
            "socket_timeout": min(socket_timeout, SENTINEL_TIMEOUT),
            "socket_connect_timeout": min(connect_timeout, SENTINEL_TIMEOUT),
            "decode_responses": True,
            "retry": Retry(backoff.NoBackoff(), 0),
        }
        if sentinel_password is not None:
            sentinel_options["password"] = sentinel_password
        self._sentinel_options = sentinel_options
        self._sentinel = _Sentinel(list(target.addresses), sentinel_kwargs=sentinel_options)
        self.service = target.service
        extra: dict[str, Any] = {"db": target.db}
        if target.username is not None:
            extra["username"] = target.username
        if target.password is not None:
            extra["password"] = target.password
        if max_connections is not None:
            extra["max_connections"] = max_connections
        options = connection_options(
            socket_timeout=socket_timeout, connect_timeout=connect_timeout, extra=extra
        )
        self._master = self._sentinel.master_for(self.service, **options)
        super().__init__(self._master.connection_pool)
        self._addresses = target.addresses
        self._watches: list[ChangeFeed[tuple[Any, Any]]] = []
        #: The master of the last switch announced (each sentinel announces it).
        self._switched_to: Address | None = None
        self._on_switch: Callable[[], None] | None = None

    async def start(self, on_switch: Callable[[], None]) -> None:
        self._on_switch = on_switch
        for address in self._addresses:
            watch: ChangeFeed[tuple[Any, Any]] = ChangeFeed(
                what=f"Redis Sentinel {address[0]}:{address[1]} watch",
                connect=functools.partial(self._watch, address),
                receive=self._receive_event,
                disconnect=_close_watch,
                notify=lambda channel: None,
                errors=(RedisError, OSError),
                ping=_ping_watch,
                answer_within=float(self._sentinel_options["socket_timeout"]),
            )
            self._watches.append(watch)
            await watch.start(wait=False)  # a sentinel that is down now is retried

    async def _watch(self, address: Address) -> Any:
        client = redis_client.Redis(host=address[0], port=address[1], **self._sentinel_options)
        watch = (client, client.pubsub(ignore_subscribe_messages=True))
        try:
            await watch[1].subscribe(*SENTINEL_EVENTS)
            # Events may have been missed while this watch was down: look again.
            await self._check_master()
        except BaseException:
            await shim.shielded(_closed_watch(watch))
            raise
        return watch

    async def _receive_event(self, watch: tuple[Any, Any]) -> tuple[list[str], bool]:
        message = await watch[1].get_message(timeout=POLL)
        if message is None:
            return [], False
        if message.get("type") == "message":
            await self._on_event(str(message["channel"]), str(message["data"]))
        return [], True

    async def _on_event(self, event: str, data: str) -> None:
        fields = data.split()
        if event == "+switch-master":
            service = fields[0] if fields else ""
        elif "@" in fields and fields.index("@") + 3 < len(fields):
            service = fields[fields.index("@") + 1]
        else:
            service = fields[1] if len(fields) > 1 else ""
        if service != self.service:
            return
        if event == "+failover-state-send-slaveof-noone":
            at = fields.index("@")
            old = (fields[at + 2], int(fields[at + 3]))
            logger.warning(
                "Redis Sentinel %r: a replica is being promoted; fencing off the old master"
                " %s:%s until the switch",
                self.service,
                *old,
            )
            self._sentinel.fence = (old, shim.monotonic() + FENCE_SECONDS)
            await self._reset(announce=False)
        elif event == "+switch-master":
            new = (fields[3], int(fields[4]))
            if self._sentinel.fence is None and new == self._switched_to:
                return  # the same switch, heard from another sentinel
            self._switched_to = new
            logger.warning("Redis Sentinel %r: new master %s:%s", self.service, *new)
            self._sentinel.fence = None
            await self._reset()
        else:  # the failover was aborted: the old master stays the master
            self._sentinel.fence = None

    async def _check_master(self) -> None:
        """Reset the connections if the master is not the one they were made to."""
        known = self._pool_of_server.master_address
        try:
            current = await self._sentinel.discover_master(self.service)
        except (RedisError, OSError):
            return
        if known is not None and current != known:
            await self._reset()

    async def _reset(self, *, announce: bool = True) -> None:
        """Close every connection to the master, in use or not (the subscription too):
        they reconnect to the master the sentinels name (a call in flight fails, outcome
        unknown). ``announce``: a new master is known, tell the store (it resubscribes at
        once and wakes its waiters)."""
        with contextlib.suppress(Exception):
            await _cut_off(self._pool_of_server)
        if announce and self._on_switch is not None:
            self._on_switch()

    async def close(self) -> None:
        for watch in self._watches:
            await watch.close()
        await super().close()
        with contextlib.suppress(Exception):
            await self._master.aclose()
        for sentinel in self._sentinel.sentinels:
            with contextlib.suppress(Exception):
                await sentinel.aclose()


class ClusterRoute(Route):
    """The master of the slot of ``slot_key`` in a Redis Cluster."""

    sharded = True

    def __init__(
        self,
        target: Target,
        slot_key: str,
        *,
        socket_timeout: float,
        connect_timeout: float,
        max_connections: int | None,
    ) -> None:
        extra: dict[str, Any] = {}
        if target.username is not None:
            extra["username"] = target.username
        if target.password is not None:
            extra["password"] = target.password
        self._options = connection_options(
            socket_timeout=socket_timeout, connect_timeout=connect_timeout, extra=extra
        )
        if max_connections is not None:
            self._options["max_connections"] = max_connections
        node: Any = ClusterNode  # untyped in the blocking redis-py
        self._cluster: Any = RedisCluster(
            startup_nodes=[node(host, port) for host, port in target.addresses],
            require_full_coverage=False,
            **connection_options(
                socket_timeout=socket_timeout, connect_timeout=connect_timeout, extra=extra
            ),
        )
        self._slot_key = slot_key
        self._pools: dict[Address, Any] = {}
        self._master: Address | None = None
        self._stale = True
        self._refreshed_at = -MIN_REFRESH
        self._lock = shim.Lock()
        super().__init__(None)

    async def _pool(self, address: Address | None) -> Any:
        if address is None:
            if self._master is None or self._stale:
                await self._refresh()
            address = self._master
            if address is None:
                raise NotSent(f"no master serves the slot of {self._slot_key!r}")
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = redis_client.ConnectionPool(
                host=address[0], port=address[1], **self._options
            )
        return pool

    async def _refresh(self) -> None:
        """Read the slot map again (at most every :data:`MIN_REFRESH` seconds)."""
        async with self._lock:
            if self._master is not None and (
                not self._stale or shim.monotonic() - self._refreshed_at < MIN_REFRESH
            ):
                return
            self._refreshed_at = shim.monotonic()
            await self._cluster.nodes_manager.initialize()
            node = self._cluster.get_node_from_key(self._slot_key)
            if node is None:
                raise NotSent(f"no master serves the slot of {self._slot_key!r}")
            self._master = (str(node.host), int(node.port))
            self._stale = False

    def moved(self, address: Address) -> None:
        if address != self._master:
            logger.info("Redis Cluster: the slot of %r moved to %s:%s", self._slot_key, *address)
        self._master = address
        self._stale = False

    def suspect(self) -> None:
        self._stale = True

    async def drop_idle(self) -> None:
        for pool in list(self._pools.values()):
            with contextlib.suppress(Exception):
                await pool.disconnect(inuse_connections=False)

    async def close(self) -> None:
        for pool in list(self._pools.values()):
            with contextlib.suppress(Exception):
                await pool.disconnect()
        with contextlib.suppress(Exception):
            await self._cluster.aclose()


async def _cut_off(pool: Any) -> None:
    """Close every connection of ``pool``, in use or not: a call in flight fails with a
    connection error (outcome unknown), the next call connects again.

    With asyncio (one event loop) redis-py closes connections in use safely. With
    threads, a connection that another thread is using must not be closed from here:
    redis-py's connections are not thread-safe, and that thread's read would fail with
    whatever the half-closed connection raises (``AttributeError``), not a connection
    error. So, under the pool's lock (no connection changes hands meanwhile), the idle
    connections are closed and the sockets of those in use are shut down: their calls
    fail with a connection error in their own threads, which close them. One given back
    unused later is found closed by the other end, and reconnected by the pool before
    its next use."""
    if shim.IS_ASYNC:
        await pool.disconnect(inuse_connections=True)
        return
    with pool._lock:
        for conn in pool._available_connections:
            conn.disconnect()
        for conn in pool._in_use_connections:
            sock = getattr(conn, "_sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    # socket.socket's own: an SSLSocket's would also drop its TLS state.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


async def _put_back(pool: Any, conn: Any, broken: bool) -> bool:
    """Return ``conn`` to ``pool``, closed first if it cannot be reused (returned)."""
    if broken:
        with contextlib.suppress(Exception):
            await conn.disconnect()
    await pool.release(conn)
    return broken


async def _close_watch(watch: tuple[Any, Any]) -> None:
    client, pubsub = watch
    try:
        await pubsub.aclose()
    finally:
        await client.aclose()


async def _closed_watch(watch: tuple[Any, Any]) -> bool:
    """:func:`_close_watch`, for ``shim.shielded`` (which passes a result on)."""
    await _close_watch(watch)
    return True


async def _ping_watch(watch: tuple[Any, Any]) -> bool:
    await watch[1].ping()  # the answer arrives as a "pong" message
    return False
