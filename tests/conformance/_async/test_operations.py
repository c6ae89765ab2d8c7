"""Operating a cluster on every store: the registry of recurring jobs (list, pause,
resume, trigger) and breaking a lock."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from clustersync import aio as cs
from clustersync._concurrency import aio as shim
from clustersync.testing.checker import FencedResource
from tests.conformance._async.conftest import eventually

HOUR = timedelta(hours=1)


@pytest.fixture
async def other_store(store_url: str, namespace: str) -> AsyncIterator[cs.Store]:
    """A second connection to the same store and namespace: another instance."""
    opened = await cs.open_store(store_url, namespace=namespace, identity="other-instance")
    yield opened
    await opened.close()


class Runs:
    """A callback that counts its runs; ``hold`` makes a run wait until released."""

    def __init__(self, *, fail: bool = False) -> None:
        self.count = 0
        self.fail = fail
        self.hold = threading.Event()
        self.hold.set()
        self.running = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.running.set()
        self.hold.wait(10)
        self.running.clear()
        if self.fail:
            raise ValueError("the report could not be built\nsecond line")


async def find(store: cs.Store, key: str) -> cs.RecurringJobInfo:
    (info,) = [job for job in await cs.list_recurring_jobs(store) if job.key == key]
    return info


async def test_the_registry_lists_recurring_jobs(store: cs.Store, other_store: cs.Store) -> None:
    runs = Runs()
    runs.hold.clear()
    job = cs.schedule(store, "report", cs.wait_for_interval(HOUR), runs)
    other = cs.schedule(other_store, "report", cs.wait_for_interval(HOUR), runs)
    try:
        assert await eventually(runs.running.is_set, 10)
        info = await find(other_store, "report")
        assert info.schedule == "every 1h"
        assert not info.paused
        assert info.running_on in {store.identity, other_store.identity}
        assert info.last_started is not None
        assert info.last_finished is None
        assert info.last_outcome is None
        runs.hold.set()
        deadline = shim.monotonic() + 5
        while (info := await find(other_store, "report")).last_outcome is None:
            assert shim.monotonic() < deadline, info
            await shim.sleep(0.02)
        assert info.last_outcome == "ok"
        assert info.last_error is None
        assert info.running_on is None
        assert info.instances == 2
        assert info.last_finished is not None
        # Both instances plan the next run an hour later (once each noticed the run).
        later = datetime.now(UTC) + timedelta(minutes=50)
        deadline = shim.monotonic() + 5
        while (info := await find(other_store, "report")).next_run is None or (
            info.next_run < later
        ):
            assert shim.monotonic() < deadline, info
            await shim.sleep(0.02)
        assert runs.count == 1, "scheduled by two instances, it ran once"
    finally:
        await job.close(timeout=5)
        await other.close(timeout=5)
    assert (await find(store, "report")).instances == 0, "closed jobs unregister"


async def test_a_failed_run_is_listed_with_its_error(store: cs.Store) -> None:
    runs = Runs(fail=True)
    job = cs.schedule(store, "failing", cs.wait_for_interval(HOUR), runs)
    try:
        assert await eventually(lambda: runs.count == 1, 10)
        deadline = shim.monotonic() + 5
        while (info := await find(store, "failing")).last_outcome is None:
            assert shim.monotonic() < deadline
            await shim.sleep(0.02)
        assert info.last_outcome == "error"
        assert info.last_error == "ValueError: the report could not be built"
    finally:
        await job.close(timeout=5)


async def test_pause_resume_and_trigger(store: cs.Store, other_store: cs.Store) -> None:
    """Pause is cluster-wide and persistent; a trigger runs once even while paused (the
    job stays paused); resume lets the cadence go on."""
    runs = Runs()
    job = cs.schedule(store, "tick", cs.wait_for_interval(timedelta(seconds=0.1)), runs)
    try:
        assert await eventually(lambda: runs.count >= 2, 10)
        await cs.pause_recurring_job(other_store, "tick")
        await cs.pause_recurring_job(other_store, "tick")  # idempotent
        assert (await find(store, "tick")).paused
        await shim.sleep(0.2)  # a run in progress may finish
        paused_at = runs.count
        await shim.sleep(0.5)
        assert runs.count == paused_at, "a paused job ran"
        await cs.trigger_recurring_job(other_store, "tick")
        assert await eventually(lambda: runs.count == paused_at + 1, 5), "trigger did not run"
        await shim.sleep(0.5)
        assert runs.count == paused_at + 1, "a trigger runs once"
        assert (await find(other_store, "tick")).paused, "the job stays paused"
        await job.resume()
        assert await eventually(lambda: runs.count >= paused_at + 3, 5)
        assert not (await find(other_store, "tick")).paused
    finally:
        await job.close(timeout=5)


async def test_a_job_paused_before_an_instance_starts_does_not_run(
    store: cs.Store, other_store: cs.Store
) -> None:
    first = cs.schedule(store, "nightly", cs.wait_for_interval(HOUR), Runs())
    await first.pause()
    await first.close(timeout=5)
    runs = Runs()
    later = cs.schedule(other_store, "nightly", cs.wait_for_interval(HOUR), runs)
    try:
        await shim.sleep(0.5)
        count = runs.count
        await shim.sleep(0.3)
        assert runs.count == count <= 1  # (the first instance may have run it before)
        assert (await find(other_store, "nightly")).paused
    finally:
        await later.close(timeout=5)


async def test_controlling_an_unknown_job_is_a_key_error(store: cs.Store) -> None:
    for control in (cs.pause_recurring_job, cs.resume_recurring_job, cs.trigger_recurring_job):
        with pytest.raises(KeyError, match="was ever scheduled"):
            await control(store, "no-such-job")
    with pytest.raises(ValueError):
        await cs.pause_recurring_job(store, "")


async def test_break_lock_fences_off_the_old_holder(store: cs.Store, other_store: cs.Store) -> None:
    resource = FencedResource()
    lost = shim.CancelEvent()
    holder = cs.Mutex(store, "export", ttl=0.6, on_lost=lost.set)
    assert await holder.acquire()
    assert holder.token is not None
    assert resource.write(holder.token, holder="old")
    locks = await cs.list_locks(other_store)
    assert [(lock.kind, lock.name, lock.holder) for lock in locks] == [
        ("mutex", "export", store.identity)
    ]
    assert await cs.break_lock(other_store, "export")
    assert not await cs.break_lock(other_store, "export"), "nothing left to break"
    successor = cs.Mutex(other_store, "export", ttl=30)
    assert await successor.acquire(blocking=False)
    assert successor.token is not None
    assert successor.token > holder.token
    assert resource.write(successor.token, holder="new")
    assert not resource.write(holder.token, holder="old"), "the old holder was not fenced off"
    assert await shim.wait_for_event(lost, 5), "the old holder was never told"
    with pytest.raises(cs.LockLostError):
        await holder.release()
    await successor.release()


async def test_schedule_descriptions(store: cs.Store) -> None:
    def my_next_wait(now: datetime, metadata: cs.JobMetadata) -> timedelta:
        return HOUR

    jobs = [
        cs.schedule(store, "a", cs.wait_for_interval(timedelta(minutes=5)), Runs()),
        cs.schedule(store, "b", cs.wait_for_rounded_interval(HOUR), Runs()),
        cs.schedule(store, "c", cs.wait_for_cron("0 2 * * *", tz="Europe/Paris"), Runs()),
        cs.schedule(store, "d", my_next_wait, Runs()),
    ]
    try:
        deadline = time.monotonic() + 5
        while len(await cs.list_recurring_jobs(store)) < 4:
            assert time.monotonic() < deadline
            await shim.sleep(0.02)
        schedules = {job.key: job.schedule for job in await cs.list_recurring_jobs(store)}
        assert schedules["a"] == "every 5m"
        assert schedules["b"] == "every 1h, rounded"
        assert schedules["c"] == "cron 0 2 * * * Europe/Paris"
        assert schedules["d"].endswith("my_next_wait")
    finally:
        for job in jobs:
            await job.close(timeout=5)
