"""One-shot jobs (docs/guarantees.md) on every store.

Every case of the Go package's job_once tests (TestScheduleOnceParallel, ...Sequential,
...Props) is re-expressed here as a black-box test, and the Go package's defects are shown
absent: the rescheduling data loss, the Cancel/run deadlock, the hang on over-long keys
and the ``mutex_<key>`` collision.

Callbacks are plain functions that record under a ``threading.Lock`` so that the same
test is meaningful in both worlds (asyncio runs them in a worker thread, the threading
API in the scheduler's thread). Where time matters, the ``timed`` fixture moves the
store's time: a ManualClock on memory and SQLite (no sleeping), the server's own clock on
Redis and PostgreSQL (short real waits); otherwise waits poll with generous deadlines.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from clustersync import aio as cs
from clustersync._concurrency import aio as shim
from clustersync.testing import inject_faults
from tests.conformance._async.conftest import TimeControl

#: Upper bound for anything that should happen "soon" (loaded 2-core CI machines).
SOON = 10.0
#: How long to watch for something that must not happen.
QUIET = 0.25
#: Slack for float rounding when comparing a callback time with run_at.
EPSILON = 1e-4


class Recorder:
    """A callback for both worlds: records ``(key, props, time)`` under a lock.

    Keys in ``blocking`` wait inside the callback until :attr:`release` is set (bounded,
    so a failing test cannot hang its teardown); keys in ``failing`` raise after being
    recorded; every call lasts at least ``duration`` seconds.
    """

    def __init__(
        self,
        now: Callable[[], float] = time.time,
        *,
        blocking: Iterable[str] = (),
        failing: Iterable[str] = (),
        duration: float = 0.0,
    ) -> None:
        self._lock = threading.Lock()
        self._now = now
        self._blocking = frozenset(blocking)
        self._failing = frozenset(failing)
        self._duration = duration
        self.release = threading.Event()
        self.calls: list[tuple[str, Any, float]] = []
        self.finished: list[str] = []
        self.running = 0

    def callback(self, key: str, props: Any) -> None:
        at = self._now()
        with self._lock:
            self.calls.append((key, props, at))
            self.running += 1
        try:
            if key in self._blocking:
                self.release.wait(SOON)
            if self._duration:
                time.sleep(self._duration)
            if key in self._failing:
                raise RuntimeError(f"callback failed for {key}")
        finally:
            with self._lock:
                self.running -= 1
                self.finished.append(key)

    def count(self, key: str | None = None) -> int:
        with self._lock:
            return sum(1 for k, _, _ in self.calls if key is None or k == key)

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(k for k, _, _ in self.calls)

    def props_of(self, key: str) -> list[Any]:
        with self._lock:
            return [p for k, p, _ in self.calls if k == key]

    def times_of(self, key: str) -> list[float]:
        with self._lock:
            return [t for k, _, t in self.calls if k == key]

    def finished_count(self, key: str) -> int:
        with self._lock:
            return self.finished.count(key)


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = SOON) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = shim.monotonic() + timeout
    while not predicate():
        if shim.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting until {what}")
        await shim.sleep(0.005)


async def wait_store_empty(store: cs.Store, timeout: float = SOON) -> None:
    """Wait until the namespace holds no one-shot job at all (pending, claimed or running)."""
    deadline = shim.monotonic() + timeout
    while await store._ops.next_job_delay() is not None:
        if shim.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for the job table to empty")
        await shim.sleep(0.005)


async def started(store: cs.Store, recorder: Recorder, **options: Any) -> cs.JobOnceScheduler:
    scheduler = cs.get_job_once_scheduler(store, **options)
    scheduler.set_callback(recorder.callback)
    await scheduler.start()
    return scheduler


def in_(seconds: float) -> datetime:
    """A run time ``seconds`` from now by the system clock."""
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def keys_listed(scheduler: cs.JobOnceScheduler) -> list[str]:
    return [job.key for job in await scheduler.list_scheduled_jobs()]


# -- Go TestScheduleOnceParallel ---------------------------------------------------------


async def test_one_scheduled_job_fires_exactly_once(store: cs.Store) -> None:
    recorder = Recorder()
    scheduler = await started(store, recorder)
    assert await scheduler.list_scheduled_jobs() == []

    run_at = in_(0.3)  # leaves time to list it first, even on a loaded machine
    job = await scheduler.schedule_once("k1", run_at)
    assert (job.key, job.run_at, job.props) == ("k1", run_at, None)
    assert await scheduler.list_scheduled_jobs() == [cs.JobOnceMetadata("k1", run_at, None)]

    await wait_until(lambda: recorder.count("k1") == 1, "k1 fired")
    await wait_store_empty(store)
    assert recorder.times_of("k1")[0] >= run_at.timestamp() - EPSILON  # never early
    for _ in range(4):  # idempotent after completion
        assert await job.cancel() is False
    await shim.sleep(QUIET)
    assert recorder.count("k1") == 1
    assert recorder.props_of("k1") == [None]


async def test_job_cancelled_before_firing_never_fires(timed: TimeControl) -> None:
    recorder = Recorder(timed.time)
    scheduler = await started(timed.store, recorder)
    run_at = await timed.at(0.25)
    job = await scheduler.schedule_once("k2", run_at)
    assert await job.cancel() is True
    for _ in range(4):
        assert await job.cancel() is False
    assert await scheduler.list_scheduled_jobs() == []
    assert await timed.store._ops.next_job_delay() is None  # the record is gone

    await scheduler.schedule_once("control", run_at)
    await timed.advance_to(run_at)
    await wait_until(lambda: recorder.count("control") == 1, "the control job fired")
    await shim.sleep(QUIET)
    assert recorder.count("k2") == 0
    assert await job.cancel() is False


async def test_callback_that_raises_is_logged_and_job_removed_without_retry(
    store: cs.Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="clustersync")
    recorder = Recorder(failing={"k3"})
    scheduler = await started(store, recorder)
    await scheduler.schedule_once("k3", in_(0.05))

    await wait_until(lambda: recorder.finished_count("k3") == 1, "k3 ran")
    await wait_store_empty(store)
    await shim.sleep(QUIET)
    assert recorder.count("k3") == 1  # no retry
    assert await scheduler.list_scheduled_jobs() == []
    records = [
        r
        for r in caplog.records
        if r.name == "clustersync" and r.levelno >= logging.ERROR and "k3" in r.getMessage()
    ]
    assert len(records) == 1
    exc_info = records[0].exc_info
    assert exc_info is not None  # logged with its traceback
    assert exc_info[0] is RuntimeError
    assert "callback failed for k3" in caplog.text


async def test_cancel_and_reschedule_same_key_fires_once_at_new_time(
    timed: TimeControl,
) -> None:
    recorder = Recorder(timed.time)
    scheduler = await started(timed.store, recorder)
    old_run_at = await timed.at(0.25)
    await scheduler.schedule_once("k4", old_run_at, {"v": 1})
    assert await scheduler.cancel("k4") is True
    assert await timed.store._ops.next_job_delay() is None
    new_run_at = old_run_at + timedelta(seconds=0.25)
    await scheduler.schedule_once("k4", new_run_at, {"v": 2})
    await scheduler.schedule_once("control", old_run_at)

    await timed.advance_to(old_run_at)  # the old time: nothing of k4 fires
    await wait_until(lambda: recorder.count("control") == 1, "the control job fired")
    assert await scheduler.list_scheduled_jobs() == [cs.JobOnceMetadata("k4", new_run_at, {"v": 2})]
    await timed.quiet(lambda: recorder.count("k4") == 0, "k4 not fired", until=new_run_at)

    await timed.advance_to(new_run_at)  # the new time
    await wait_until(lambda: recorder.count("k4") == 1, "k4 fired at its new time")
    await wait_store_empty(timed.store)
    await shim.sleep(QUIET)
    assert recorder.props_of("k4") == [{"v": 2}]
    assert recorder.times_of("k4")[0] >= new_run_at.timestamp()


async def test_rescheduled_job_is_not_lost_to_a_stale_instance(timed: TimeControl) -> None:
    """The Go data-loss bug (HA test): instance B still knows the old run time of `key`
    when instance A cancels it and schedules it again slightly later. In Go, B deletes
    the new record at the old time and the job is lost; here it fires exactly once."""
    async with await timed.open_store() as other:
        rec_a, rec_b = Recorder(timed.time), Recorder(timed.time)
        sched_a = await started(timed.store, rec_a)
        sched_b = await started(other, rec_b)
        original = await timed.at(0.25)
        await sched_a.schedule_many([("key", original, {"v": 1}), ("control", original, None)])
        assert [j.run_at for j in await sched_b.list_scheduled_jobs()] == [original] * 2
        await shim.sleep(0.05)  # both schedulers have seen the jobs and sleep until `original`

        assert await sched_a.cancel("key") is True
        later = original + timedelta(seconds=0.25)
        await sched_a.schedule_once("key", later, {"v": 2})

        await timed.advance_to(original)  # the old run time
        await wait_until(
            lambda: rec_a.count("control") + rec_b.count("control") == 1, "control fired"
        )
        for scheduler in (sched_a, sched_b):  # neither instance deleted the new record
            assert await scheduler.list_scheduled_jobs() == [
                cs.JobOnceMetadata("key", later, {"v": 2})
            ]
        await timed.quiet(
            lambda: rec_a.count("key") + rec_b.count("key") == 0, "key not fired", until=later
        )

        await timed.advance_to(later)
        await wait_until(lambda: rec_a.count("key") + rec_b.count("key") == 1, "key fired")
        await wait_store_empty(timed.store)
        await shim.sleep(QUIET)
        assert rec_a.counts() + rec_b.counts() == Counter({"key": 1, "control": 1})
        assert rec_a.props_of("key") + rec_b.props_of("key") == [{"v": 2}]
        assert (rec_a.times_of("key") + rec_b.times_of("key"))[0] >= later.timestamp()


async def test_many_scheduled_jobs_each_fire_exactly_once(store: cs.Store) -> None:
    recorder = Recorder()
    scheduler = await started(store, recorder)
    keys = [f"many-{i}" for i in range(100)]
    run_at = in_(0.1)
    for key in keys:
        await scheduler.schedule_once(key, run_at)

    await wait_until(lambda: recorder.count() >= 100, "100 jobs fired")
    await wait_store_empty(store)
    await shim.sleep(QUIET)
    assert recorder.counts() == Counter(dict.fromkeys(keys, 1))
    assert await scheduler.list_scheduled_jobs() == []


async def test_cancel_a_job_by_key(timed: TimeControl) -> None:
    recorder = Recorder(timed.time)
    scheduler = await started(timed.store, recorder)
    run_at = await timed.at(0.25)
    await scheduler.schedule_once("k5", run_at)
    assert await keys_listed(scheduler) == ["k5"]
    assert await scheduler.cancel("k5") is True
    assert await scheduler.list_scheduled_jobs() == []
    assert await scheduler.cancel("k5") is False  # a no-op the second time
    assert await scheduler.cancel("never-scheduled") is False

    await scheduler.schedule_once("control", run_at)
    await timed.advance_to(run_at)
    await wait_until(lambda: recorder.count("control") == 1, "the control job fired")
    await shim.sleep(QUIET)
    assert recorder.count("k5") == 0


async def test_same_scheduler_per_store_and_starting_twice_fails(
    store: cs.Store, store_url: str, namespace: str
) -> None:
    scheduler = await started(store, Recorder())
    assert cs.get_job_once_scheduler(store) is scheduler
    with pytest.raises(cs.SchedulerError) as excinfo:
        await scheduler.start()
    assert isinstance(excinfo.value, RuntimeError)
    assert isinstance(excinfo.value, cs.ClusterSyncError)
    assert scheduler.started
    async with await cs.open_store(store_url, namespace=namespace) as other:
        # Not a process-wide singleton: another store object has its own scheduler.
        assert cs.get_job_once_scheduler(other) is not scheduler
        assert cs.get_job_once_scheduler(other) is cs.get_job_once_scheduler(other)


# -- Go TestScheduleOnceSequential -------------------------------------------------------


async def test_start_without_callback_fails(store: cs.Store) -> None:
    scheduler = cs.get_job_once_scheduler(store)
    with pytest.raises(cs.SchedulerError, match="callback"):
        await scheduler.start()
    assert not scheduler.started
    with pytest.raises(TypeError):
        scheduler.set_callback(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        scheduler.set_callback("not callable")  # type: ignore[arg-type]
    with pytest.raises(cs.SchedulerError):  # a rejected callback was not set
        await scheduler.start()

    recorder = Recorder()
    scheduler.set_callback(recorder.callback)
    await scheduler.start()
    await scheduler.schedule_once("after-failed-start", in_(0))
    await wait_until(lambda: recorder.count("after-failed-start") == 1, "the job fired")


async def test_get_job_once_scheduler_rejects_a_non_store() -> None:
    with pytest.raises(TypeError):
        cs.get_job_once_scheduler("memory://")  # type: ignore[arg-type]


async def test_scheduling_before_start_is_allowed_and_fires_after_start(
    store: cs.Store,
) -> None:
    """The Go package refuses ScheduleOnce before Start; the contract allows it."""
    recorder = Recorder()
    scheduler = cs.get_job_once_scheduler(store)
    scheduler.set_callback(recorder.callback)
    await scheduler.schedule_once("early", in_(-1), {"n": 1})
    await shim.sleep(QUIET)
    assert recorder.count() == 0  # nothing fires on a scheduler that was not started
    assert await keys_listed(scheduler) == ["early"]

    await scheduler.start()
    await wait_until(lambda: recorder.count("early") == 1, "the early job fired")
    await wait_store_empty(store)
    assert recorder.props_of("early") == [{"n": 1}]


async def test_only_the_last_callback_set_is_called(store: cs.Store) -> None:
    first, second = Recorder(), Recorder()
    scheduler = cs.get_job_once_scheduler(store)
    scheduler.set_callback(first.callback)
    scheduler.set_callback(second.callback)
    await scheduler.start()
    await scheduler.schedule_once("k", in_(0.05))
    await wait_until(lambda: second.count("k") == 1, "the second callback was called")
    await wait_store_empty(store)
    await shim.sleep(QUIET)
    assert first.count() == 0
    assert second.count() == 1


async def test_paging_3002_jobs_listed_sorted_and_each_fired_once(store: cs.Store) -> None:
    """Go writes 3×1000+2 records to cross its 1000-key KV pages; here they are listed
    in one call, sorted by (run_at, key), and each fires exactly once."""
    recorder = Recorder()
    scheduler = cs.get_job_once_scheduler(store)
    scheduler.set_callback(recorder.callback)
    base = in_(0.1)
    entries = [
        (f"page-{i}", base + timedelta(milliseconds=(i * 7) % 13), {"i": i}) for i in range(3002)
    ]
    stored = await scheduler.schedule_many(entries)
    assert [job.key for job in stored] == [key for key, _, _ in entries]

    listed = await scheduler.list_scheduled_jobs()
    expected = sorted(entries, key=lambda entry: (entry[1], entry[0]))
    assert [(job.key, job.run_at, job.props) for job in listed] == expected

    await scheduler.start()
    await wait_until(lambda: recorder.count() >= 3002, "3002 jobs fired", timeout=40)
    await wait_store_empty(store)
    await shim.sleep(QUIET)
    counts = recorder.counts()
    assert len(counts) == 3002
    assert set(counts.values()) == {1}
    assert await scheduler.list_scheduled_jobs() == []


async def test_store_failures_delay_jobs_but_never_drop_them(
    store: cs.Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Go "failed at the db": after four failed reads Go drops the job silently (and
    leaves its record behind). Here store errors are logged and retried; once the store
    heals the job fires exactly once and is removed."""
    caplog.set_level(logging.WARNING, logger="clustersync")
    recorder = Recorder()
    scheduler = await started(store, recorder)
    faults = inject_faults(store)
    try:
        faults.fail({"claim_due_jobs", "next_job_delay", "renew_job_claims", "complete_job"})
        await scheduler.schedule_once("k", in_(0.05))
        await wait_until(lambda: faults.failures["claim_due_jobs"] >= 3, "three failed claims")
        assert recorder.count() == 0
        assert await store._ops.list_jobs() != []  # still stored (list_jobs is not failing)
        assert any(
            r.name == "clustersync" and "store error" in r.getMessage() for r in caplog.records
        )
        faults.heal()
        await wait_until(lambda: recorder.count("k") == 1, "k fired after the store healed")
        await wait_store_empty(store)
        await shim.sleep(QUIET)
        assert recorder.count("k") == 1
    finally:
        faults.restore()


async def test_pending_jobs_in_the_store_fire_at_start(
    store: cs.Store, store_url: str, namespace: str
) -> None:
    """Jobs written by an instance that has since gone away fire when one starts."""
    run_at = in_(0.05)
    async with await cs.open_store(store_url, namespace=namespace) as gone:
        writer = cs.get_job_once_scheduler(gone)
        await writer.schedule_many([("p1", run_at, 1), ("p2", run_at, 2), ("p3", run_at, 3)])

    recorder = Recorder()
    scheduler = cs.get_job_once_scheduler(store)
    assert await keys_listed(scheduler) == ["p1", "p2", "p3"]
    scheduler.set_callback(recorder.callback)
    await scheduler.start()
    await wait_until(lambda: recorder.count() >= 3, "the three pending jobs fired")
    await wait_store_empty(store)
    await shim.sleep(QUIET)
    assert recorder.counts() == Counter({"p1": 1, "p2": 1, "p3": 1})
    assert sorted(recorder.props_of(k)[0] for k in ("p1", "p2", "p3")) == [1, 2, 3]
    assert await scheduler.list_scheduled_jobs() == []


async def test_wakeups_while_a_job_runs_do_not_run_it_again(store: cs.Store) -> None:
    """Go "polling before it's finished results in only one job running"; also, a job
    whose callback is running is not listed as pending."""
    recorder = Recorder(blocking={"slow"})
    scheduler = await started(store, recorder)
    try:
        await scheduler.schedule_once("slow", in_(0))
        await scheduler.schedule_once("later", in_(3600))
        await wait_until(lambda: recorder.count("slow") == 1, "slow started")
        for i in range(3):  # each of these wakes the scheduler
            await scheduler.schedule_once(f"poke-{i}", in_(3600))
            assert await scheduler.cancel(f"poke-{i}") is True
            await shim.sleep(0.02)
        assert await keys_listed(scheduler) == ["later"]
        assert recorder.count("slow") == 1
    finally:
        recorder.release.set()
    await wait_until(lambda: recorder.finished_count("slow") == 1, "slow finished")
    await wait_until(lambda: recorder.running == 0, "callbacks returned")
    await shim.sleep(QUIET)
    assert recorder.count("slow") == 1
    assert await keys_listed(scheduler) == ["later"]


async def test_duplicate_key_is_rejected_and_original_unchanged(timed: TimeControl) -> None:
    recorder = Recorder(timed.time)
    scheduler = await started(timed.store, recorder)
    original = await timed.at(0.25)
    await scheduler.schedule_once("dup", original, {"orig": True})
    with pytest.raises(cs.DuplicateJobError) as excinfo:
        await scheduler.schedule_once("dup", await timed.at(10), {"orig": False})
    assert isinstance(excinfo.value, KeyError)
    assert isinstance(excinfo.value, cs.ClusterSyncError)
    assert excinfo.value.key == "dup"
    assert "dup" in str(excinfo.value)
    assert await scheduler.list_scheduled_jobs() == [
        cs.JobOnceMetadata("dup", original, {"orig": True})
    ]

    await timed.advance_to(original)
    await wait_until(lambda: recorder.count("dup") == 1, "dup fired at its original time")
    await wait_store_empty(timed.store)
    await shim.sleep(QUIET)
    assert recorder.props_of("dup") == [{"orig": True}]
    assert recorder.times_of("dup")[0] >= original.timestamp()
    # Once done, the key is free again.
    await scheduler.schedule_once("dup", await timed.at(5))
    assert await keys_listed(scheduler) == ["dup"]


# -- Go TestScheduleOnceProps ------------------------------------------------------------


async def test_props_round_trip_as_json(store: cs.Store) -> None:
    props = {
        "foo": "some foo",
        "numbers": [1, 2.5, -3, 10**15],
        "flags": {"on": True, "off": False, "none": None},
        "text": "é ✓ 漢字",
        "tuple": (1, "two"),
    }
    decoded = {**props, "tuple": [1, "two"]}  # JSON has no tuples
    recorder = Recorder()
    scheduler = cs.get_job_once_scheduler(store)
    scheduler.set_callback(recorder.callback)
    job = await scheduler.schedule_once("props", in_(0.05), props)
    assert job.props == decoded
    listed = await scheduler.list_scheduled_jobs()
    assert [j.props for j in listed] == [decoded]
    await scheduler.start()
    await wait_until(lambda: recorder.count("props") == 1, "the job fired")
    assert recorder.props_of("props") == [decoded]


@pytest.mark.parametrize(
    "props", ["a string", 42, 1.5, True, None, [], {}, [{"a": [None]}]], ids=repr
)
async def test_any_json_value_is_valid_props(store: cs.Store, props: Any) -> None:
    recorder = Recorder()
    scheduler = await started(store, recorder)
    await scheduler.schedule_once("k", in_(0), props)
    await wait_until(lambda: recorder.count("k") == 1, "the job fired")
    assert recorder.props_of("k") == [props]


async def test_props_too_large_are_rejected_and_nothing_stored(store: cs.Store) -> None:
    scheduler = cs.get_job_once_scheduler(store)
    limit = 65536
    # Exactly at the limit once encoded (two quote characters) is accepted ...
    await scheduler.schedule_once("at-limit", in_(3600), "a" * (limit - 2))
    # ... one byte more is not.
    with pytest.raises(ValueError, match="65536"):
        await scheduler.schedule_once("over-limit", in_(3600), "a" * (limit - 1))
    # The limit counts encoded bytes, not characters.
    with pytest.raises(ValueError):
        await scheduler.schedule_once("multibyte", in_(3600), "é" * 40_000)
    with pytest.raises(ValueError):
        await scheduler.schedule_once("big-list", in_(3600), [0] * 40_000)
    assert await keys_listed(scheduler) == ["at-limit"]


async def test_max_props_bytes_option(store: cs.Store) -> None:
    scheduler = cs.get_job_once_scheduler(store, max_props_bytes=10)
    await scheduler.schedule_once("small", in_(3600), "12345678")  # 10 bytes
    with pytest.raises(ValueError):
        await scheduler.schedule_once("large", in_(3600), "123456789")
    assert await keys_listed(scheduler) == ["small"]


@pytest.mark.parametrize(
    "props",
    [object(), math.nan, math.inf, {1, 2}, b"bytes", {"a": {("tuple", "key"): 1}}],
    ids=["object", "nan", "inf", "set", "bytes", "tuple-key"],
)
async def test_props_that_are_not_json_raise_type_error(store: cs.Store, props: Any) -> None:
    scheduler = cs.get_job_once_scheduler(store)
    with pytest.raises(TypeError):
        await scheduler.schedule_once("bad-props", in_(3600), props)
    with pytest.raises(TypeError):
        await scheduler.schedule_many([("ok", in_(3600), None), ("bad-props", in_(3600), props)])
    assert await scheduler.list_scheduled_jobs() == []
    assert await store._ops.next_job_delay() is None


# -- validation --------------------------------------------------------------------------


async def test_run_at_must_be_an_aware_datetime(store: cs.Store) -> None:
    scheduler = cs.get_job_once_scheduler(store)
    naive = datetime.now() + timedelta(hours=1)  # deliberately naive
    with pytest.raises(ValueError, match="timezone"):
        await scheduler.schedule_once("naive", naive)
    with pytest.raises(TypeError):
        await scheduler.schedule_once("not-a-datetime", time.time() + 60)  # type: ignore[arg-type]
    assert await scheduler.list_scheduled_jobs() == []

    # Any timezone is fine; run times come back in UTC.
    plus_five = timezone(timedelta(hours=5))
    local = datetime.now(plus_five) + timedelta(hours=1)
    job = await scheduler.schedule_once("aware", local)
    assert job.run_at == local
    [listed] = await scheduler.list_scheduled_jobs()
    assert listed.run_at == local
    assert listed.run_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("key", ["", "k" * 256], ids=["empty", "256-chars"])
async def test_invalid_keys_raise_value_error(store: cs.Store, key: str) -> None:
    scheduler = cs.get_job_once_scheduler(store)
    with pytest.raises(ValueError):
        await scheduler.schedule_once(key, in_(3600))
    with pytest.raises(ValueError):
        await scheduler.cancel(key)
    with pytest.raises(ValueError):
        await scheduler.schedule_many([("fine", in_(3600), None), (key, in_(3600), None)])
    assert await scheduler.list_scheduled_jobs() == []


async def test_non_string_key_raises_type_error(store: cs.Store) -> None:
    scheduler = cs.get_job_once_scheduler(store)
    with pytest.raises(TypeError):
        await scheduler.schedule_once(42, in_(3600))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await scheduler.cancel(None)  # type: ignore[arg-type]


async def test_255_character_key_works_promptly(store: cs.Store) -> None:
    """Go hangs forever in ScheduleOnce for keys over 144 characters."""
    key = "k" * 255
    recorder = Recorder()
    scheduler = await started(store, recorder)
    begin = shim.monotonic()
    job = await scheduler.schedule_once(key, in_(3600))
    assert await job.cancel() is True
    await scheduler.schedule_once(key, in_(0))
    await wait_until(lambda: recorder.count(key) == 1, "the long-key job fired")
    await wait_store_empty(store)
    assert shim.monotonic() - begin < SOON


async def test_schedule_many_is_all_or_nothing(store: cs.Store) -> None:
    scheduler = cs.get_job_once_scheduler(store)
    soon = in_(3600)
    await scheduler.schedule_once("existing", soon)

    bad_batches: list[tuple[type[Exception], list[Any]]] = [
        (cs.DuplicateJobError, [("a", soon, None), ("existing", in_(7200), None)]),
        (cs.DuplicateJobError, [("a", soon, None), ("existing", soon, {"other": 1})]),
        (cs.DuplicateJobError, [("a", soon, None), ("b", soon, None), ("a", soon, None)]),
        (ValueError, [("a", soon, None), ("", soon, None)]),
        (ValueError, [("a", soon, None), ("b", soon.replace(tzinfo=None), None)]),
        (ValueError, [("a", soon, None), ("b", soon, "x" * 70_000)]),
        (TypeError, [("a", soon, None), ("b", soon, object())]),
        (TypeError, [("a", soon, None), ("b",)]),
        (TypeError, [("a", soon, None), ("b", soon, None, "extra")]),
        (TypeError, [("a", soon, None), 42]),
    ]
    for error, batch in bad_batches:
        with pytest.raises(error):
            await scheduler.schedule_many(batch)
        assert await keys_listed(scheduler) == ["existing"], batch

    # Two-element entries mean props=None; an empty batch stores nothing.
    assert await scheduler.schedule_many([]) == []
    mixed: list[Any] = [("a", soon), ("b", soon, {"x": 1})]
    jobs = await scheduler.schedule_many(iter(mixed))
    assert [(j.key, j.props) for j in jobs] == [("a", None), ("b", {"x": 1})]
    assert await keys_listed(scheduler) == ["a", "b", "existing"]


async def test_scheduling_the_same_jobs_again_is_a_safe_retry(store: cs.Store) -> None:
    """Regression: after ``StoreUnavailableError`` (outcome unknown) a retry of the same
    ``schedule_once``/``schedule_many`` raised ``DuplicateJobError`` although the first
    attempt had stored the caller's own jobs. An identical job succeeds; a different job
    with the same key is still a duplicate."""
    scheduler = cs.get_job_once_scheduler(store)
    when = in_(3600)
    batch: list[Any] = [("x", when, {"n": 1}), ("y", when, None), ("z", when, [1, 2])]
    await scheduler.schedule_many(batch)
    again = await scheduler.schedule_many(batch)
    assert [job.key for job in again] == ["x", "y", "z"]
    await scheduler.schedule_once("x", when, {"n": 1})
    with pytest.raises(cs.DuplicateJobError):
        await scheduler.schedule_once("x", when, {"n": 2})
    # The answer of a write that took effect is lost: the retry succeeds.
    faults = inject_faults(store)
    faults.lose_answers({"put_jobs"})
    more: list[Any] = [("u", when, None), ("v", when, None)]
    with pytest.raises(cs.StoreUnavailableError):
        await scheduler.schedule_many(more)
    await scheduler.schedule_many(more)
    assert faults.failures["put_jobs"] == 1
    assert await scheduler.list_scheduled_jobs() == [
        cs.JobOnceMetadata("u", when, None),
        cs.JobOnceMetadata("v", when, None),
        cs.JobOnceMetadata("x", when, {"n": 1}),
        cs.JobOnceMetadata("y", when, None),
        cs.JobOnceMetadata("z", when, [1, 2]),
    ]


async def test_the_scheduler_survives_an_unexpected_error(
    store: cs.Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: any error other than ``StoreUnavailableError`` in the scheduler's loop
    ended it silently, with ``started`` still True: no job fired again on this
    instance. The loop now logs it and carries on."""
    recorder = Recorder(time.time)
    scheduler = await started(store, recorder)
    faults = inject_faults(store)
    faults.raise_next("claim_due_jobs", RuntimeError("a bug below the scheduler"))
    await scheduler.schedule_once("after-the-error", in_(0))
    await wait_until(lambda: recorder.count("after-the-error") == 1, "the job fired")
    assert faults.calls["claim_due_jobs"] >= 2
    assert "unexpected error" in caplog.text
    assert scheduler.started


# -- firing time -------------------------------------------------------------------------


async def test_run_at_in_the_past_fires_as_soon_as_possible(store: cs.Store) -> None:
    recorder = Recorder()
    scheduler = await started(store, recorder)
    begin = shim.monotonic()
    await scheduler.schedule_once("overdue", in_(-3600))
    await wait_until(lambda: recorder.count("overdue") == 1, "the overdue job fired")
    assert shim.monotonic() - begin < 5.0


async def test_jobs_never_fire_early_by_the_store_clock(timed: TimeControl) -> None:
    recorder = Recorder(timed.time)
    scheduler = await started(timed.store, recorder)
    run_at = await timed.at(0.5)
    nine_at = run_at - timedelta(seconds=0.25)
    await scheduler.schedule_once("ten", run_at)
    await scheduler.schedule_once("nine", nine_at)

    await timed.advance_to(nine_at, lambda: recorder.count() == 0, "nothing fired")
    await wait_until(lambda: recorder.count("nine") == 1, "the first job fired")
    assert await keys_listed(scheduler) == ["ten"]
    await timed.advance_to(run_at, lambda: recorder.count("ten") == 0, "the second did not")
    await wait_until(lambda: recorder.count("ten") == 1, "the second job fired")
    [fired] = recorder.times_of("ten")
    assert fired >= run_at.timestamp()
    if timed.manual:  # at the very moment the clock reached its run time
        assert fired == run_at.timestamp()
    assert recorder.times_of("nine")[0] >= nine_at.timestamp()


async def test_jobs_never_fire_early_by_the_real_clock(store: cs.Store) -> None:
    recorder = Recorder()
    scheduler = await started(store, recorder)
    run_ats = {f"t{i}": in_(0.05 * i) for i in range(1, 6)}
    for key, run_at in run_ats.items():
        await scheduler.schedule_once(key, run_at)
    await wait_until(lambda: recorder.count() >= 5, "five jobs fired")
    for key, run_at in run_ats.items():
        [fired] = recorder.times_of(key)
        assert fired >= run_at.timestamp() - EPSILON, key


# -- isolation ---------------------------------------------------------------------------


async def test_one_shot_job_and_mutex_with_the_same_name_do_not_collide(
    store: cs.Store,
) -> None:
    """In Go, job `x` locks `mutex_x`, the very key of a user's NewMutex("x")."""
    recorder = Recorder(blocking={"y"})
    scheduler = await started(store, recorder)

    mutex = cs.Mutex(store, "x")
    assert await mutex.acquire(timeout=SOON)
    token = mutex.token
    try:
        await scheduler.schedule_once("x", in_(0))
        await wait_until(lambda: recorder.count("x") == 1, "job x fired while mutex x is held")
        await wait_store_empty(store)
        assert mutex.locked()
        assert mutex.token == token
    finally:
        await mutex.release()

    # And the other way round: a running job `y` does not hold a mutex `y`.
    try:
        await scheduler.schedule_once("y", in_(0))
        await wait_until(lambda: recorder.count("y") == 1, "job y started")
        other = cs.Mutex(store, "y")
        assert await other.acquire(blocking=False)
        await other.release()
        assert await scheduler.cancel("x") is False  # job x is done; mutex x unaffected
    finally:
        recorder.release.set()
    await wait_store_empty(store)


async def test_namespaces_are_isolated(store: cs.Store, store_url: str, namespace: str) -> None:
    async with await cs.open_store(store_url, namespace=namespace + "-b") as other:
        rec_a, rec_b = Recorder(), Recorder()
        sched_a = await started(store, rec_a)
        sched_b = cs.get_job_once_scheduler(other)
        sched_b.set_callback(rec_b.callback)
        past = in_(-1)
        # The same key in both namespaces is not a duplicate.
        await sched_b.schedule_once("same", past, {"ns": "b"})
        await sched_a.schedule_once("same", past, {"ns": "a"})
        await wait_until(lambda: rec_a.count("same") == 1, "A's job fired")
        await wait_store_empty(store)
        await shim.sleep(QUIET)
        assert rec_a.props_of("same") == [{"ns": "a"}]  # B's job never fires in A
        assert rec_b.count() == 0
        assert await sched_a.list_scheduled_jobs() == []
        assert await sched_b.list_scheduled_jobs() == [
            cs.JobOnceMetadata("same", past, {"ns": "b"})
        ]
        assert await sched_a.cancel("same") is False  # cannot touch B's job

        await sched_b.start()
        await wait_until(lambda: rec_b.count("same") == 1, "B's job fired")
        await wait_store_empty(other)
        assert rec_b.props_of("same") == [{"ns": "b"}]
        assert rec_a.count() == 1


async def test_two_schedulers_share_jobs_and_each_fires_once(
    store: cs.Store, store_url: str, namespace: str
) -> None:
    async with await cs.open_store(store_url, namespace=namespace) as other:
        rec_a, rec_b = Recorder(), Recorder()
        sched_a = cs.get_job_once_scheduler(store)
        sched_b = cs.get_job_once_scheduler(other)
        run_at = in_(0.05)
        keys = [f"shared-{i}" for i in range(60)]
        await sched_a.schedule_many([(k, run_at, None) for k in keys[:30]])
        for key in keys[30:]:
            await sched_b.schedule_once(key, run_at)
        assert await keys_listed(sched_a) == await keys_listed(sched_b) == sorted(keys)
        sched_a.set_callback(rec_a.callback)
        sched_b.set_callback(rec_b.callback)
        await sched_a.start()
        await sched_b.start()

        await wait_until(lambda: rec_a.count() + rec_b.count() >= 60, "60 jobs fired")
        await wait_store_empty(store)
        await shim.sleep(QUIET)
        assert rec_a.counts() + rec_b.counts() == Counter(dict.fromkeys(keys, 1))

        # A job scheduled through an instance that then stops still fires elsewhere.
        await sched_b.stop()
        await sched_b.schedule_once("orphan", in_(0.05))
        await wait_until(lambda: rec_a.count("orphan") == 1, "A fired B's orphaned job")
        assert rec_b.count("orphan") == 0


# -- cancel and stop while firing --------------------------------------------------------


async def test_cancel_while_the_callback_runs_returns_false_without_deadlock(
    store: cs.Store, store_url: str, namespace: str
) -> None:
    """In Go, Cancel can deadlock with a job that has just fired. Here a running job is
    not pending: cancel returns False at once, and the callback finishes normally."""
    recorder = Recorder(blocking={"busy"})
    scheduler = await started(store, recorder)
    try:
        job = await scheduler.schedule_once("busy", in_(0))
        await wait_until(lambda: recorder.count("busy") == 1, "busy started")
        begin = shim.monotonic()
        assert await scheduler.cancel("busy") is False
        assert await job.cancel() is False
        async with await cs.open_store(store_url, namespace=namespace) as other:
            assert await cs.get_job_once_scheduler(other).cancel("busy") is False
        assert shim.monotonic() - begin < 5.0  # did not wait for the callback
        assert recorder.finished_count("busy") == 0
    finally:
        recorder.release.set()
    await wait_until(lambda: recorder.finished_count("busy") == 1, "busy finished")
    await wait_store_empty(store)
    await shim.sleep(QUIET)
    assert recorder.count("busy") == 1


async def test_reschedule_while_the_old_run_is_still_running(store: cs.Store) -> None:
    """Cancel a running job and schedule its key again, due at once: the new job runs
    once although the old run has not finished, the old run's completion does not
    disturb the new one, and stop() waits for the new run."""
    lock = threading.Lock()
    gates = {1: threading.Event(), 2: threading.Event()}
    started_runs: list[int] = []
    finished_runs: list[int] = []

    def callback(key: str, props: Any) -> None:
        with lock:
            started_runs.append(props["run"])
        gates[props["run"]].wait(SOON)
        with lock:
            finished_runs.append(props["run"])

    scheduler = cs.get_job_once_scheduler(store)
    scheduler.set_callback(callback)
    await scheduler.start()
    try:
        await scheduler.schedule_once("again", in_(0), {"run": 1})
        await wait_until(lambda: started_runs == [1], "the first run started")
        assert await scheduler.cancel("again") is False
        await scheduler.schedule_once("again", in_(0), {"run": 2})
        await wait_until(lambda: started_runs == [1, 2], "the second run started")

        gates[1].set()
        await wait_until(lambda: finished_runs == [1], "the first run finished")
        await shim.sleep(QUIET)
        # The first run's completion left the second run's claimed record in place (it
        # would run again elsewhere if this instance died now).
        assert await store._ops.next_job_delay() is not None
        assert await scheduler.stop(timeout=0.2) is False  # the second run is still going
        assert finished_runs == [1]
    finally:
        for gate in gates.values():
            gate.set()
    assert await scheduler.stop(timeout=SOON) is True
    assert finished_runs == [1, 2]
    assert started_runs == [1, 2]
    assert await store._ops.next_job_delay() is None


async def test_stop_keeps_jobs_and_start_again_fires_them(timed: TimeControl) -> None:
    recorder = Recorder(timed.time)
    scheduler = await started(timed.store, recorder)
    run_at = await timed.at(0.25)
    await scheduler.schedule_once("kept", run_at)
    assert await scheduler.stop() is True
    assert not scheduler.started
    assert await scheduler.stop() is True  # idempotent

    await timed.advance_to(run_at)
    await shim.sleep(QUIET)
    assert recorder.count() == 0  # stopped: nothing fires here
    assert await keys_listed(scheduler) == ["kept"]  # ... and the job stays stored

    await scheduler.start()
    await wait_until(lambda: recorder.count("kept") == 1, "the kept job fired after restart")
    await wait_store_empty(timed.store)
    await scheduler.schedule_once("after-restart", await timed.at(0.25))
    await timed.advance(0.25)
    await wait_until(lambda: recorder.count("after-restart") == 1, "a new job fired")


async def test_stop_waits_for_a_running_callback(store: cs.Store) -> None:
    recorder = Recorder(blocking={"running"})
    scheduler = await started(store, recorder)
    try:
        await scheduler.schedule_once("running", in_(0))
        await wait_until(lambda: recorder.count("running") == 1, "the callback started")
        assert await scheduler.stop(timeout=0.1) is False
    finally:
        recorder.release.set()
    assert await scheduler.stop(timeout=SOON) is True
    assert recorder.finished_count("running") == 1
    assert await store._ops.next_job_delay() is None  # completed, not left claimed


async def test_long_callback_keeps_its_claim_and_is_not_run_again(
    store: cs.Store, store_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="clustersync")
    ttl = 0.5
    duration = 3 * ttl
    async with await cs.open_store(store_url, namespace=namespace) as other:
        rec_a, rec_b = Recorder(duration=duration), Recorder(duration=duration)
        sched_a = await started(store, rec_a, claim_ttl=ttl)
        sched_b = await started(other, rec_b, claim_ttl=ttl)
        assert sched_a.claim_ttl == sched_b.claim_ttl == ttl
        await sched_a.schedule_once("long", in_(0))
        await wait_until(lambda: rec_a.count() + rec_b.count() == 1, "long started")
        await wait_store_empty(store)
        await shim.sleep(QUIET)
        assert rec_a.count() + rec_b.count() == 1
        assert rec_a.finished_count("long") + rec_b.finished_count("long") == 1
        assert not [r for r in caplog.records if "claim lost" in r.getMessage()]


async def test_job_of_a_crashed_claimer_runs_once_after_the_claim_expires(
    timed: TimeControl,
) -> None:
    store = timed.store
    claim_ttl = 0.5
    recorder = Recorder(timed.time, blocking={"crashed"})
    scheduler = cs.get_job_once_scheduler(store)
    scheduler.set_callback(recorder.callback)
    await scheduler.schedule_once("crashed", await timed.now(), {"p": 1})
    # An instance claims the job and dies without completing it.
    claim_expires = await timed.at(claim_ttl)  # at the earliest
    [claim] = await store._ops.claim_due_jobs("dead-owner", 10, claim_ttl)
    assert claim.key == "crashed"
    assert await scheduler.list_scheduled_jobs() == []  # claimed: not pending

    await scheduler.start()
    control_at = await timed.at(0.25)
    await scheduler.schedule_once("control", control_at)
    await timed.advance_to(control_at)
    await wait_until(lambda: recorder.count("control") == 1, "control fired")
    await timed.quiet(  # the claim is still live
        lambda: recorder.count("crashed") == 0, "crashed not re-run", until=claim_expires
    )

    try:
        await timed.advance_to(claim_expires)  # past the dead claim
        await wait_until(lambda: recorder.count("crashed") == 1, "the crashed job re-ran")
        # The dead claimer's late completion cannot remove the job now claimed by us.
        assert (
            await store._ops.complete_job("crashed", "dead-owner", claim.claim, "ok", None) is False
        )
        assert await store._ops.next_job_delay() is not None
    finally:
        recorder.release.set()
    await wait_store_empty(store)
    await shim.sleep(QUIET)
    assert recorder.count("crashed") == 1
    assert recorder.props_of("crashed") == [{"p": 1}]
