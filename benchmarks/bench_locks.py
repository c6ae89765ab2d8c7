"""Lock scenarios of ``benchmarks/run.py`` (scenarios 2-5): clustersync's Mutex
and the peer libraries behind one small adapter interface, and the worker processes.

Peers and their configuration (the closest each has to clustersync's self-renewing
15 s lease, unless a scenario says otherwise):

- ``redis-py Lock`` — ``Redis.lock(name, timeout=ttl)``: a ``SET NX PX`` lease without
  renewal; waiters poll every ``sleep=0.1`` s (its default).
- ``python-redis-lock`` — ``redis_lock.Lock(conn, name, expire=ttl, auto_renewal=True)``:
  ``SET NX EX`` plus a renewal thread per hold; waiters block in ``BLPOP`` on a signal
  list that the release pushes to.
- ``pottery Redlock`` — ``Redlock(key=name, masters={one Redis}, auto_release_time=ttl)``:
  the Redlock algorithm with one master; waiters retry after a random 0-200 ms sleep.
- ``PostgreSQL advisory lock`` — ``pg_advisory_lock(key)`` / ``pg_advisory_unlock(key)``
  on a dedicated psycopg connection: waiters block inside the server, which wakes them on
  unlock; the lock lives as long as the session (no ttl: a dead holder's lock goes when
  the server notices the closed connection).
- ``clustersync`` — ``clustersync.Mutex(store, name, ttl=ttl)`` on Redis, PostgreSQL or
  SQLite (threading API), in its default mode (on Redis ``handoff=grant``: releases
  hand the lock to the first queued waiter); ``clustersync handoff=notify`` is Redis
  opened with ``?handoff=notify`` (waiters are woken by a message and retry).
"""

from __future__ import annotations

import os
import signal
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from handoff import Plan, play_handoff

import clustersync

#: Shared memory of the contended scenario: [holder, acquisitions, violations, last token].
HOLDER, TOTAL, VIOLATIONS, LAST_TOKEN = range(4)


class LockAdapter(Protocol):
    def acquire(self) -> object: ...

    def release(self) -> None: ...

    def fence(self) -> int | None:
        """The fencing token of the current hold (clustersync only)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LockSpec:
    """One contender of the lock scenarios (picklable: workers rebuild the lock)."""

    id: str  # unique key in the results
    label: str  # shown in the report
    store: str  # redis | postgres | sqlite
    kind: str  # clustersync | redis-py | python-redis-lock | pottery | pg-advisory
    url: str
    namespace: str = "bench"
    #: The lease of the peer's *default* configuration in seconds; None = no expiry.
    default_ttl: float | None = None
    renewal: bool = True  # python-redis-lock: auto_renewal (needs an expiry)
    no_expiry: bool = False  # ignore the scenario's ttl: a lock without expiry


class CsLock:
    def __init__(self, spec: LockSpec, name: str, ttl: float | None) -> None:
        self.store = clustersync.open_store(spec.url, namespace=spec.namespace)
        self.mutex = clustersync.Mutex(self.store, name, ttl=ttl or 15.0)

    def acquire(self) -> object:
        return self.mutex.acquire()

    def release(self) -> None:
        self.mutex.release()

    def fence(self) -> int | None:
        return self.mutex.token

    def close(self) -> None:
        self.store.close()


class _RedisPeerLock:
    """What the Redis peers share: a redis-py client and a lock object on it, acquired
    blocking; none of them has a fencing token."""

    client: Any
    lock: Any

    def acquire(self) -> object:
        return self.lock.acquire(blocking=True)

    def release(self) -> None:
        self.lock.release()

    def fence(self) -> int | None:
        return None

    def close(self) -> None:
        self.client.close()


class RedisPyLock(_RedisPeerLock):
    def __init__(self, spec: LockSpec, name: str, ttl: float | None) -> None:
        import redis

        self.client = redis.Redis.from_url(spec.url)
        self.lock = self.client.lock(spec.namespace + ":" + name, timeout=ttl)


class PyRedisLock(_RedisPeerLock):
    def __init__(self, spec: LockSpec, name: str, ttl: float | None) -> None:
        import redis
        import redis_lock

        self.client = redis.Redis.from_url(spec.url)
        renew = spec.renewal and ttl is not None
        self.lock = redis_lock.Lock(
            self.client, spec.namespace + ":" + name, expire=ttl, auto_renewal=renew
        )


class PotteryLock(_RedisPeerLock):
    def __init__(self, spec: LockSpec, name: str, ttl: float | None) -> None:
        import redis
        from pottery import Redlock

        self.client = redis.Redis.from_url(spec.url)
        options: dict[str, Any] = {} if ttl is None else {"auto_release_time": ttl}
        self.lock = Redlock(key=spec.namespace + ":" + name, masters={self.client}, **options)


class PgAdvisoryLock:
    def __init__(self, spec: LockSpec, name: str, ttl: float | None) -> None:
        import psycopg

        self.conn = psycopg.connect(spec.url, autocommit=True)
        # A signed 64-bit key from the name (advisory locks take bigint keys).
        self.key = zlib.crc32((spec.namespace + ":" + name).encode())

    def acquire(self) -> object:
        return self.conn.execute("SELECT pg_advisory_lock(%s)", (self.key,)).fetchone()

    def release(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,)).fetchone()

    def fence(self) -> int | None:
        return None

    def close(self) -> None:
        self.conn.close()


ADAPTERS: dict[str, Callable[[LockSpec, str, float | None], LockAdapter]] = {
    "clustersync": CsLock,
    "redis-py": RedisPyLock,
    "python-redis-lock": PyRedisLock,
    "pottery": PotteryLock,
    "pg-advisory": PgAdvisoryLock,
}


def open_lock(spec: LockSpec, name: str, ttl: float | None) -> LockAdapter:
    return ADAPTERS[spec.kind](spec, name, None if spec.no_expiry else ttl)


# -- worker processes ---------------------------------------------------------------------


def handoff_worker(
    spec: LockSpec, name: str, peer: Connection, parent: Connection, plan: Plan, first: bool
) -> None:
    """One side of the cross-process handoff of ``handoff.play_handoff``."""
    lock = open_lock(spec, name, 15.0)
    try:
        parent.send(play_handoff(lock, peer, plan, first))
    finally:
        lock.close()


def contended_worker(
    spec: LockSpec,
    name: str,
    index: int,
    shared: Any,
    duration: float,
    parent: Connection,
) -> None:
    """Acquire, run a critical section, release, as fast as possible until the end.

    The critical section checks mutual exclusion on shared memory: nobody else may be
    inside (``HOLDER``), and a fencing token, where there is one, must exceed every
    token seen before. Each breach counts as a safety violation.
    """
    lock = open_lock(spec, name, 15.0)
    me = index + 1
    count = 0
    try:
        parent.send("ready")
        start_at = parent.recv()  # the same start for all workers
        time.sleep(max(0.0, start_at - time.monotonic()))
        end = start_at + duration
        while time.monotonic() < end:
            lock.acquire()
            if shared[HOLDER] != 0:
                shared[VIOLATIONS] += 1
            shared[HOLDER] = me
            token = lock.fence()
            if token is not None:
                if token <= shared[LAST_TOKEN]:
                    shared[VIOLATIONS] += 1
                shared[LAST_TOKEN] = token
            shared[TOTAL] += 1
            if shared[HOLDER] != me:
                shared[VIOLATIONS] += 1
            shared[HOLDER] = 0
            lock.release()
            count += 1
        parent.send(count)
    finally:
        lock.close()


def crash_holder(spec: LockSpec, name: str, ttl: float | None, parent: Connection) -> None:
    """Acquire and hold until killed (the lease keeps being renewed where it is)."""
    lock = open_lock(spec, name, ttl)
    lock.acquire()
    parent.send("held")
    while True:
        time.sleep(3600)


def crash_waiter(spec: LockSpec, name: str, ttl: float | None, parent: Connection) -> None:
    """Block in acquire; report ``time.monotonic()`` when it returns."""
    lock = open_lock(spec, name, ttl)
    parent.send("blocking")
    lock.acquire()
    parent.send(time.monotonic())
    lock.release()
    lock.close()


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
