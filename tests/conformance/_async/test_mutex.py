"""Conformance tests of Mutex on every store (docs/guarantees.md).

Each test of the Go package's ``mutex_test.go`` is re-expressed here (named in the
docstring), plus what the Go suite does not cover: lease expiry, takeover after a crash,
renewal failures, owner-checked release and fencing tokens. Lease expiry is driven by
the ``timed`` fixture (a ManualClock on memory and SQLite, short real leases on the
server stores), with the expired holder paused by :class:`FrozenRenewals`; store
outages are simulated with :func:`~clustersync.testing.inject_faults`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import pytest

from clustersync import aio as cs
from clustersync._concurrency import aio as shim
from clustersync.testing import InjectedFault, inject_faults
from clustersync.testing.checker import FencedResource
from tests.conformance._async.conftest import TimeControl, eventually

#: Generous bound for "promptly" on a loaded machine (the library aims at milliseconds).
PROMPT = 1.0
#: A lease short enough to expire in real time on server stores.
SHORT_TTL = 0.3
#: The store operations a blocking acquire uses: a plain attempt, or a wait in the grant
#: queue (Redis with ``handoff="grant"``).
ACQUIRING = {"acquire_lease", "wait_for_grant"}


@pytest.fixture
async def other_store(store_url: str, namespace: str) -> AsyncIterator[cs.Store]:
    """A second connection to the same store and namespace: another instance."""
    opened = await cs.open_store(store_url, namespace=namespace)
    yield opened
    await opened.close()


def start_acquire(
    mutex: cs.Mutex,
    results: list[Any],
    *,
    timeout: float | None = None,
    cancel: shim.CancelEvent | None = None,
) -> shim.Task:
    """Run ``mutex.acquire`` in the background; its result (or error) goes to ``results``."""

    async def run() -> None:
        try:
            results.append(await mutex.acquire(timeout=timeout, cancel=cancel))
        except Exception as exc:
            results.append(exc)

    return shim.spawn(run, name="test-acquire")


class FrozenRenewals:
    """Holds back the lease renewals of one store, as if its process were paused while
    time passes (what a manual clock's jump does to a holder): each renewal waits until
    :meth:`thaw` and only then reaches the store — too late if the lease expired
    meanwhile. Thaw before releasing a mutex of that store (release waits for its
    renewer)."""

    def __init__(self, store: cs.Store) -> None:
        self._store = store
        self._backend = store._backend
        self._thawed = shim.CancelEvent()
        store._backend = cast(Any, self)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._backend, name)
        if name != "renew_lease":
            return attribute

        async def held_back(*args: Any, **kwargs: Any) -> Any:
            await shim.wait_for_event(self._thawed, None)
            return await attribute(*args, **kwargs)

        return held_back

    def thaw(self) -> None:
        self._store._backend = self._backend
        self._thawed.set()


# -- Go TestMutex ------------------------------------------------------------------------


async def test_lock_unlock_cycle(store: cs.Store) -> None:
    """Go: TestMutex/successful lock/unlock cycle."""
    mutex = cs.Mutex(store, "cycle")
    for _ in range(2):
        assert await mutex.acquire(timeout=PROMPT)
        assert mutex.locked()
        await mutex.release()
        assert not mutex.locked()
        assert mutex.token is None


async def test_release_when_not_locked_raises(store: cs.Store) -> None:
    """Go: TestMutex/unlock when not locked (Go panics; we raise NotLockedError)."""
    mutex = cs.Mutex(store, "never-locked")
    with pytest.raises(cs.NotLockedError):
        await mutex.release()
    assert await mutex.acquire(timeout=PROMPT)
    await mutex.release()
    with pytest.raises(RuntimeError):  # NotLockedError is a RuntimeError, like threading
        await mutex.release()


async def test_blocking_lock(store: cs.Store, other_store: cs.Store) -> None:
    """Go: TestMutex/blocking lock — a second acquire waits while held and gets the lock
    promptly after release (here from another store connection, i.e. another instance)."""
    holder = cs.Mutex(store, "blocking")
    waiter = cs.Mutex(other_store, "blocking")
    assert await holder.acquire(timeout=PROMPT)
    results: list[Any] = []
    task = start_acquire(waiter, results, timeout=10)
    assert not await shim.join(task, 0.3)
    assert results == []
    released_at = shim.monotonic()
    await holder.release()
    assert await shim.join(task, 5.0)
    handoff = shim.monotonic() - released_at
    assert results == [True]
    assert handoff < PROMPT
    assert waiter.locked()
    await waiter.release()


async def test_failed_lock_retries_until_the_store_heals(
    store: cs.Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Go: TestMutex/failed lock — with the store failing, acquire keeps retrying (and
    logs) instead of raising, and succeeds soon after the store heals (capped backoff,
    not Go's growing-to-minutes one)."""
    caplog.set_level(logging.WARNING, logger="clustersync")
    faults = inject_faults(store)
    mutex = cs.Mutex(store, "failed-lock")
    faults.fail()
    results: list[Any] = []
    task = start_acquire(mutex, results, timeout=10)
    assert not await shim.join(task, 0.5)
    assert results == []
    assert sum(faults.failures[operation] for operation in ACQUIRING) >= 2
    healed_at = shim.monotonic()
    faults.heal()
    assert await shim.join(task, 5.0)
    assert results == [True]
    assert shim.monotonic() - healed_at < 3.0
    assert any(r.name.startswith("clustersync") for r in caplog.records)
    await mutex.release()


async def test_failed_lock_with_timeout_raises_the_store_error(store: cs.Store) -> None:
    """Go: TestMutex/failed lock, with a deadline: when the timeout runs out while the
    store still fails, the store error escapes (translated, with the driver cause)."""
    faults = inject_faults(store)
    mutex = cs.Mutex(store, "failed-lock-timeout")
    faults.fail()
    started = shim.monotonic()
    with pytest.raises(cs.StoreUnavailableError) as info:
        await mutex.acquire(timeout=0.3)
    assert shim.monotonic() - started < 3.0
    assert isinstance(info.value.__cause__, InjectedFault)
    assert isinstance(info.value, ConnectionError)
    with pytest.raises(cs.StoreUnavailableError):
        await mutex.acquire(blocking=False)
    assert mutex.token is None
    assert not mutex.locked()
    faults.heal()
    assert await mutex.acquire(blocking=False)
    await mutex.release()


async def test_an_acquisition_slower_than_the_ttl_is_not_handed_out(
    store: cs.Store, other_store: cs.Store
) -> None:
    """If the store answers only after the ttl has passed, the lease may already have
    expired: acquire must not return it as held (it gives it back and tries again)."""
    faults = inject_faults(store)
    mutex = cs.Mutex(store, "slower-than-ttl", ttl=0.1)
    faults.slow(ACQUIRING, 0.15)
    assert not await mutex.acquire(timeout=0.5)
    assert mutex.token is None
    assert not mutex.locked()
    faults.heal()
    other = cs.Mutex(other_store, "slower-than-ttl", ttl=5.0)
    assert await other.acquire(blocking=False)  # nothing was left held
    await other.release()
    assert await mutex.acquire(timeout=5)
    assert mutex.locked()
    await mutex.release()


async def test_failed_unlock(timed: TimeControl) -> None:
    """Go: TestMutex/failed unlock — release while the store fails does not raise; the
    lease stays in the store until it expires, then someone else gets it."""
    async with await timed.open_store() as other_store:
        mutex = cs.Mutex(timed.store, "failed-unlock", ttl=SHORT_TTL)
        other = cs.Mutex(other_store, "failed-unlock", ttl=SHORT_TTL)
        expires = await timed.at(SHORT_TTL)  # at the earliest
        assert await mutex.acquire(timeout=PROMPT)
        faults = inject_faults(timed.store)
        faults.fail()
        errors: list[Exception] = []

        async def release() -> None:
            try:
                await mutex.release()  # neither NotLockedError nor the store error
            except Exception as exc:
                errors.append(exc)

        started = shim.monotonic()
        task = shim.spawn(release, name="test-release")
        # While the release retries (until the lease would expire), the lease is held.
        assert not await other.acquire(blocking=False)
        assert await shim.join(task, 5.0)
        assert errors == []
        assert shim.monotonic() - started < 3.0
        assert faults.failures["release_lease"] >= 1
        assert mutex.token is None
        assert not mutex.locked()
        faults.heal()
        if timed.manual:  # still held after release gave up (real time is at the expiry)
            assert not await other.acquire(blocking=False)
        await timed.advance_to(expires)
        assert await other.acquire(timeout=PROMPT)
        await other.release()


async def test_discrete_keys(store: cs.Store) -> None:
    """Go: TestMutex/discrete keys."""
    m1, m2, m3 = (cs.Mutex(store, f"discrete-{i}") for i in (1, 2, 3))
    for mutex in (m1, m2, m3):
        assert await mutex.acquire(blocking=False)
    await m1.release()
    await m3.release()
    assert await m1.acquire(blocking=False)
    assert m2.locked()
    await m1.release()
    await m2.release()


async def test_timeout_while_held(store: cs.Store) -> None:
    """Go: TestMutex/with uncancelled context — a waiter with a deadline does not get a
    held lock before the deadline, and gets it promptly after release. (That renewal
    keeps a lease held past its ttl is test_renewal_keeps_the_lease_alive.)"""
    holder = cs.Mutex(store, "deadline")
    waiter = cs.Mutex(store, "deadline")
    assert await holder.acquire(timeout=PROMPT)
    started = shim.monotonic()
    assert not await waiter.acquire(timeout=0.5)
    assert shim.monotonic() - started >= 0.5
    assert waiter.token is None
    assert not waiter.locked()
    results: list[Any] = []
    task = start_acquire(waiter, results, timeout=10)
    assert not await shim.join(task, 0.2)
    released_at = shim.monotonic()
    await holder.release()
    assert await shim.join(task, 5.0)
    assert results == [True]
    assert shim.monotonic() - released_at < PROMPT
    await waiter.release()


async def test_cancel_event_stops_waiting(store: cs.Store) -> None:
    """Go: TestMutex/with canceled context — setting ``cancel`` makes a waiting acquire
    return False promptly, holding nothing."""
    holder = cs.Mutex(store, "cancelled")
    waiter = cs.Mutex(store, "cancelled")
    assert await holder.acquire(timeout=PROMPT)
    cancel = shim.CancelEvent()
    results: list[Any] = []
    task = start_acquire(waiter, results, cancel=cancel)
    assert not await shim.join(task, 0.3)
    cancelled_at = shim.monotonic()
    cancel.set()
    assert await shim.join(task, 5.0)
    assert results == [False]
    assert shim.monotonic() - cancelled_at < PROMPT
    assert waiter.token is None
    assert not waiter.locked()
    # Already cancelled: returns False at once.
    started = shim.monotonic()
    assert not await waiter.acquire(cancel=cancel)
    assert shim.monotonic() - started < PROMPT
    assert holder.locked()
    await holder.release()
    assert await waiter.acquire(blocking=False)
    await waiter.release()


async def test_mutual_exclusion_under_contention(store: cs.Store, other_store: cs.Store) -> None:
    """Six contenders on two instances take turns: never two holders at once, every
    acquisition gets a new, larger token, and releases hand over without polling."""
    inside: list[int] = []
    overlaps: list[int] = []
    tokens: list[int] = []
    errors: list[Exception] = []

    async def contend(mutex: cs.Mutex) -> None:
        try:
            for _ in range(3):
                assert await mutex.acquire(timeout=10)
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(len(inside))
                assert mutex.token is not None
                tokens.append(mutex.token)
                await shim.sleep(0.002)
                inside.pop()
                await mutex.release()
        except Exception as exc:
            errors.append(exc)

    tasks = [
        shim.spawn(contend, cs.Mutex(s, "contended"), name=f"contender-{i}")
        for i, s in enumerate([store, other_store] * 3)
    ]
    for task in tasks:
        assert await shim.join(task, 15.0)
    assert errors == []
    assert overlaps == []
    assert len(tokens) == 18
    assert tokens == sorted(set(tokens))


# -- threading.Lock-like API -------------------------------------------------------------


async def test_non_blocking_and_zero_timeout(store: cs.Store) -> None:
    """``blocking=False`` and ``timeout=0`` try once, like ``threading.Lock.acquire``."""
    first = cs.Mutex(store, "try-once")
    second = cs.Mutex(store, "try-once")
    assert await first.acquire(blocking=False)
    started = shim.monotonic()
    assert not await second.acquire(blocking=False)
    assert not await second.acquire(timeout=0)
    assert shim.monotonic() - started < PROMPT
    await first.release()
    assert await second.acquire(timeout=0)
    await second.release()


async def test_invalid_acquire_arguments(store: cs.Store) -> None:
    mutex = cs.Mutex(store, "bad-args")
    with pytest.raises(ValueError):  # as threading.Lock: no timeout without blocking
        await mutex.acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError):
        await mutex.acquire(timeout=-5)
    with pytest.raises(ValueError):
        await mutex.acquire(timeout=math.nan)
    assert mutex.token is None
    assert await mutex.acquire(blocking=False)  # nothing was left behind
    await mutex.release()


@pytest.mark.parametrize(
    ("name", "error"),
    [("", ValueError), ("n" * 256, ValueError), (42, TypeError), (None, TypeError)],
)
async def test_invalid_name(store: cs.Store, name: Any, error: type[Exception]) -> None:
    """Go: TestMakeLockKey/fails when empty; over-long names fail at once instead of
    hanging (Go retries forever past 144 characters)."""
    with pytest.raises(error):
        cs.Mutex(store, name)


@pytest.mark.parametrize(
    ("ttl", "error"),
    [(0, ValueError), (-1.0, ValueError), (math.inf, ValueError), ("5", TypeError)],
)
async def test_invalid_ttl(store: cs.Store, ttl: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        cs.Mutex(store, "bad-ttl", ttl=ttl)


async def test_invalid_store_and_on_lost(store: cs.Store) -> None:
    with pytest.raises(TypeError):
        cs.Mutex("memory://", "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cs.Mutex(store, "x", on_lost=42)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["n" * 255, "ключ 🔒 with spaces/and:colons", "m:x"])
async def test_any_valid_name_works(store: cs.Store, name: str) -> None:
    """Go: TestMakeLockKey/not-empty — and the longest allowed and non-ASCII names work
    on every store."""
    mutex = cs.Mutex(store, name)
    other = cs.Mutex(store, name)
    assert await mutex.acquire(timeout=PROMPT)
    assert not await other.acquire(blocking=False)
    await mutex.release()
    assert await other.acquire(blocking=False)
    await other.release()


async def test_not_reentrant(store: cs.Store) -> None:
    """A second acquire on a held mutex blocks (here: times out), like threading.Lock."""
    mutex = cs.Mutex(store, "not-reentrant")
    assert await mutex.acquire(timeout=PROMPT)
    token = mutex.token
    assert not await mutex.acquire(timeout=0.2)
    assert not await mutex.acquire(blocking=False)
    assert mutex.locked()
    assert mutex.token == token
    await mutex.release()


async def test_release_from_another_task(store: cs.Store) -> None:
    mutex = cs.Mutex(store, "handed-over")
    assert await mutex.acquire(timeout=PROMPT)
    errors: list[Exception] = []

    async def release() -> None:
        try:
            await mutex.release()
        except Exception as exc:
            errors.append(exc)

    assert await shim.join(shim.spawn(release, name="test-release"), 5.0)
    assert errors == []
    assert not mutex.locked()
    other = cs.Mutex(store, "handed-over")
    assert await other.acquire(blocking=False)
    await other.release()


async def test_context_manager(store: cs.Store) -> None:
    mutex = cs.Mutex(store, "with")
    probe = cs.Mutex(store, "with")
    async with mutex as entered:
        assert entered is mutex
        assert mutex.locked()
        assert isinstance(mutex.token, int)
        assert not await probe.acquire(blocking=False)
    assert mutex.token is None

    async def fail_inside() -> None:
        async with mutex:
            raise KeyError("boom")

    with pytest.raises(KeyError):  # released, and the error propagates
        await fail_inside()
    assert not mutex.locked()
    assert await probe.acquire(blocking=False)
    await probe.release()


async def test_check_when_not_held(store: cs.Store) -> None:
    mutex = cs.Mutex(store, "check")
    with pytest.raises(cs.NotLockedError):
        mutex.check()
    async with mutex:
        mutex.check()
    with pytest.raises(cs.NotLockedError):
        mutex.check()


# -- fencing tokens ----------------------------------------------------------------------


async def test_tokens_strictly_increase(store: cs.Store, other_store: cs.Store) -> None:
    """Every acquisition of a name mints a larger token, whichever object or instance."""
    first = cs.Mutex(store, "fenced")
    second = cs.Mutex(other_store, "fenced")
    tokens: list[int] = []
    for mutex in (first, first, second, first, second):
        assert await mutex.acquire(timeout=PROMPT)
        assert mutex.token is not None
        tokens.append(mutex.token)
        await mutex.release()
    assert tokens == sorted(set(tokens))


async def test_tokens_survive_reopening_the_store(store_url: str, namespace: str) -> None:
    """Tokens keep increasing across a restart of a durable store (same SQLite file)."""
    tokens: list[int] = []
    for _ in range(2):
        store = await cs.open_store(store_url, namespace=namespace)
        try:
            mutex = cs.Mutex(store, "fenced-restart")
            for _ in range(2):
                assert await mutex.acquire(timeout=PROMPT)
                assert mutex.token is not None
                tokens.append(mutex.token)
                await mutex.release()
        finally:
            await store.close()
    assert tokens == sorted(set(tokens))


async def test_takeover_after_expiry_mints_a_larger_token(timed: TimeControl) -> None:
    async with await timed.open_store() as paused_store:
        first = cs.Mutex(paused_store, "fenced-expiry", ttl=SHORT_TTL)
        second = cs.Mutex(timed.store, "fenced-expiry", ttl=SHORT_TTL)
        frozen = FrozenRenewals(paused_store)
        try:
            expires = await timed.at(SHORT_TTL)  # at the earliest
            assert await first.acquire(timeout=PROMPT)
            await timed.advance_to(expires)
            assert await second.acquire(timeout=PROMPT)
        finally:
            frozen.thaw()
        assert first.token is not None
        assert second.token is not None
        assert second.token > first.token
        with pytest.raises(cs.LockLostError):
            await first.release()
        await second.release()


# -- isolation ---------------------------------------------------------------------------


async def test_namespaces_isolate(store: cs.Store, store_url: str, namespace: str) -> None:
    other_ns = await cs.open_store(store_url, namespace=namespace + "-other")
    try:
        here = cs.Mutex(store, "shared-name")
        there = cs.Mutex(other_ns, "shared-name")
        assert await here.acquire(blocking=False)
        assert await there.acquire(blocking=False)
        await here.release()
        await there.release()
    finally:
        await other_ns.close()


async def test_mutex_and_recurring_job_with_the_same_name_do_not_collide(
    store: cs.Store,
) -> None:
    """A mutex ``x`` (and one named like the job lease, ``j:x``) never blocks job ``x``."""
    runs: list[int] = []
    async with cs.Mutex(store, "x"), cs.Mutex(store, "j:x"):
        job = cs.schedule(
            store, "x", cs.wait_for_interval(timedelta(hours=1)), lambda: runs.append(1)
        )
        try:
            assert await eventually(lambda: bool(runs), 5.0)
        finally:
            assert await job.close(timeout=5)
    assert runs == [1]


# -- ownership, loss and renewal -----------------------------------------------------------


async def test_release_is_owner_checked(timed: TimeControl) -> None:
    """A holder whose lease expired cannot release the next holder's lease (Go's Unlock
    deletes it unconditionally and lets a third contender in)."""
    async with await timed.open_store() as paused_store:
        a = cs.Mutex(paused_store, "owned", ttl=SHORT_TTL)
        b = cs.Mutex(timed.store, "owned", ttl=SHORT_TTL)
        c = cs.Mutex(timed.store, "owned", ttl=SHORT_TTL)
        frozen = FrozenRenewals(paused_store)
        try:
            expires = await timed.at(SHORT_TTL)  # at the earliest
            assert await a.acquire(timeout=PROMPT)
            await timed.advance_to(expires)
            assert await b.acquire(timeout=PROMPT)
        finally:
            frozen.thaw()
        with pytest.raises(cs.LockLostError):
            await a.release()
        assert a.token is None
        assert b.locked()
        b.check()
        assert not await c.acquire(blocking=False)
        await b.release()
        assert await c.acquire(blocking=False)
        await c.release()


async def test_on_lost_when_taken_over(timed: TimeControl) -> None:
    """Lease expired and taken by another holder: on_lost is called exactly once,
    locked() turns False, check() and release() raise LockLostError."""
    lost: list[int] = []
    async with await timed.open_store() as paused_store:
        a = cs.Mutex(paused_store, "lost", ttl=SHORT_TTL, on_lost=lambda: lost.append(1))
        b = cs.Mutex(timed.store, "lost", ttl=SHORT_TTL)
        frozen = FrozenRenewals(paused_store)
        try:
            expires = await timed.at(SHORT_TTL)  # at the earliest
            assert await a.acquire(timeout=PROMPT)
            await timed.advance_to(expires)
            assert await b.acquire(timeout=PROMPT)
        finally:
            frozen.thaw()
        assert await eventually(lambda: bool(lost), 3.0)  # the next renewal finds out
        assert not a.locked()
        with pytest.raises(cs.LockLostError):
            a.check()
        await shim.sleep(0.3)
        assert lost == [1]
        with pytest.raises(cs.LockLostError):
            await a.release()
        with pytest.raises(cs.NotLockedError):
            a.check()
        assert b.locked()
        await b.release()
        assert lost == [1]


async def test_on_lost_when_renewals_keep_failing(store: cs.Store) -> None:
    """Renewals failing past the lease's deadline: retried meanwhile, then the hold is
    declared lost once (Go's refresher silently gives up after one failure)."""
    lost: list[int] = []
    a = cs.Mutex(store, "renew-fails", ttl=0.3, on_lost=lambda: lost.append(1))
    b = cs.Mutex(store, "renew-fails", ttl=0.3)
    faults = inject_faults(store)
    assert await a.acquire(timeout=PROMPT)
    faults.fail({"renew_lease"})
    failing_since = shim.monotonic()
    assert await eventually(lambda: bool(lost), 3.0)
    assert shim.monotonic() - failing_since < 2.0
    assert faults.failures["renew_lease"] >= 2  # retried before giving up
    assert not a.locked()
    with pytest.raises(cs.LockLostError):
        a.check()
    assert await b.acquire(timeout=3.0)  # the store let the unrenewed lease expire
    with pytest.raises(cs.LockLostError):
        await a.release()
    assert b.locked()
    assert lost == [1]
    faults.heal()
    await b.release()


async def test_renewal_keeps_the_lease_alive(store: cs.Store) -> None:
    holder = cs.Mutex(store, "renewed", ttl=0.5)
    probe = cs.Mutex(store, "renewed", ttl=0.5)
    assert await holder.acquire(timeout=PROMPT)
    await shim.sleep(1.5)  # three ttls
    assert not await probe.acquire(blocking=False)
    assert holder.locked()
    holder.check()
    await holder.release()


async def test_crash_takeover_when_renewals_stop(store: cs.Store, other_store: cs.Store) -> None:
    """A holder that stops renewing (crashed) is replaced as soon as its lease expires
    (Go: 7.5–16 s; here about the ttl), by a waiter on another instance."""
    crashed = cs.Mutex(store, "crash", ttl=0.3)
    waiter = cs.Mutex(other_store, "crash", ttl=0.3)
    faults = inject_faults(store)
    assert await crashed.acquire(timeout=PROMPT)
    faults.fail({"renew_lease", "release_lease"})
    started = shim.monotonic()
    assert await waiter.acquire(timeout=5.0)
    assert shim.monotonic() - started < 2.0
    assert crashed.token is not None
    assert waiter.token is not None
    assert waiter.token > crashed.token
    faults.heal()
    with pytest.raises(cs.LockLostError):
        await crashed.release()
    assert waiter.locked()
    await waiter.release()


async def test_waiter_gets_an_expired_lease_at_once(timed: TimeControl) -> None:
    """Crash takeover, deterministic: a waiter blocked on a lease gets it as soon as the
    store's clock passes the expiry, without polling for it. With a manual clock the
    lease lasts 15 s (a waiter polling every MAX_WAIT_WITHOUT_NEWS would be late); a
    server's must expire in real time."""
    ttl = 15.0 if timed.manual else 0.5  # long enough to see the waiter block first
    async with await timed.open_store() as crashed_store:
        crashed = cs.Mutex(crashed_store, "expiry", ttl=ttl)
        waiter = cs.Mutex(timed.store, "expiry", ttl=ttl)
        frozen = FrozenRenewals(crashed_store)  # the holder never renews again
        try:
            expires = await timed.at(ttl)  # at the earliest
            assert await crashed.acquire(timeout=PROMPT)
            results: list[Any] = []
            task = start_acquire(waiter, results, timeout=10)
            assert not await shim.join(task, 0.2)
            await timed.advance_to(expires)
            expired_at = shim.monotonic()
            assert await shim.join(task, 5.0)
            assert results == [True]
            assert shim.monotonic() - expired_at < PROMPT
        finally:
            frozen.thaw()
        with pytest.raises(cs.LockLostError):
            await crashed.release()
        await waiter.release()


# -- the fault injection helper used above ---------------------------------------------------


async def test_fault_injection_helper(store: cs.Store) -> None:
    faults = inject_faults(store, {"acquire_lease"})
    mutex = cs.Mutex(store, "faulty")
    assert not faults.failing
    assert await mutex.acquire(blocking=False)
    faults.failing = True  # only the preselected operation fails
    await mutex.release()
    with pytest.raises(cs.StoreUnavailableError) as info:
        await mutex.acquire(blocking=False)
    assert isinstance(info.value.__cause__, InjectedFault)
    assert faults.calls["acquire_lease"] == 2
    assert faults.failures == {"acquire_lease": 1}
    assert faults.calls["release_lease"] == 1
    with pytest.raises(ValueError):
        faults.fail({"no_such_operation"})
    with pytest.raises(ValueError):
        inject_faults(store)
    faults.restore()
    faults.fail()
    assert await mutex.acquire(blocking=False)  # the real engine is back
    await mutex.release()
    assert faults.calls["acquire_lease"] == 2


# -- a Mutex shared by threads or tasks ---------------------------------------------------


async def test_a_lost_hold_stays_lost_for_its_holder_while_another_waits(
    store: cs.Store, other_store: cs.Store
) -> None:
    """Regression: with one ``Mutex`` shared by A and B, A's hold was one slot that B's
    acquisition overwrote after A's lease was lost. A then saw ``check()`` pass, read B's
    token (its writes were accepted by the fenced resource) and ``release()`` freed B's
    lease. Now the lost hold stays A's, visibly lost, until A's ``release()``
    acknowledges it; only then does B's acquisition go through."""
    resource = FencedResource()
    lost = shim.CancelEvent()
    mutex = cs.Mutex(store, "shared", ttl=1.0, on_lost=lost.set)
    faults = inject_faults(store)
    assert await mutex.acquire()  # "A"
    token_a = mutex.token
    assert token_a is not None
    assert resource.write(token_a, holder="A")
    results: list[Any] = []
    waiter = start_acquire(mutex, results, timeout=30)  # "B", on the same object
    faults.fail({"renew_lease"})
    assert await shim.wait_for_event(lost, 5), "A's lease was never declared lost"
    faults.heal()
    # Another instance takes the name over and writes with a newer token.
    intruder = cs.Mutex(other_store, "shared", ttl=30)
    assert await intruder.acquire(timeout=5)
    token_intruder = intruder.token
    assert token_intruder is not None
    assert resource.write(token_intruder, holder="intruder")
    await shim.sleep(0.3)
    assert not results, "B acquired through the object while A's lost hold was unreleased"
    # A still sees its own hold, lost: no check passes, the token is A's.
    assert not mutex.locked()
    with pytest.raises(cs.LockLostError):
        mutex.check()
    assert mutex.token == token_a
    assert not resource.write(mutex.token, holder="A"), "A wrote with a stale token"
    with pytest.raises(cs.LockLostError):
        await mutex.release()  # acknowledges the loss; frees nothing of anyone's
    leases = await other_store._ops.list_leases()
    assert [lease.token for lease in leases] == [token_intruder], "A's release freed a lease"
    await intruder.release()
    assert await shim.join(waiter, 10)
    assert results == [True], results
    token_b = mutex.token
    assert token_b is not None
    assert token_b > token_intruder
    mutex.check()  # vouches for B's hold, whose token B reads
    assert resource.write(token_b, holder="B")
    await mutex.release()


async def test_acquire_on_a_held_object_waits_for_its_release(store: cs.Store) -> None:
    """Like ``threading.Lock``: a second acquire through the same object waits for the
    release (a non-blocking one returns False) and then gets a new token."""
    mutex = cs.Mutex(store, "local")
    assert await mutex.acquire()
    first = mutex.token
    assert not await mutex.acquire(blocking=False)
    assert not await mutex.acquire(timeout=0.1)
    results: list[Any] = []
    waiter = start_acquire(mutex, results, timeout=10)
    await shim.sleep(0.1)
    assert not results
    await mutex.release()
    assert await shim.join(waiter, 10)
    assert results == [True]
    assert mutex.token is not None
    assert first is not None
    assert mutex.token > first
    await mutex.release()


# -- outcome unknown ----------------------------------------------------------------------


async def test_a_retried_acquire_does_not_orphan_the_lease(
    store: cs.Store, other_store: cs.Store
) -> None:
    """Regression: an acquire whose answer was lost (the store took the lease) retried
    with a new owner id, so the first attempt's lease was orphaned until its ttl and the
    acquire waited that long. One owner per acquisition makes the retry find it."""
    faults = inject_faults(store)
    faults.lose_answers(ACQUIRING)
    mutex = cs.Mutex(store, "unknown", ttl=10)
    began = shim.monotonic()
    assert await mutex.acquire(timeout=8)
    assert shim.monotonic() - began < 3, "the retry waited for an orphaned lease"
    assert faults.failures["acquire_lease"] + faults.failures["wait_for_grant"] == 1
    leases = await other_store._ops.list_leases()
    assert [(lease.name, lease.token) for lease in leases] == [("m:unknown", mutex.token)]
    await mutex.release()
    assert await other_store._ops.list_leases() == []


async def test_a_retried_release_reports_no_false_loss(
    store: cs.Store, other_store: cs.Store
) -> None:
    """Regression: a release whose answer was lost (the store freed the lease) retried,
    found nothing to release and raised a spurious ``LockLostError``."""
    faults = inject_faults(store)
    mutex = cs.Mutex(store, "unknown-release", ttl=10)
    assert await mutex.acquire()
    faults.lose_answers({"release_lease"})
    await mutex.release()  # no LockLostError: the hold was never lost
    assert faults.failures["release_lease"] == 1
    assert await other_store._ops.list_leases() == []
    assert await cs.Mutex(other_store, "unknown-release").acquire(blocking=False)


async def test_the_local_deadline_is_short_of_the_lease(store: cs.Store) -> None:
    """The holder stops trusting its lease a little before the store ends it: counted
    from before the request was sent, and 0.1 % short of the ttl, in case this host's
    clock runs faster than the store's."""
    ttl = 100.0
    mutex = cs.Mutex(store, "drift", ttl=ttl)
    before = shim.monotonic()
    assert await mutex.acquire()
    after = shim.monotonic()
    hold = mutex._lease.hold
    assert hold is not None
    assert hold.deadline <= after + ttl * (1 - 0.001)
    assert hold.deadline < before + ttl - 0.05, "no margin for clock drift"
    await mutex.release()
