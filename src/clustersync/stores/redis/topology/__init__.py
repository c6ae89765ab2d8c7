"""How the Redis store reaches the master of its namespace: one server, a Sentinel
service, or the master of the namespace's slot in a Redis Cluster.

- :mod:`.aio` — the routes on redis-py's asyncio client (the source);
- :mod:`.sync` — the same on redis-py's blocking client, generated from :mod:`.aio`.
"""
