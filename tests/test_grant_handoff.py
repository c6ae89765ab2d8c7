"""The grant handoff of the Redis store (``handoff="grant"``), operation by operation.

A blocked acquire queues up in the store; a release writes the lease in the name of the
first live waiter and pushes the new token to it, so the waiter holds the lock the moment
its ``BLPOP`` returns, without another round trip. These tests drive the queue through
the store's operations (and a raw Redis client to look at the keys) and through Mutex:
grant on release, a grant never seen passed on by a leaving waiter, dead registrations
skipped, a granted lease extended to the ttl, leaving the queue on timeout and
cancellation, and waiters of both modes on one lock. Waiters killed or paused while
queued are in ``tests/processes/test_grant_processes.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import clustersync as cs
from clustersync import aio
from clustersync.stores.contract import GRANT_LEASE_MS
from clustersync.stores.redis.lua import REGISTRATION_MS
from clustersync.stores.redis.sync import key_prefix
from clustersync.testing import inject_faults
from tests.conftest import selected_backends
from tests.servers import RedisServer

pytestmark = pytest.mark.skipif(
    not {"redis", "redis-notify"} & set(selected_backends()), reason="Redis not selected"
)

NAME = "m:lock"  # the lease name of Mutex(store, "lock")


@pytest.fixture
def grant_url(redis_server: RedisServer) -> str:
    return redis_server.url + "?handoff=grant"


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def stores(grant_url: str, namespace: str) -> Iterator[list[cs.Store]]:
    opened = [cs.open_store(grant_url, namespace=namespace) for _ in range(3)]
    yield opened
    for store in opened:
        store.close()


def _lease_parts(raw: Any, namespace: str) -> tuple[int, str]:
    """(token, owner) of the live lease of ``NAME``."""
    value = _lease(raw, namespace)
    assert value is not None, "no live lease"
    token, owner = value.split("|", 1)
    return int(token), owner


def _lease(raw: Any, namespace: str) -> str | None:
    value: str | None = raw.get(key_prefix(namespace) + "l:" + NAME)
    return value


def _queued(raw: Any, namespace: str) -> list[str]:
    members: list[str] = raw.zrange(key_prefix(namespace) + "q:" + NAME, 0, -1)
    return members


def _hold_and_queue(holder: cs.Store, *waiters: tuple[cs.Store, str]) -> int:
    """``holder`` takes the lease; each (store, owner) queues up without blocking.
    Returns the holder's token."""
    held = holder._ops.acquire_lease(NAME, "holder", 15.0)
    assert held.token is not None
    for store, owner in waiters:
        assert store._grant_ops.wait_for_grant(NAME, owner, 15.0, 0.0).token is None
    return held.token


def _start(mutex: cs.Mutex, results: list[Any], **kwargs: Any) -> threading.Thread:
    def run() -> None:
        results.append(mutex.acquire(**kwargs))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# -- options ------------------------------------------------------------------------------


def test_handoff_option_is_checked(redis_server: RedisServer, namespace: str) -> None:
    url = redis_server.url
    with pytest.raises(cs.ConfigurationError, match="handoff must be"):
        cs.open_store(url, namespace=namespace, handoff="fast")
    with pytest.raises(cs.ConfigurationError, match="handoff must be"):
        cs.open_store(url + "?handoff=fast", namespace=namespace)
    with pytest.raises(cs.ConfigurationError, match="conflicting"):
        cs.open_store(url + "?handoff=grant", namespace=namespace, handoff="notify")
    with pytest.raises(cs.ConfigurationError, match="Redis store option"):
        cs.open_store("memory://grant-option", handoff="grant")
    with cs.open_store("memory://grant-option", handoff="notify") as store:
        assert not store._grants
    for grant_store_url, options in [
        (url + "?handoff=grant", {}),
        (url, {"handoff": "grant"}),
        (url, {}),
        (url + "?socket_timeout=5&handoff=grant", {}),
    ]:
        with cs.open_store(grant_store_url, namespace=namespace, **options) as store:
            assert store._grants
            mutex = cs.Mutex(store, "lock")
            assert mutex.acquire(timeout=1)
            mutex.release()
    with cs.open_store(url, namespace=namespace) as store:
        assert store._grants  # grant is the default
    with cs.open_store(url + "?handoff=notify", namespace=namespace) as store:
        assert not store._grants


def test_grant_waiters_option_is_checked(redis_server: RedisServer, namespace: str) -> None:
    url = redis_server.url
    for bad in (-1, 10_001, 1.5, True, "8"):
        with pytest.raises(cs.ConfigurationError, match="grant_waiters must be"):
            cs.open_store(url, namespace=namespace, grant_waiters=bad)
    with pytest.raises(cs.ConfigurationError, match="grant_waiters must be"):
        cs.open_store(url + "?grant_waiters=many", namespace=namespace)
    with pytest.raises(cs.ConfigurationError, match="conflicting"):
        cs.open_store(url + "?grant_waiters=2", namespace=namespace, grant_waiters=3)
    with cs.open_store(url + "?grant_waiters=3", namespace=namespace) as store:
        assert store._grant_ops.max_blocked_waiters == 3
    with cs.open_store(url, namespace=namespace) as store:
        assert store._grant_ops.max_blocked_waiters == 16
    # A bounded pool keeps half of its connections for the other calls.
    with cs.open_store(url, namespace=namespace, max_connections=6) as store:
        assert store._grant_ops.max_blocked_waiters == 3


def test_waiters_beyond_grant_waiters_are_notified(
    redis_server: RedisServer, raw: Any, namespace: str
) -> None:
    """With ``grant_waiters=1``, one blocked acquire of the store queues up (and holds a
    connection in BLPOP); the next one waits to be notified. Both get the lock, one at a
    time, and nothing is left queued."""
    with (
        cs.open_store(redis_server.url, namespace=namespace) as holder_store,
        cs.open_store(redis_server.url + "?grant_waiters=1", namespace=namespace) as store,
    ):
        holder = cs.Mutex(holder_store, "lock")
        assert holder.acquire(timeout=1)
        results: list[bool] = []

        def take_and_release() -> None:
            mutex = cs.Mutex(store, "lock")
            results.append(mutex.acquire(timeout=10))
            mutex.release()

        def start() -> threading.Thread:
            thread = threading.Thread(target=take_and_release, daemon=True)
            thread.start()
            return thread

        first = start()
        deadline = time.monotonic() + 5
        while _queued(raw, namespace) == [] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(_queued(raw, namespace)) == 1
        second = start()
        time.sleep(0.3)
        assert len(_queued(raw, namespace)) == 1  # the second one is not queued
        assert raw.exists(key_prefix(namespace) + "w:" + NAME)  # but flagged as a waiter
        holder.release()
        first.join(10)
        second.join(10)
        assert results == [True, True]
        assert _queued(raw, namespace) == []


# -- the queue, operation by operation -----------------------------------------------------


def test_release_writes_the_lease_in_the_first_waiters_name(
    stores: list[cs.Store], raw: Any, namespace: str
) -> None:
    holder, waiter, _ = stores
    token = _hold_and_queue(holder)
    queued = waiter._grant_ops.wait_for_grant(NAME, "waiter", 15.0, 0.0)
    assert queued.token is None
    assert 14.0 < queued.retry_after <= 15.0
    assert _queued(raw, namespace) == ["waiter"]

    assert holder._ops.release_lease(NAME, "holder", token)
    # The release alone made the waiter the holder, with the next token and a short life.
    # (Tokens are max(previous + 1, the server's clock in µs): higher, not next.)
    new_token, owner = _lease_parts(raw, namespace)
    assert (owner, new_token > token) == ("waiter", True)
    assert 0 < raw.pttl(key_prefix(namespace) + "l:" + NAME) <= GRANT_LEASE_MS
    assert _queued(raw, namespace) == []
    granted = waiter._grant_ops.wait_for_grant(NAME, "waiter", 15.0, 1.0)
    assert granted.token == new_token
    assert 0 < granted.valid_for <= GRANT_LEASE_MS / 1000
    assert waiter._ops.release_lease(NAME, "waiter", new_token)
    assert _lease(raw, namespace) is None


def test_a_leaving_waiter_passes_an_unseen_grant_on(
    stores: list[cs.Store], raw: Any, namespace: str
) -> None:
    holder, first, second = stores
    token = _hold_and_queue(holder, (first, "first"), (second, "second"))
    assert _queued(raw, namespace) == ["first", "second"]
    assert holder._ops.release_lease(NAME, "holder", token)
    first_token, owner = _lease_parts(raw, namespace)
    assert (owner, first_token > token) == ("first", True)

    assert first._grant_ops.withdraw_waiter(NAME, "first")  # it had a grant it never saw
    second_token, owner = _lease_parts(raw, namespace)
    assert (owner, second_token > first_token) == ("second", True)
    assert second._grant_ops.withdraw_waiter(NAME, "second")
    assert _lease(raw, namespace) is None  # nobody left: freed
    assert not second._grant_ops.withdraw_waiter(NAME, "second")  # nothing to pass on twice
    again = holder._ops.acquire_lease(NAME, "holder", 15.0)
    assert again.token is not None
    assert again.token > second_token


def test_a_release_skips_registrations_that_lapsed(
    stores: list[cs.Store], raw: Any, namespace: str
) -> None:
    holder, dead, live = stores
    token = _hold_and_queue(holder, (dead, "dead"))
    time.sleep(REGISTRATION_MS / 1000 + 0.2)  # "dead" never refreshed its place
    assert live._grant_ops.wait_for_grant(NAME, "live", 15.0, 0.0).token is None
    assert _queued(raw, namespace) == ["dead", "live"]
    assert holder._ops.release_lease(NAME, "holder", token)
    new_token, owner = _lease_parts(raw, namespace)
    assert (owner, new_token > token) == ("live", True)
    assert _queued(raw, namespace) == []


def test_a_waiter_takes_a_free_lease_itself(stores: list[cs.Store]) -> None:
    store = stores[0]
    taken = store._grant_ops.wait_for_grant(NAME, "me", 5.0, 1.0)
    assert taken.token is not None
    assert taken.valid_for == 5.0
    assert store._ops.release_lease(NAME, "me", taken.token)


# -- through Mutex ------------------------------------------------------------------------


def test_a_granted_lease_is_extended_to_the_ttl(
    stores: list[cs.Store], raw: Any, namespace: str
) -> None:
    holder, waiter_store, _ = stores
    first = cs.Mutex(holder, "lock", ttl=15.0)
    second = cs.Mutex(waiter_store, "lock", ttl=15.0)
    assert first.acquire(timeout=1)
    faults = inject_faults(waiter_store)  # counts the waiter's operations
    results: list[Any] = []
    thread = _start(second, results, timeout=10)
    time.sleep(0.3)
    assert results == []
    first.release()
    thread.join(5)
    assert results == [True]
    assert faults.calls["acquire_lease"] == 0  # no attempt after the grant: it was ours
    key = key_prefix(namespace) + "l:" + NAME
    assert raw.pttl(key) <= GRANT_LEASE_MS
    deadline = time.monotonic() + GRANT_LEASE_MS / 1000
    while raw.pttl(key) <= GRANT_LEASE_MS and time.monotonic() < deadline:
        time.sleep(0.02)
    assert raw.pttl(key) > 10_000  # the renewer extended it well before it expired
    time.sleep(GRANT_LEASE_MS / 1000)
    assert second.locked()
    second.check()
    second.release()


def test_a_timed_out_waiter_leaves_the_queue(
    stores: list[cs.Store], raw: Any, namespace: str
) -> None:
    holder, waiter_store, other = stores
    first = cs.Mutex(holder, "lock")
    assert first.acquire(timeout=1)
    started = time.monotonic()
    assert not cs.Mutex(waiter_store, "lock").acquire(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
    assert _queued(raw, namespace) == []
    first.release()
    assert cs.Mutex(other, "lock").acquire(blocking=False)  # freed, not granted to a ghost


def test_a_ttl_shorter_than_the_round_trip_does_not_spin(stores: list[cs.Store]) -> None:
    """Every answer comes after the ttl, so no grant or free lease can be used: the
    waiter gives each back and pauses before the next try instead of hammering Redis."""
    faults = inject_faults(stores[0])
    faults.slow({"wait_for_grant"}, 0.01)
    mutex = cs.Mutex(stores[0], "lock", ttl=0.005)
    assert not mutex.acquire(timeout=0.5)
    assert 2 <= faults.calls["wait_for_grant"] <= 12  # ≈ 1 per 60 ms, not 1 per 10 ms
    assert not mutex.locked()
    faults.heal()
    other = cs.Mutex(stores[1], "lock", ttl=5.0)
    assert other.acquire(blocking=False)  # nothing was left held
    other.release()


def test_a_cancelled_asyncio_waiter_leaves_the_queue(
    grant_url: str, raw: Any, namespace: str
) -> None:
    async def scenario() -> None:
        async with (
            await aio.open_store(grant_url, namespace=namespace) as holder,
            await aio.open_store(grant_url, namespace=namespace) as waiter_store,
        ):
            first = aio.Mutex(holder, "lock")
            assert await first.acquire(timeout=1)
            task = asyncio.create_task(aio.Mutex(waiter_store, "lock").acquire())
            await asyncio.sleep(0.3)
            assert _queued(raw, namespace) != []
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert _queued(raw, namespace) == []
            await first.release()
            assert _lease(raw, namespace) is None
            other = aio.Mutex(holder, "lock")
            assert await other.acquire(blocking=False)
            await other.release()

    asyncio.run(scenario())


def test_notified_and_granted_waiters_share_one_lock(
    redis_server: RedisServer, grant_url: str, namespace: str
) -> None:
    with (
        cs.open_store(redis_server.url + "?handoff=notify", namespace=namespace) as notify_store,
        cs.open_store(grant_url, namespace=namespace) as grant_store,
    ):
        holder = cs.Mutex(notify_store, "lock")
        assert holder.acquire(timeout=1)
        holds: list[tuple[float, float, int]] = []

        def take(mutex: cs.Mutex) -> None:
            assert mutex.acquire(timeout=10)
            start = time.monotonic()
            token = mutex.token
            assert token is not None
            time.sleep(0.05)
            holds.append((start, time.monotonic(), token))
            mutex.release()

        threads = [
            threading.Thread(target=take, args=(cs.Mutex(store, "lock"),), daemon=True)
            for store in (notify_store, grant_store, notify_store, grant_store)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        released_at = time.monotonic()
        holder.release()
        for thread in threads:
            thread.join(10)
        assert len(holds) == 4
        holds.sort()
        for (_, end, token), (start, _, next_token) in itertools.pairwise(holds):
            assert end <= start
            assert token < next_token
        # Nobody waited for an expiry or a 2 s fallback: each handoff was prompt.
        assert holds[-1][1] - released_at < 2.0
