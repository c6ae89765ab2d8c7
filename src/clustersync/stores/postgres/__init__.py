"""The PostgreSQL store (``postgresql://``, ``postgres://``), all in this folder.

- :mod:`.sql` — the schema, its migrations and one SQL statement per operation;
- :mod:`.aio` — the backend on psycopg 3's asyncio connections (the source);
- :mod:`.sync` — the same on psycopg's blocking connections, generated from :mod:`.aio`.

A multi-host URL reaches a primary and its standbys and follows a failover; behind a
transaction-pooling PgBouncer, use ``?wakeups=poll`` (see :mod:`.aio`).

Needs psycopg 3: ``pip install "clustersync[postgres]"``. PostgreSQL 13+.
"""

from __future__ import annotations

from ..registry import StoreKind

KIND = StoreKind(
    name="postgres",
    schemes=("postgresql", "postgres"),
    backend="clustersync.stores.postgres.sync:open_backend",
    async_backend="clustersync.stores.postgres.aio:open_backend",
    url_forms=(
        "postgresql://user:pass@host:port/db",
        "postgresql://user:pass@host1:port1,host2:port2/db",
    ),
    extra="postgres",
    reach="cluster",
    durable=True,
    # handoff="advisory": blocked acquisitions queue in the server (opt-in).
    capabilities=frozenset({"grant"}),
)
