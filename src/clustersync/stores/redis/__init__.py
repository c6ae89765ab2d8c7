"""The Redis store (``redis://``, ``rediss://``, ``unix://``), all in this folder.

- :mod:`.lua` — the Lua scripts (one atomic round trip per operation) and the key layout;
- :mod:`.aio` — the backend on redis-py's asyncio client (the source);
- :mod:`.sync` — the same on redis-py's blocking client, generated from :mod:`.aio`.

Needs redis-py: ``pip install "clustersync[redis]"``. Redis 6.2+ or Valkey.
"""

from __future__ import annotations

from ..registry import StoreKind

KIND = StoreKind(
    name="redis",
    schemes=("redis", "rediss", "unix"),
    backend="clustersync.stores.redis.sync:open_backend",
    async_backend="clustersync.stores.redis.aio:open_backend",
    url_forms=("redis://[:password@]host:port/db", "rediss://…", "unix:///path.sock"),
    extra="redis",
    reach="cluster",
    durable=True,
    capabilities=frozenset({"grant"}),
)
