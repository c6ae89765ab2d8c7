"""The advisory queue of the PostgreSQL store (``handoff="advisory"``).

Blocked acquisitions wait in the server's lock queue on a session-level advisory lock of
their own connection and take the lease row in the same call; a release frees the row,
then the lock. These tests check the options, that waiters really queue in the server
and are served in arrival order, and that the lease row stays the truth: a holder paused
past its expiry still loses the lease at its ttl, a lease taken without the queue is
waited for, and a holder whose session the server ended keeps the lock until it
releases it. Mixed modes in processes are in ``tests/processes/test_mutex_processes.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import clustersync as cs
from clustersync.testing import inject_faults
from tests.conftest import selected_backends
from tests.servers import PostgresServer

pytestmark = pytest.mark.skipif(
    not {"postgres", "postgres-advisory"} & set(selected_backends()),
    reason="PostgreSQL not selected",
)


@pytest.fixture
def advisory_url(postgres_server: PostgresServer) -> str:
    return postgres_server.url + "?handoff=advisory"


@pytest.fixture
def admin(postgres_server: PostgresServer) -> Iterator[Any]:
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        yield conn


def _advisory_locks(admin: Any, *, granted: bool) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = %s",
        (granted,),
    ).fetchone()
    return int(row[0])


def _eventually(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- options ------------------------------------------------------------------------------


def test_handoff_and_grant_waiters_options_are_checked(
    postgres_server: PostgresServer, namespace: str
) -> None:
    url = postgres_server.url
    with pytest.raises(cs.ConfigurationError, match="handoff must be"):
        cs.open_store(url, namespace=namespace, handoff="grant")
    with pytest.raises(cs.ConfigurationError, match="handoff must be"):
        cs.open_store(url + "?handoff=fast", namespace=namespace)
    with pytest.raises(cs.ConfigurationError, match="conflicting"):
        cs.open_store(url + "?handoff=advisory", namespace=namespace, handoff="notify")
    with pytest.raises(cs.ConfigurationError, match="grant_waiters must be"):
        cs.open_store(url, namespace=namespace, grant_waiters=-1)
    with pytest.raises(cs.ConfigurationError, match="grant_waiters must be"):
        cs.open_store(url + "?grant_waiters=x", namespace=namespace)
    # A transaction-pooling PgBouncer (marked by wakeups=poll) cannot keep session locks.
    for poll_url, options in [
        (url + "?handoff=advisory&wakeups=poll", {}),
        (url, {"handoff": "advisory", "wakeups": "poll"}),
    ]:
        with pytest.raises(cs.ConfigurationError, match="direct connection"):
            cs.open_store(poll_url, namespace=namespace, **options)
    with cs.open_store(url, namespace=namespace) as store:
        assert not store._grants  # notify is the default
    with cs.open_store(url + "?handoff=advisory&grant_waiters=3", namespace=namespace) as store:
        assert store._grants
        assert store._grant_ops.max_blocked_waiters == 3


# -- the queue in the server ----------------------------------------------------------------


def test_waiters_queue_in_the_server_and_are_served_in_arrival_order(
    advisory_url: str, namespace: str, admin: Any
) -> None:
    with cs.open_store(advisory_url, namespace=namespace) as store:
        holder = cs.Mutex(store, "lock")
        assert holder.acquire(timeout=1)
        assert _advisory_locks(admin, granted=True) == 1
        order: list[tuple[str, int]] = []

        def take(who: str) -> None:
            mutex = cs.Mutex(store, "lock")
            assert mutex.acquire(timeout=10)
            assert mutex.token is not None
            order.append((who, mutex.token))
            time.sleep(0.02)
            mutex.release()

        threads = []
        for i, who in enumerate(["first", "second", "third"]):
            threads.append(threading.Thread(target=take, args=(who,), daemon=True))
            threads[-1].start()
            # Each one blocks in the server before the next one starts.
            assert _eventually(lambda n=i + 1: _advisory_locks(admin, granted=False) == n)
        assert holder.token is not None
        held = holder.token
        holder.release()
        for thread in threads:
            thread.join(10)
        assert [who for who, _ in order] == ["first", "second", "third"]
        tokens = [held] + [token for _, token in order]
        assert tokens == sorted(set(tokens))
        assert _eventually(lambda: _advisory_locks(admin, granted=True) == 0)


def test_a_holder_past_its_expiry_loses_the_lease_to_a_queued_waiter(
    advisory_url: str, namespace: str
) -> None:
    """A holder that stops renewing (paused, or cut off from the store) keeps its
    advisory lock, but the lease row expires at its ttl: the queued waiter's wait runs
    out (a quarter of the ttl at most) and it takes the row then, with a higher token."""
    with (
        cs.open_store(advisory_url, namespace=namespace) as paused_store,
        cs.open_store(advisory_url, namespace=namespace) as waiting_store,
    ):
        lost = threading.Event()
        paused = cs.Mutex(paused_store, "lock", ttl=1.0, on_lost=lost.set)
        assert paused.acquire(timeout=1)
        inject_faults(paused_store).fail({"renew_lease"})
        waiter = cs.Mutex(waiting_store, "lock", ttl=1.0)
        started = time.monotonic()
        assert waiter.acquire(timeout=5)
        waited = time.monotonic() - started
        assert lost.is_set()  # the holder was told first (its local deadline is earlier)
        assert 0.5 < waited < 1.0 + 0.25 + 0.5, waited
        assert waiter.token is not None
        assert paused.token is not None
        assert waiter.token > paused.token
        with pytest.raises(cs.LockLostError):
            paused.release()  # frees its advisory lock; the lease is no longer its own
        assert waiter.locked()
        waiter.release()


def test_a_lease_taken_without_the_queue_is_waited_for(advisory_url: str, namespace: str) -> None:
    """A non-blocking acquire takes the row without the advisory lock; a queued waiter
    then gets the advisory lock, but waits for the row until that holder releases it."""
    with cs.open_store(advisory_url, namespace=namespace) as store:
        holder = cs.Mutex(store, "lock")
        assert holder.acquire(blocking=False)
        results: list[float] = []

        def wait() -> None:
            mutex = cs.Mutex(store, "lock")
            assert mutex.acquire(timeout=10)
            results.append(time.monotonic())
            mutex.release()

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        time.sleep(0.3)
        assert results == []
        released_at = time.monotonic()
        holder.release()
        thread.join(10)
        assert results
        assert results[0] - released_at < 1.0


def test_a_holder_whose_session_ended_keeps_the_lock_until_it_releases(
    advisory_url: str, namespace: str, admin: Any
) -> None:
    """The server ends the holder's session (its advisory lock goes with it), but the
    holder's process lives on and keeps renewing its lease through the pool: the queued
    waiter gets the advisory lock, not the lease, until the holder releases."""
    with (
        cs.open_store(advisory_url, namespace=namespace) as holding,
        cs.open_store(advisory_url, namespace=namespace) as waiting,
    ):
        holder = cs.Mutex(holding, "lock", ttl=1.0)
        assert holder.acquire(timeout=1)
        results: list[tuple[float, int | None]] = []

        def wait() -> None:
            mutex = cs.Mutex(waiting, "lock", ttl=1.0)
            assert mutex.acquire(timeout=10)
            results.append((time.monotonic(), mutex.token))
            mutex.release()

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        assert _eventually(lambda: _advisory_locks(admin, granted=False) == 1)
        terminated = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
            " WHERE locktype = 'advisory' AND granted"
        ).fetchone()
        assert terminated == (1,)
        time.sleep(2.0)  # two ttls: renewals keep the lease the holder's
        assert results == []
        assert holder.locked()
        holder.check()
        held = holder.token
        assert held is not None
        released_at = time.monotonic()
        holder.release()  # its session is gone: released through the pool
        thread.join(10)
        assert results
        taken_at, token = results[0]
        assert taken_at > released_at
        assert token is not None
        assert token > held
