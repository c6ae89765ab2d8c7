"""The Redis store, all in this folder: one server, a Sentinel service or a Redis Cluster.

- :mod:`.lua` — the Lua scripts (one atomic round trip per operation) and the key layout;
- :mod:`.urls` — the URL forms and the store's options;
- :mod:`.topology` — how a call reaches the master of its namespace (server, Sentinel,
  Cluster), on redis-py's asyncio client (``aio``) and the generated blocking one
  (``sync``);
- :mod:`.aio` — the backend on redis-py's asyncio client (the source);
- :mod:`.sync` — the same on redis-py's blocking client, generated from :mod:`.aio`.

Needs redis-py: ``pip install "clustersync[redis]"``. Redis 6.2+ or Valkey; Redis 7+ for
Redis Cluster (sharded pub/sub).
"""

from __future__ import annotations

from ..registry import StoreKind


def _kind(name: str, schemes: tuple[str, ...], url_forms: tuple[str, ...]) -> StoreKind:
    """A kind of the Redis family: the same backend, options and capabilities."""
    return StoreKind(
        name=name,
        schemes=schemes,
        backend="clustersync.stores.redis.sync:open_backend",
        async_backend="clustersync.stores.redis.aio:open_backend",
        url_forms=url_forms,
        extra="redis",
        reach="cluster",
        durable=True,
        capabilities=frozenset({"grant"}),
    )


KIND = _kind(
    "redis",
    ("redis", "rediss", "unix"),
    ("redis://[:password@]host:port/db", "rediss://…", "unix:///path.sock"),
)
"""Redis store (``redis://``, ``rediss://``, ``unix://``): a cluster on the Redis you run.

Every operation is one round trip through a Lua script (``EVALSHA``, loaded once), so it
is atomic; expiry is judged by Redis's own clock (``PX`` leases, ``TIME``). See
:mod:`clustersync.stores.redis.lua` for the key layout and how fencing tokens survive a
restart or a failover that lost the data.

Wake-ups: one pub/sub subscription per store object on the namespace's ``events``
channel, established before ``open_store`` returns. Releases and job changes publish
there; a lost message costs latency only, since every waiter also has a deadline.

Failure modes: any redis-py error becomes ``StoreUnavailableError`` (cause kept); after a
reconnect of the subscription every waiter is woken to recheck. Without persistence
(``appendonly``), a Redis restart loses pending one-shot jobs and metadata.
``min_replicas=N`` makes every write wait for N replicas (``WAIT``).
"""

SENTINEL_KIND = _kind(
    "redis-sentinel",
    ("redis+sentinel",),
    ("redis+sentinel://[:password@]host:port[,host:port…]/SERVICE[/DB]",),
)
"""Redis behind Sentinel (``redis+sentinel://``): the addresses are sentinels, and the
master of ``SERVICE`` is found through them and followed across failovers (also when a
demoted master answers ``READONLY``). The old master is fenced off from the moment a
replica is promoted until the switch is announced, so this client stops writing where
the writes would be lost. Calls in flight during a failover may raise
``StoreUnavailableError``; calls that surely did not run are retried for up to
``failover_timeout`` (5 s). Fencing tokens never repeat or go backwards across a
failover (a hybrid-logical-clock floor, see :mod:`clustersync.stores.redis.lua`).
Replication is asynchronous: without ``min_replicas`` a failover may lose the last
acknowledged writes (docs/reliability.md measures how many).
"""

CLUSTER_KIND = _kind(
    "redis-cluster", ("redis+cluster",), ("redis+cluster://[:password@]host:port[,host:port…]",)
)
"""Redis Cluster (``redis+cluster://``, Redis 7+): the addresses are seed nodes. A
namespace lives in one hash slot (keys ``cs:{namespace}:…``), so every call goes to that
slot's master, following ``MOVED``/``ASK`` and waiting out ``CLUSTERDOWN`` (up to
``failover_timeout``, 5 s); wake-ups use sharded pub/sub (``SSUBSCRIBE``/``SPUBLISH``).
Same failure model as Sentinel otherwise.
"""

#: Every kind of the Redis family, in registration order.
KINDS = (KIND, SENTINEL_KIND, CLUSTER_KIND)
