"""Conformance tests of recurring jobs on every store (docs/guarantees.md).

The Go package's ``TestSchedule`` subtests (``job_test.go``) are re-expressed here (named
in the docstrings), plus close/metadata/error behaviour the Go suite does not cover.
Due times of ``wait_for_rounded_interval`` and ``wait_for_cron`` are driven by the
``timed`` fixture: a ManualClock on memory and SQLite (deterministic), the server's own
clock on Redis and PostgreSQL, always judged by the store's time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clustersync import aio as cs
from clustersync._concurrency import aio as shim
from clustersync.testing import inject_faults
from tests.conformance._async.conftest import TimeControl, eventually

INTERVAL = timedelta(milliseconds=100)
HOUR = timedelta(hours=1)


@pytest.fixture
async def other_store(store_url: str, namespace: str) -> AsyncIterator[cs.Store]:
    """A second connection to the same store and namespace: another instance."""
    opened = await cs.open_store(store_url, namespace=namespace)
    yield opened
    await opened.close()


class RunCounter:
    """A callback that counts its runs and the most runs ever in progress at once."""

    def __init__(self, duration: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._duration = duration
        self.runs = 0
        self.active = 0
        self.max_active = 0

    def __call__(self) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        if self._duration:
            time.sleep(self._duration)
        with self._lock:
            self.active -= 1
            self.runs += 1


class Gate:
    """A callback that signals it started and then blocks until opened."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()
        self.runs = 0

    def __call__(self) -> None:
        self.runs += 1
        self.started.set()
        self.opened.wait(10)


# -- Go TestSchedule -----------------------------------------------------------------------


async def test_single_instance(store: cs.Store) -> None:
    """Go: TestSchedule/single-threaded — about ten runs in a second at 100 ms; nothing
    runs after close()."""
    counter = RunCounter()
    job = cs.schedule(store, "single", cs.wait_for_interval(INTERVAL), counter)
    await shim.sleep(1.0)
    assert await job.close(timeout=5)
    runs = counter.runs
    await shim.sleep(0.3)
    assert counter.runs == runs
    assert 5 < runs < 20


async def test_several_instances_of_one_key(store: cs.Store, other_store: cs.Store) -> None:
    """Go: TestSchedule/multi-threaded, single job — three instances of one key run it
    about as often as one would (not three times as often), never two at once."""
    counter = RunCounter(duration=0.005)
    jobs = [
        cs.schedule(s, "shared", cs.wait_for_interval(INTERVAL), counter)
        for s in (store, store, other_store)
    ]
    await shim.sleep(1.0)
    for job in jobs:
        assert await job.close(timeout=5)
    assert 5 < counter.runs < 20
    assert counter.max_active == 1


async def test_different_keys_run_independently(store: cs.Store, other_store: cs.Store) -> None:
    """Go: TestSchedule/multi-threaded, multiple jobs — key A twice and key B once each
    run at their own cadence."""
    a = RunCounter()
    b = RunCounter()
    jobs = [
        cs.schedule(store, "key-a", cs.wait_for_interval(INTERVAL), a),
        cs.schedule(other_store, "key-a", cs.wait_for_interval(INTERVAL), a),
        cs.schedule(store, "key-b", cs.wait_for_interval(INTERVAL), b),
    ]
    await shim.sleep(1.0)
    for job in jobs:
        assert await job.close(timeout=5)
    assert 5 < a.runs < 20
    assert 5 < b.runs < 20
    assert a.max_active == 1


async def test_a_long_run_does_not_block_another_key(store: cs.Store) -> None:
    gate = Gate()
    fast = RunCounter()
    slow_job = cs.schedule(store, "slow-key", cs.wait_for_interval(HOUR), gate)
    try:
        assert await eventually(gate.started.is_set)
        fast_job = cs.schedule(store, "fast-key", cs.wait_for_interval(INTERVAL / 2), fast)
        assert await eventually(lambda: fast.runs >= 3, 5.0)
        assert not gate.opened.is_set()
        assert await fast_job.close(timeout=5)
    finally:
        gate.opened.set()
        assert await slow_job.close(timeout=5)


# -- close ---------------------------------------------------------------------------------


async def test_close_is_prompt_while_another_instance_runs_the_job(
    store: cs.Store, other_store: cs.Store
) -> None:
    """close() never waits for another instance's hold (Go's Close can block on the
    mutex indefinitely), and is idempotent."""
    gate = Gate()
    holder = cs.schedule(store, "busy", cs.wait_for_interval(HOUR), gate)
    try:
        assert await eventually(gate.started.is_set)
        waiting = RunCounter()
        waiter = cs.schedule(other_store, "busy", cs.wait_for_interval(HOUR), waiting)
        await shim.sleep(0.2)  # the waiter is now waiting for the job's lease
        started = shim.monotonic()
        assert await waiter.close()
        assert await waiter.close()
        assert shim.monotonic() - started < 1.0
        assert waiting.runs == 0
    finally:
        gate.opened.set()
        assert await holder.close(timeout=5)
    assert await holder.close()
    assert gate.runs == 1


async def test_close_waits_for_the_running_callback(store: cs.Store) -> None:
    counter = RunCounter(duration=0.5)
    job = cs.schedule(store, "slow", cs.wait_for_interval(HOUR), counter)
    assert await eventually(lambda: counter.active == 1)
    assert not await job.close(timeout=0.01)  # still running
    assert await job.close()
    assert counter.runs == 1
    assert counter.active == 0
    assert (await job.metadata()).last_finished is not None  # the run was recorded


async def test_close_before_the_first_run(store: cs.Store) -> None:
    counter = RunCounter()
    job = cs.schedule(store, "closed-early", cs.wait_for_interval(INTERVAL), counter)
    assert await job.close(timeout=5)
    assert await job.close(timeout=5)
    runs = counter.runs
    await shim.sleep(0.3)
    assert counter.runs == runs <= 1


# -- errors in the callback ------------------------------------------------------------------


async def test_callback_exception_is_logged_and_the_job_keeps_running(
    store: cs.Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="clustersync")
    counter = RunCounter()

    def failing() -> None:
        counter()
        raise RuntimeError("boom in callback")

    job = cs.schedule(store, "failing", cs.wait_for_interval(INTERVAL / 2), failing)
    try:
        assert await eventually(lambda: counter.runs >= 3, 5.0)
    finally:
        assert await job.close(timeout=5)
    logged = [
        record
        for record in caplog.records
        if record.name == "clustersync"
        and record.exc_info is not None
        and "boom in callback" in str(record.exc_info[1])
    ]
    assert len(logged) >= 3
    assert (await job.metadata()).last_finished is not None  # counts as a finished run


async def test_next_wait_error_is_logged_and_retried(
    store: cs.Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="clustersync")
    broken = [True]
    interval = cs.wait_for_interval(HOUR)

    def next_wait(now: datetime, metadata: cs.JobMetadata) -> timedelta:
        if broken[0]:
            raise ZeroDivisionError("broken next_wait")
        return interval(now, metadata)

    counter = RunCounter()
    job = cs.schedule(store, "broken-next-wait", next_wait, counter)
    try:
        assert await eventually(lambda: "broken next_wait" in caplog.text)
        assert counter.runs == 0
        broken[0] = False
        assert await eventually(lambda: counter.runs == 1, 5.0)
    finally:
        assert await job.close(timeout=5)


# -- store outages ---------------------------------------------------------------------------


async def test_job_survives_a_store_outage(store: cs.Store) -> None:
    """Store errors are retried with capped backoff; the job runs once the store heals."""
    faults = inject_faults(store)
    faults.fail()
    counter = RunCounter()
    job = cs.schedule(store, "outage", cs.wait_for_interval(INTERVAL), counter)
    try:
        await shim.sleep(0.3)
        assert counter.runs == 0
        assert faults.failures["get_job_metadata"] >= 2
        faults.heal()
        assert await eventually(lambda: counter.runs >= 2, 5.0)
    finally:
        assert await job.close(timeout=5)


async def test_run_that_lost_its_lease_is_not_recorded(
    store: cs.Store, caplog: pytest.LogCaptureFixture
) -> None:
    """If the job's lease is lost during a run (renewals failing past its ttl), the
    former holder does not write last_finished (the loss is logged), so the job is due
    again and runs again (at-least-once, as after a crash)."""
    caplog.set_level(logging.ERROR, logger="clustersync")
    faults = inject_faults(store)
    gate = Gate()
    job = cs.schedule(store, "lost-run", cs.wait_for_interval(HOUR), gate, ttl=0.3)
    try:
        assert await eventually(gate.started.is_set)
        faults.fail({"renew_lease"})
        assert await eventually(lambda: "lost job" in caplog.text, 3.0)
        assert await job.metadata() == cs.JobMetadata(None)
        gate.opened.set()
        # Had the lost run been recorded, the next one would be an hour away.
        assert await eventually(lambda: gate.runs >= 2, 5.0)
        assert "last_finished not recorded" in caplog.text
        faults.heal()
        deadline = shim.monotonic() + 5.0
        while (await job.metadata()).last_finished is None:
            assert shim.monotonic() < deadline
            await shim.sleep(0.01)
    finally:
        gate.opened.set()
        assert await job.close(timeout=5)


async def test_a_run_declared_lost_is_not_recorded_while_the_store_still_holds_it(
    store: cs.Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (a CI run behind PgBouncer): the holder declares its lease lost at its
    local deadline, up to a round trip before the store's expiry. A run that ended in
    between still wrote last_finished after its loss was logged, so the job did not run
    again as the log implied. The store here keeps the lease a minute longer."""
    caplog.set_level(logging.ERROR, logger="clustersync")
    faults = inject_faults(store)
    gate = Gate()
    job = cs.schedule(store, "lost-but-stored", cs.wait_for_interval(HOUR), gate, ttl=0.3)
    try:
        assert await eventually(gate.started.is_set)
        faults.fail({"renew_lease"})
        hold = job._lease.hold
        assert hold is not None
        assert await faults.backend.renew_lease(job._lease.name, hold.owner, hold.token, 60.0)
        assert await eventually(lambda: "lost job" in caplog.text, 3.0)
        gate.opened.set()
        assert await eventually(lambda: "last_finished not recorded" in caplog.text, 5.0)
        # The release freed the store's lease: the job, not recorded, runs again.
        assert await eventually(lambda: gate.runs >= 2, 5.0)
    finally:
        gate.opened.set()
        assert await job.close(timeout=5)


async def test_a_brief_store_error_after_a_run_does_not_rerun_the_job(
    store: cs.Store,
) -> None:
    """Regression: ``set_job_finished`` was not retried, so a 50 ms store error after a
    run left ``last_finished`` unwritten and an hourly job ran again at once (3 runs in
    110 ms). The write is now retried under the lease."""
    faults = inject_faults(store)
    gate = Gate()
    job = cs.schedule(store, "hourly", cs.wait_for_interval(HOUR), gate, ttl=5)
    try:
        assert await eventually(gate.started.is_set)
        faults.fail({"set_job_finished"})
        gate.opened.set()
        await shim.sleep(0.05)
        faults.heal()
        deadline = shim.monotonic() + 5.0
        while (await job.metadata()).last_finished is None:
            assert shim.monotonic() < deadline, "the run was never recorded"
            await shim.sleep(0.01)
        await shim.sleep(0.3)
        assert gate.runs == 1, f"the hourly job ran {gate.runs} times"
        assert faults.failures["set_job_finished"] >= 1
    finally:
        gate.opened.set()
        assert await job.close(timeout=5)


# -- metadata ------------------------------------------------------------------------------


async def test_metadata_before_and_after_the_first_run(store: cs.Store) -> None:
    gate = Gate()
    job = cs.schedule(store, "meta", cs.wait_for_interval(HOUR), gate)
    try:
        assert await eventually(gate.started.is_set)
        assert await job.metadata() == cs.JobMetadata(None)  # written when a run finishes
    finally:
        gate.opened.set()
        assert await job.close(timeout=5)
    finished = (await job.metadata()).last_finished
    assert finished is not None
    assert finished.tzinfo is not None
    assert finished.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - finished) < timedelta(seconds=30)


async def test_metadata_is_judged_by_the_store_clock(timed: TimeControl) -> None:
    counter = RunCounter()
    before = await timed.now()
    job = cs.schedule(timed.store, "store-clock", cs.wait_for_interval(HOUR), counter)
    assert await eventually(lambda: counter.runs == 1)
    assert await job.close(timeout=5)
    after = await timed.now()
    finished = (await job.metadata()).last_finished
    assert finished is not None
    assert before <= finished <= after  # exactly the clock's time when it stands still


async def test_metadata_is_shared_by_instances_of_one_key(
    store: cs.Store, other_store: cs.Store
) -> None:
    """Instances share last_finished, so a second instance does not run the job again
    before its interval has passed."""
    first = RunCounter()
    job = cs.schedule(store, "shared-meta", cs.wait_for_interval(HOUR), first)
    assert await eventually(lambda: first.runs == 1)
    assert await job.close(timeout=5)
    second = RunCounter()
    other = cs.schedule(other_store, "shared-meta", cs.wait_for_interval(HOUR), second)
    try:
        metadata = await other.metadata()
        assert metadata.last_finished is not None
        assert metadata == await job.metadata()
        await shim.sleep(0.3)
        assert second.runs == 0
    finally:
        assert await other.close(timeout=5)


async def test_jobs_are_isolated_by_namespace(
    store: cs.Store, store_url: str, namespace: str
) -> None:
    other_ns = await cs.open_store(store_url, namespace=namespace + "-other")
    try:
        here = RunCounter()
        there = RunCounter()
        gate = Gate()
        blocker = cs.schedule(store, "ns-key", cs.wait_for_interval(HOUR), gate)
        try:
            assert await eventually(gate.started.is_set)
            # Same key, other namespace: neither blocked by the running job nor sharing
            # its metadata.
            job = cs.schedule(other_ns, "ns-key", cs.wait_for_interval(HOUR), there)
            assert await eventually(lambda: there.runs == 1, 5.0)
            assert await job.close(timeout=5)
        finally:
            gate.opened.set()
            assert await blocker.close(timeout=5)
        assert here.runs == 0
        meta_here = (await blocker.metadata()).last_finished
        meta_there = (await job.metadata()).last_finished
        assert meta_here is not None
        assert meta_there is not None
        assert meta_there < meta_here
    finally:
        await other_ns.close()


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "error"),
    [("", ValueError), ("k" * 256, ValueError), (42, TypeError), (None, TypeError)],
)
async def test_invalid_key(store: cs.Store, key: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        cs.schedule(store, key, cs.wait_for_interval(INTERVAL), RunCounter())


async def test_invalid_schedule_arguments(store: cs.Store) -> None:
    counter = RunCounter()
    with pytest.raises(TypeError):
        cs.schedule(store, "k", 42, counter)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cs.schedule(store, "k", cs.wait_for_interval(INTERVAL), None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cs.schedule("memory://", "k", cs.wait_for_interval(INTERVAL), counter)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cs.schedule(store, "k", cs.wait_for_interval(INTERVAL), counter, ttl=0)
    await shim.sleep(0.1)
    assert counter.runs == 0  # nothing was started


@pytest.mark.parametrize(
    "make",
    [
        lambda: cs.wait_for_interval(timedelta(0)),
        lambda: cs.wait_for_interval(-INTERVAL),
        lambda: cs.wait_for_rounded_interval(timedelta(0)),
        lambda: cs.wait_for_rounded_interval(-INTERVAL),
        lambda: cs.wait_for_cron("not a cron expression"),
        lambda: cs.wait_for_cron("* * * * *", tz="Nowhere/Nothing"),
    ],
)
def test_invalid_next_wait_helpers(make: Callable[[], object]) -> None:
    """Go: TestMakeWaitForInterval / TestMakeWaitForRoundedInterval — panics on invalid
    interval (here ValueError, also for negative intervals and bad cron expressions)."""
    with pytest.raises(ValueError):
        make()


# -- the other next_wait helpers under schedule ----------------------------------------------


async def finished_run(job: cs.Job) -> datetime:
    """``last_finished`` once the (first) run has been recorded."""
    deadline = shim.monotonic() + 5.0
    while (finished := (await job.metadata()).last_finished) is None:
        assert shim.monotonic() < deadline, "the run was not recorded"
        await shim.sleep(0.005)
    return finished


async def test_rounded_interval_under_schedule(timed: TimeControl) -> None:
    """A never-run job runs at once, then at the next UTC multiple of the interval (the
    ManualClock starts on one) by the store's clock."""
    step = timedelta(milliseconds=125)
    epoch = datetime.fromtimestamp(0, UTC)
    # Start on a multiple (where a manual clock is), so the first run is not next to one.
    await timed.advance_to(epoch - (epoch - await timed.now()) // step * step)
    counter = RunCounter()
    job = cs.schedule(timed.store, "rounded", cs.wait_for_rounded_interval(step), counter)
    try:
        assert await eventually(lambda: counter.runs == 1)
        first = await finished_run(job)
        boundary = epoch + (first + step - epoch) // step * step
        # Half way to the next multiple, then at it: nothing runs before.
        await timed.advance_to(boundary - step / 2, lambda: counter.runs == 1, "one run")
        await timed.advance_to(boundary, lambda: counter.runs == 1, "one run")
        assert await eventually(lambda: counter.runs == 2)
    finally:
        assert await job.close(timeout=5)
    second = (await job.metadata()).last_finished
    assert second is not None
    assert second >= boundary


async def test_cron_under_schedule(timed: TimeControl) -> None:
    """Every-second cron: runs at once, then at the next whole second of the store clock."""
    # Start three quarters into a second (a manual clock starts on a whole one), so the
    # first run is not next to a whole second.
    now = await timed.now()
    start = now.replace(microsecond=750_000)
    await timed.advance_to(start if start >= now else start + timedelta(seconds=1))
    counter = RunCounter()
    job = cs.schedule(timed.store, "cron", cs.wait_for_cron("* * * * * *"), counter)
    try:
        assert await eventually(lambda: counter.runs == 1)
        first = await finished_run(job)
        boundary = first.replace(microsecond=0) + timedelta(seconds=1)
        await timed.advance_to(boundary, lambda: counter.runs == 1, "one run")
        assert await eventually(lambda: counter.runs == 2)
    finally:
        assert await job.close(timeout=5)
    after = await timed.now()
    finished = (await job.metadata()).last_finished
    assert finished is not None
    assert boundary <= finished <= after  # exactly the next second on a manual clock
