"""Conformance tests of Semaphore on every store (docs/guide/semaphore.md)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from clustersync import aio as cs
from clustersync._concurrency import aio as shim
from clustersync.testing import inject_faults
from tests.conformance._async.conftest import eventually

#: Generous bound for "promptly" on a loaded machine.
PROMPT = 1.0


@pytest.fixture
async def other_store(store_url: str, namespace: str) -> AsyncIterator[cs.Store]:
    """A second connection to the same store and namespace: another instance."""
    opened = await cs.open_store(store_url, namespace=namespace, identity="other-instance")
    yield opened
    await opened.close()


def start_acquire(sem: cs.Semaphore, results: list[Any], timeout: float | None) -> shim.Task:
    async def run() -> None:
        try:
            results.append(await sem.acquire(timeout=timeout))
        except Exception as exc:
            results.append(exc)

    return shim.spawn(run, name="test-acquire")


async def test_up_to_limit_holders_with_increasing_tokens(
    store: cs.Store, other_store: cs.Store
) -> None:
    sems = [cs.Semaphore(s, "pool", limit=2) for s in (store, other_store, store)]
    assert await sems[0].acquire(timeout=PROMPT)
    assert await sems[1].acquire(timeout=PROMPT)
    assert not await sems[2].acquire(blocking=False), "a third holder with limit 2"
    assert not await sems[2].acquire(timeout=0.2)
    first, second = sems[0].token, sems[1].token
    assert first is not None
    assert second is not None
    assert second > first, "one counter for every slot"
    assert sems[0].locked()
    assert sems[1].locked()
    holders = await sems[2].holders()
    assert all(isinstance(h, cs.HolderInfo) for h in holders)
    assert [(h.identity, h.token) for h in holders] == [
        (store.identity, first),
        ("other-instance", second),
    ]
    assert all(0 < h.expires_in <= 15.0 + 1 for h in holders)
    await sems[0].release()
    assert await sems[2].acquire(blocking=False)
    third = sems[2].token
    assert third is not None
    assert third > second
    for sem in sems[1:]:
        await sem.release()
    assert await sems[0].holders() == []


async def test_the_limit_is_the_callers(store: cs.Store) -> None:
    narrow = cs.Semaphore(store, "mixed", limit=1)
    wide = cs.Semaphore(store, "mixed", limit=2)
    other_narrow = cs.Semaphore(store, "mixed", limit=1)
    assert await narrow.acquire(blocking=False)
    assert await wide.acquire(blocking=False)
    assert not await other_narrow.acquire(blocking=False)
    await narrow.release()
    await wide.release()


async def test_a_release_wakes_a_waiter_promptly(store: cs.Store, other_store: cs.Store) -> None:
    holders = [cs.Semaphore(store, "wake", limit=2) for _ in range(2)]
    for sem in holders:
        assert await sem.acquire(timeout=PROMPT)
    waiter = cs.Semaphore(other_store, "wake", limit=2)
    results: list[Any] = []
    task = start_acquire(waiter, results, timeout=10)
    assert not await shim.join(task, 0.3)
    released_at = shim.monotonic()
    await holders[1].release()
    assert await shim.join(task, 5.0)
    assert results == [True]
    assert shim.monotonic() - released_at < PROMPT
    assert holders[0].token is not None
    assert waiter.token is not None
    assert waiter.token > holders[0].token
    await waiter.release()
    await holders[0].release()


async def test_waiters_are_served_in_arrival_order(store: cs.Store, other_store: cs.Store) -> None:
    holder = cs.Semaphore(store, "line", limit=1)
    assert await holder.acquire(timeout=PROMPT)
    order: list[str] = []
    errors: list[Exception] = []

    async def wait_then_release(sem: cs.Semaphore, who: str) -> None:
        try:
            assert await sem.acquire(timeout=20)
            order.append(who)
            await sem.release()
        except Exception as exc:
            errors.append(exc)

    tasks = []
    for who, instance in (("a", other_store), ("b", store), ("c", other_store)):
        sem = cs.Semaphore(instance, "line", limit=1)
        tasks.append(shim.spawn(wait_then_release, sem, who, name=f"waiter-{who}"))
        # Queued before the next one arrives.
        await shim.sleep(0.2)
    await holder.release()
    for task in tasks:
        assert await shim.join(task, 25.0)
    assert errors == []
    assert order == ["a", "b", "c"]


async def test_a_busy_holder_does_not_starve_a_waiter(
    store: cs.Store, other_store: cs.Store
) -> None:
    """A holder that releases and acquires again at once, in a loop, does not keep the
    slot from a waiter: the waiter is in line before the holder's next acquire."""
    stop = shim.CancelEvent()
    rounds = [0]

    async def busy() -> None:
        sem = cs.Semaphore(store, "busy", limit=1)
        while not stop.is_set():
            assert await sem.acquire(timeout=20)
            await shim.sleep(0.001)
            await sem.release()
            rounds[0] += 1

    task = shim.spawn(busy, name="busy-holder")
    try:
        assert await eventually(lambda: rounds[0] > 5, 5.0)
        waiter = cs.Semaphore(other_store, "busy", limit=1)
        started = shim.monotonic()
        assert await waiter.acquire(timeout=10)
        assert shim.monotonic() - started < 2 * PROMPT, "the waiter starved"
        await waiter.release()
    finally:
        stop.set()
        assert await shim.join(task, 25.0)


async def test_a_waiter_that_gives_up_leaves_the_line(
    store: cs.Store, other_store: cs.Store
) -> None:
    holder = cs.Semaphore(store, "quitters", limit=1)
    assert await holder.acquire(timeout=PROMPT)
    impatient = cs.Semaphore(other_store, "quitters", limit=1)
    assert not await impatient.acquire(timeout=0.2)
    cancel = shim.CancelEvent()
    cancelled: list[Any] = []

    async def wait_until_cancelled() -> None:
        cancelled.append(await impatient.acquire(cancel=cancel))

    task = shim.spawn(wait_until_cancelled, name="cancelled-waiter")
    await shim.sleep(0.2)
    cancel.set()
    assert await shim.join(task, 5.0)
    assert cancelled == [False]
    waiter = cs.Semaphore(other_store, "quitters", limit=1)
    results: list[Any] = []
    waiting = start_acquire(waiter, results, timeout=10)
    assert not await shim.join(waiting, 0.3)
    released_at = shim.monotonic()
    await holder.release()
    assert await shim.join(waiting, 5.0)
    assert results == [True]
    # Not held back by the places of the waiters that gave up (they would lapse in 2 s).
    assert shim.monotonic() - released_at < PROMPT
    await waiter.release()


async def test_contention_never_exceeds_the_limit(store: cs.Store, other_store: cs.Store) -> None:
    limit = 2
    inside: list[int] = []
    most = [0]
    tokens: list[int] = []
    errors: list[Exception] = []

    async def contend(sem: cs.Semaphore) -> None:
        try:
            for _ in range(3):
                assert await sem.acquire(timeout=15)
                inside.append(1)
                most[0] = max(most[0], len(inside))
                assert sem.token is not None
                tokens.append(sem.token)
                await shim.sleep(0.005)
                inside.pop()
                await sem.release()
        except Exception as exc:
            errors.append(exc)

    tasks = [
        shim.spawn(contend, cs.Semaphore(s, "contended", limit=limit), name=f"contender-{i}")
        for i, s in enumerate([store, other_store] * 3)
    ]
    for task in tasks:
        assert await shim.join(task, 30.0)
    assert errors == []
    assert most[0] <= limit
    assert len(tokens) == 18
    assert len(set(tokens)) == 18, "a token handed out twice"


async def test_not_reentrant(store: cs.Store) -> None:
    sem = cs.Semaphore(store, "not-reentrant", limit=3)
    assert await sem.acquire(timeout=PROMPT)
    token = sem.token
    assert not await sem.acquire(blocking=False), "one object holds one slot"
    assert not await sem.acquire(timeout=0.2)
    assert sem.token == token
    assert len(await sem.holders()) == 1
    await sem.release()
    with pytest.raises(cs.NotLockedError):
        await sem.release()


async def test_context_manager_and_check(store: cs.Store) -> None:
    sem = cs.Semaphore(store, "with", limit=1)
    with pytest.raises(cs.NotLockedError):
        sem.check()
    async with sem as entered:
        assert entered is sem
        sem.check()
        assert not await cs.Semaphore(store, "with", limit=1).acquire(blocking=False)
    assert sem.token is None
    assert await cs.Semaphore(store, "with", limit=1).acquire(blocking=False)


async def test_a_lost_hold_stays_lost_until_released(
    store: cs.Store, other_store: cs.Store
) -> None:
    lost: list[int] = []
    sem = cs.Semaphore(store, "lost", limit=1, ttl=0.4, on_lost=lambda: lost.append(1))
    faults = inject_faults(store)
    assert await sem.acquire(timeout=PROMPT)
    token = sem.token
    faults.fail({"renew_slot"})
    assert await eventually(lambda: bool(lost), 3.0)
    assert not sem.locked()
    with pytest.raises(cs.LockLostError):
        sem.check()
    assert sem.token == token, "the lost hold stays visible until release()"
    taker = cs.Semaphore(other_store, "lost", limit=1)
    assert await taker.acquire(timeout=5), "the unrenewed slot expired in the store"
    assert taker.token is not None
    assert token is not None
    assert taker.token > token
    faults.heal()
    with pytest.raises(cs.LockLostError):
        await sem.release()
    assert [h.token for h in await taker.holders()] == [taker.token], "a release freed it"
    assert lost == [1]
    await taker.release()


async def test_break_lock_by_token_and_whole(store: cs.Store, other_store: cs.Store) -> None:
    lost: list[str] = []

    def losing(who: str) -> Callable[[], None]:
        return lambda: lost.append(who)

    sems = [
        cs.Semaphore(store, "broken", limit=3, ttl=0.6, on_lost=losing(who))
        for who in ("a", "b", "c")
    ]
    for sem in sems:
        assert await sem.acquire(timeout=PROMPT)
    target = sems[1].token
    assert target is not None
    assert await cs.break_lock(other_store, "broken", token=target)
    assert not await cs.break_lock(other_store, "broken", token=target), "broken twice"
    assert [h.token for h in await sems[0].holders()] == [sems[0].token, sems[2].token]
    assert await eventually(lambda: lost == ["b"], 3.0), "its holder learns it when renewing"
    with pytest.raises(cs.LockLostError):
        await sems[1].release()
    assert await cs.break_lock(other_store, "broken")
    assert await sems[0].holders() == []
    assert not await cs.break_lock(other_store, "broken")
    assert await eventually(lambda: sorted(lost) == ["a", "b", "c"], 3.0)
    newcomer = cs.Semaphore(other_store, "broken", limit=1)
    assert await newcomer.acquire(blocking=False)
    assert newcomer.token is not None
    assert sems[2].token is not None
    assert newcomer.token > sems[2].token
    await newcomer.release()
    for sem in (sems[0], sems[2]):
        with pytest.raises(cs.LockLostError):
            await sem.release()


async def test_break_lock_keeps_working_for_mutexes(store: cs.Store) -> None:
    mutex = cs.Mutex(store, "both")
    sem = cs.Semaphore(store, "both", limit=2)
    assert await mutex.acquire(blocking=False)
    assert await sem.acquire(blocking=False)
    assert await cs.break_lock(store, "both")
    assert await cs.list_locks(store) == []
    assert await sem.holders() == []
    with pytest.raises(TypeError):
        await cs.break_lock(store, "both", token="1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("limit", "error"),
    [(0, ValueError), (-1, ValueError), ("2", TypeError), (2.0, TypeError), (True, TypeError)],
)
async def test_invalid_limit(store: cs.Store, limit: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        cs.Semaphore(store, "bad", limit=limit)


async def test_invalid_arguments(store: cs.Store) -> None:
    with pytest.raises(ValueError):
        cs.Semaphore(store, "", limit=1)
    with pytest.raises(ValueError):
        cs.Semaphore(store, "x", limit=1, ttl=math.nan)
    with pytest.raises(TypeError):
        cs.Semaphore(store, "x", limit=1, on_lost=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cs.Semaphore("memory://", "x", limit=1)  # type: ignore[arg-type]
