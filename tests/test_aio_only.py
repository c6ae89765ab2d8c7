"""asyncio-only behaviour of ``clustersync.aio`` that the generated sync suite cannot
express: task cancellation, coroutine callbacks, and keeping the event loop free."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from clustersync import aio
from clustersync.testing import inject_faults
from tests.conformance._async.conftest import eventually

HOUR = timedelta(hours=1)


@pytest.fixture
async def store(store_url: str, namespace: str) -> AsyncIterator[aio.Store]:
    opened = await aio.open_store(store_url, namespace=namespace)
    yield opened
    await opened.close()


# -- cancellation --------------------------------------------------------------------------


async def test_cancelling_a_waiting_acquire_leaves_nothing_held(store: aio.Store) -> None:
    holder = aio.Mutex(store, "cancel-wait")
    waiter = aio.Mutex(store, "cancel-wait")
    assert await holder.acquire(timeout=1)
    task = asyncio.create_task(waiter.acquire())
    await asyncio.sleep(0.1)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert waiter.token is None
    assert not waiter.locked()
    await holder.release()
    third = aio.Mutex(store, "cancel-wait")
    assert await third.acquire(blocking=False)  # at once: nothing left behind
    await third.release()
    assert await waiter.acquire(timeout=1)  # the cancelled object is still usable
    await waiter.release()


@pytest.mark.parametrize("delay", [0, 1, 2, 3, 5, 8, 0.0002, 0.001, 0.003])
async def test_cancelling_acquire_at_any_point_leaves_nothing_held(
    store: aio.Store, delay: float
) -> None:
    """Cancel a free-lock acquire after ``delay`` (an int: that many loop iterations; a
    float: seconds), also while the store operation is in flight in a worker thread:
    either the acquire completed and we hold the lock, or nothing is held."""
    mutex = aio.Mutex(store, "cancel-anywhere")
    task = asyncio.create_task(mutex.acquire())
    if isinstance(delay, int):
        for _ in range(delay):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(delay)
    task.cancel()
    try:
        acquired = await task
    except asyncio.CancelledError:
        acquired = False
    probe = aio.Mutex(store, "cancel-anywhere")
    if acquired:
        assert mutex.locked()
        assert not await probe.acquire(blocking=False)
        await mutex.release()
    else:
        assert mutex.token is None
        assert not mutex.locked()
    assert await probe.acquire(blocking=False)
    await probe.release()


async def test_cancelling_a_task_inside_async_with_releases(store: aio.Store) -> None:
    mutex = aio.Mutex(store, "cancel-holder")
    entered = asyncio.Event()

    async def hold() -> None:
        async with mutex:
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(hold())
    await asyncio.wait_for(entered.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not mutex.locked()
    probe = aio.Mutex(store, "cancel-holder")
    assert await probe.acquire(blocking=False)
    await probe.release()


async def test_cancel_event_is_an_asyncio_event(store: aio.Store) -> None:
    holder = aio.Mutex(store, "aio-cancel")
    waiter = aio.Mutex(store, "aio-cancel")
    assert await holder.acquire(timeout=1)
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, cancel.set)
    started = time.monotonic()
    assert not await waiter.acquire(cancel=cancel)
    assert time.monotonic() - started < 1.0
    await holder.release()


# -- coroutine callbacks -------------------------------------------------------------------


async def test_coroutine_callback_in_schedule(store: aio.Store) -> None:
    runs: list[float] = []

    async def callback() -> None:
        await asyncio.sleep(0.01)
        runs.append(time.monotonic())

    job = aio.schedule(store, "coro", aio.wait_for_interval(timedelta(milliseconds=50)), callback)
    try:
        assert await eventually(lambda: len(runs) >= 3, 5.0)
    finally:
        assert await job.close(timeout=5)
    assert (await job.metadata()).last_finished is not None


async def test_close_waits_for_a_coroutine_callback(store: aio.Store) -> None:
    started = asyncio.Event()
    finished: list[bool] = []

    async def callback() -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(True)

    job = aio.schedule(store, "coro-close", aio.wait_for_interval(HOUR), callback)
    await asyncio.wait_for(started.wait(), 2)
    assert await job.close()
    assert finished == [True]


async def test_coroutine_callback_exception_is_logged(
    store: aio.Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="clustersync")
    runs: list[int] = []

    async def callback() -> None:
        runs.append(1)
        raise RuntimeError("coroutine boom")

    job = aio.schedule(
        store, "coro-boom", aio.wait_for_interval(timedelta(milliseconds=50)), callback
    )
    try:
        assert await eventually(lambda: len(runs) >= 2, 5.0)
    finally:
        assert await job.close(timeout=5)
    assert any(
        r.name == "clustersync"
        and r.exc_info is not None
        and "coroutine boom" in str(r.exc_info[1])
        for r in caplog.records
    )


async def test_sync_callback_does_not_block_the_loop(store: aio.Store) -> None:
    """A plain (blocking) callback runs in a worker thread: the loop keeps serving other
    tasks, e.g. a mutex on the same store, while it runs."""
    started = threading.Event()
    release = threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(10)

    job = aio.schedule(store, "blocking", aio.wait_for_interval(HOUR), blocking)
    try:
        assert await eventually(started.is_set)
        worst = 0.0
        for _ in range(20):
            before = time.monotonic()
            await asyncio.sleep(0.01)
            worst = max(worst, time.monotonic() - before)
        assert worst < 0.25
        async with aio.Mutex(store, "meanwhile") as mutex:
            assert mutex.locked()
        assert not release.is_set()
    finally:
        release.set()
        assert await job.close(timeout=5)


async def test_coroutine_on_lost(store: aio.Store) -> None:
    """A coroutine on_lost is awaited once when renewals fail until the lease expires."""
    lost: list[int] = []

    async def on_lost() -> None:
        await asyncio.sleep(0)
        lost.append(1)

    mutex = aio.Mutex(store, "coro-lost", ttl=0.6, on_lost=on_lost)
    assert await mutex.acquire(timeout=1)
    faults = inject_faults(store, {"renew_lease"})
    faults.fail({"renew_lease"})
    assert await eventually(lambda: bool(lost), 3.0)
    await asyncio.sleep(0.3)
    assert lost == [1]
    assert not mutex.locked()
    faults.heal()
    with pytest.raises(aio.LockLostError):
        await mutex.release()


# -- the loop's default executor stays free --------------------------------------------------


async def test_plain_callbacks_do_not_fill_the_loops_default_executor(
    store: aio.Store,
) -> None:
    """Regression: plain callbacks ran in the loop's default executor (``to_thread``),
    which drivers also use to resolve host names when they reconnect: long callbacks
    filling it stalled every reconnection, renewals failed, and another instance fired
    the jobs again. Callbacks now run on executors of their own."""
    loop = asyncio.get_running_loop()
    default_workers = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
    release = threading.Event()
    started: list[str] = []

    def long_callback(key: str = "recurring", props: object = None) -> None:
        started.append(key)
        release.wait(20)

    scheduler = aio.get_job_once_scheduler(store, max_running=default_workers + 2)
    scheduler.set_callback(long_callback)
    await scheduler.start()
    jobs = [(f"long-{n}", datetime.now(UTC), None) for n in range(default_workers + 2)]
    await scheduler.schedule_many(jobs)
    job = aio.schedule(store, "long", aio.wait_for_interval(HOUR), long_callback)
    try:
        assert await eventually(lambda: len(started) == len(jobs) + 1, 10), started
        began = time.monotonic()
        # What a reconnecting driver does: resolve a host name in the default executor.
        await asyncio.wait_for(loop.getaddrinfo("localhost", 6379), 5)
        assert time.monotonic() - began < 1.0, "the default executor was full of callbacks"
    finally:
        release.set()
        await job.close(timeout=10)
        await scheduler.stop(timeout=10)
