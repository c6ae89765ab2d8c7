"""Wake-up messages: who is told about a change, and that nothing is late for it.

A store only notifies when someone may need to act: Redis publishes on release only
while a waiter is registered, and on a new job only when it is due before every stored
one; PostgreSQL announces a new job with its due time, and a sleeping scheduler that
wakes up before then anyway does not reread the store. These tests check both sides:
the messages sent, and that waiters and schedulers still act on time.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis

import clustersync as cs
from clustersync._notify import ChangeHub
from clustersync.stores.contract import JOBS_CHANNEL, lease_channel, parse_jobs_due
from clustersync.stores.redis.lua import WAITER_GRACE_MS
from clustersync.testing import inject_faults
from tests.conftest import kind_of, make_store_url

HOUR = timedelta(hours=1)


def _two_stores(url: str, namespace: str) -> Iterator[tuple[cs.Store, cs.Store]]:
    first = cs.open_store(url, namespace=namespace)
    second = cs.open_store(url, namespace=namespace)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


@pytest.fixture
def stores(store_url: str, namespace: str) -> Iterator[tuple[cs.Store, cs.Store]]:
    """Two store objects on one cluster (for memory://, the same named store)."""
    yield from _two_stores(store_url, namespace)


class Fired:
    """Records when each job's callback started (wall clock, like ``run_at``)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.cond = threading.Condition()

    def __call__(self, key: str, props: Any) -> None:
        with self.cond:
            self.at.setdefault(key, time.time())
            self.cond.notify_all()

    def wait(self, keys: set[str], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: keys <= self.at.keys(), timeout)


def _start_scheduler(store: cs.Store, fired: Fired) -> cs.JobOnceScheduler:
    scheduler = cs.get_job_once_scheduler(store)
    scheduler.set_callback(fired)
    scheduler.start()
    return scheduler


# -- schedulers: woken for earlier jobs, on time for later ones ----------------------------


def test_sleeping_scheduler_wakes_for_a_job_due_before_its_plan(
    stores: tuple[cs.Store, cs.Store],
) -> None:
    """A scheduler sleeping towards a job an hour away fires a job added elsewhere, due
    in 0.3 s, on time (its fallback re-check is 5 s away)."""
    runner, producer = stores
    fired = Fired()
    scheduler = _start_scheduler(runner, fired)
    try:
        cs.get_job_once_scheduler(producer).schedule_once("far", datetime.now(UTC) + HOUR)
        time.sleep(0.3)  # the scheduler has read its plan: the far job
        run_at = datetime.now(UTC) + timedelta(seconds=0.3)
        cs.get_job_once_scheduler(producer).schedule_once("near", run_at)
        assert fired.wait({"near"}, 3.0), "the scheduler was not woken for the earlier job"
        lateness = fired.at["near"] - run_at.timestamp()
        assert 0 <= lateness < 0.25, f"fired {lateness:+.3f}s from run_at"
    finally:
        scheduler.stop(5)


def test_job_due_after_the_earliest_fires_on_time(stores: tuple[cs.Store, cs.Store]) -> None:
    """Jobs added elsewhere that are not the earliest (no wake-up needed) still fire on
    time: the scheduler rereads the store when it wakes for the earlier one."""
    runner, producer = stores
    fired = Fired()
    scheduler = _start_scheduler(runner, fired)
    try:
        time.sleep(0.2)
        now = datetime.now(UTC)
        plan = {
            "first": now + timedelta(seconds=0.4),
            "second": now + timedelta(seconds=0.8),
            "third": now + timedelta(seconds=1.2),
        }
        producer_scheduler = cs.get_job_once_scheduler(producer)
        for key, run_at in plan.items():
            producer_scheduler.schedule_once(key, run_at)
        assert fired.wait(set(plan), 4.0), f"fired only {sorted(fired.at)}"
        for key, run_at in plan.items():
            lateness = fired.at[key] - run_at.timestamp()
            assert 0 <= lateness < 0.25, f"{key} fired {lateness:+.3f}s from run_at"
    finally:
        scheduler.stop(5)


def test_no_wake_up_is_lost_while_jobs_are_added_claimed_and_cancelled_concurrently(
    store_url: str, namespace: str
) -> None:
    """Two producers add jobs due within the next second in random order (so each one
    may or may not be the new earliest) while two other store objects run schedulers
    that claim and complete jobs, and a third cancels some. A lost wake-up would leave a
    job to the 5 s fallback re-check; every job must fire less than 0.5 s late."""
    rng = random.Random(7)
    stores = [cs.open_store(store_url, namespace=namespace) for _ in range(4)]
    fired = Fired()
    schedulers = [_start_scheduler(store, fired) for store in stores[:2]]
    planned: dict[str, float] = {}
    cancelled: set[str] = set()
    lock = threading.Lock()

    def produce(store: cs.Store, prefix: str) -> None:
        scheduler = cs.get_job_once_scheduler(store)
        for i in range(60):
            run_at = datetime.now(UTC) + timedelta(seconds=rng.uniform(0.05, 1.0))
            key = f"{prefix}-{i}"
            scheduler.schedule_once(key, run_at)
            with lock:
                planned[key] = run_at.timestamp()
            time.sleep(rng.uniform(0, 0.02))

    def cancel_some() -> None:
        scheduler = cs.get_job_once_scheduler(stores[3])
        for _ in range(20):
            time.sleep(0.05)
            with lock:
                candidates = sorted(set(planned) - cancelled)
            key = rng.choice(candidates) if candidates else None
            if key is not None and scheduler.cancel(key):
                with lock:
                    cancelled.add(key)

    try:
        threads = [
            threading.Thread(target=produce, args=(stores[2], "a")),
            threading.Thread(target=produce, args=(stores[3], "b")),
            threading.Thread(target=cancel_some),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        wanted = set(planned) - cancelled
        assert fired.wait(wanted, 10.0), f"never fired: {sorted(wanted - fired.at.keys())}"
        assert not cancelled & fired.at.keys(), "a job fired although cancel removed it"
        late = {key: fired.at[key] - planned[key] for key in wanted}
        worst = max(late, key=lambda key: late[key])
        assert late[worst] < 0.5, f"{worst} fired {late[worst]:.3f}s late"
        assert min(late.values()) >= -0.002, "a job fired before its run_at"
    finally:
        for scheduler in schedulers:
            scheduler.stop(5)
        for store in stores:
            store.close()


def test_later_jobs_added_elsewhere_do_not_make_a_scheduler_reread(
    backend: str,
    tmp_path: Any,
    request: pytest.FixtureRequest,
    namespace: str,
) -> None:
    """Scheduling 50 jobs due after a sleeping scheduler's next wake-up costs that
    scheduler nothing (before: every job made every scheduler claim and reread)."""
    if kind_of(backend).name == "sqlite":
        # SQLite's change watcher sees that the file changed (PRAGMA data_version), not
        # what: a sleeping scheduler rechecks once per 5 ms poll that saw commits, so the
        # count depends on how fast the 50 commits come (docs/architecture.md).
        pytest.skip("SQLite wakes on every detected commit, by design")
    url = make_store_url(backend, tmp_path, request)
    for runner, producer in _two_stores(url, namespace):
        fired = Fired()
        producer_scheduler = cs.get_job_once_scheduler(producer)
        producer_scheduler.schedule_once("soon", datetime.now(UTC) + timedelta(seconds=3))
        calls = inject_faults(runner).calls  # counts the store operations from now on
        scheduler = _start_scheduler(runner, fired)
        try:
            # The scheduler must be asleep before counting: its first pass (claim, then
            # read its plan) and the recheck that a change watcher's first poll causes
            # (SQLite) can take longer than any fixed sleep on a loaded machine.
            deadline = time.monotonic() + 10
            before = calls.copy()
            while True:
                time.sleep(0.3)
                if calls["next_job_delay"] >= 1 and calls == before:
                    break
                assert time.monotonic() < deadline, "the scheduler never went to sleep"
                before = calls.copy()
            later = datetime.now(UTC) + HOUR
            for i in range(50):
                producer_scheduler.schedule_once(f"later-{i}", later)
            time.sleep(0.5)  # let any wake-up happen
            reads = calls["next_job_delay"] - before["next_job_delay"]
            claims = calls["claim_due_jobs"] - before["claim_due_jobs"]
            assert reads + claims <= 2, (
                f"the scheduler reread the store {reads} times and claimed {claims}"
                " times for jobs due after its plan"
            )
            assert not fired.at
        finally:
            scheduler.stop(5)


# -- what the servers are sent ---------------------------------------------------------------


class RedisEvents:
    """A raw subscription to a namespace's Redis event channel."""

    def __init__(self, url: str, namespace: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(f"cs:{{{namespace}}}:events")
        self.namespace = namespace

    def messages(self, settle: float = 0.2) -> list[str]:
        out: list[str] = []
        deadline = time.monotonic() + settle
        while (left := deadline - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=left)
            if message is not None and message["type"] == "message":
                out.append(str(message["data"]))
        return out

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def redis_events(redis_server: Any, namespace: str) -> Iterator[RedisEvents]:
    events = RedisEvents(redis_server.url, namespace)
    yield events
    events.close()


def test_redis_uncontended_release_publishes_nothing(
    redis_server: Any, namespace: str, redis_events: RedisEvents
) -> None:
    with cs.open_store(redis_server.url, namespace=namespace) as store:
        mutex = cs.Mutex(store, "quiet")
        for _ in range(3):
            mutex.acquire()
            mutex.release()
    assert redis_events.messages() == []


def test_redis_failed_acquire_registers_a_waiter_that_the_release_wakes(
    redis_server: Any, namespace: str, redis_events: RedisEvents
) -> None:
    with cs.open_store(redis_server.url, namespace=namespace) as store:
        holder = cs.Mutex(store, "busy", ttl=20)
        other = cs.Mutex(store, "busy", ttl=20)
        holder.acquire()
        assert not other.acquire(blocking=False)
        flag = f"cs:{{{namespace}}}:w:m:busy"
        left = redis_events.client.pttl(flag)
        assert 20_000 < left <= 20_000 + WAITER_GRACE_MS, left
        holder.release()
        assert redis_events.client.exists(flag) == 0
        assert redis_events.messages() == [lease_channel("m:busy")]
        # The flag is spent: the next uncontended cycle is silent again.
        other.acquire()
        other.release()
        assert redis_events.messages() == []


def test_redis_job_message_only_for_a_new_earliest_job(
    redis_server: Any, namespace: str, redis_events: RedisEvents
) -> None:
    with cs.open_store(redis_server.url, namespace=namespace) as store:
        scheduler = cs.get_job_once_scheduler(store)
        now = datetime.now(UTC)
        scheduler.schedule_once("a", now + 2 * HOUR)  # first job: announced
        assert redis_events.messages() == [JOBS_CHANNEL]
        scheduler.schedule_once("b", now + 3 * HOUR)  # later than a: silent
        scheduler.schedule_many([("c", now + 4 * HOUR, None), ("d", now + 2 * HOUR, None)])
        assert redis_events.messages() == []
        scheduler.schedule_many([("e", now + 5 * HOUR, None), ("f", now + HOUR, None)])
        assert redis_events.messages() == [JOBS_CHANNEL]  # f is the new earliest
        scheduler.cancel("b")
        assert redis_events.messages() == [JOBS_CHANNEL]


def test_waiter_woken_after_the_holder_renewed_many_times(store_url: str, namespace: str) -> None:
    """The waiter registration outlives renewals of the lease it waits for: a release
    after 1.5 s of renewals of a 0.3 s lease wakes the waiter at once."""
    with cs.open_store(store_url, namespace=namespace) as store:
        holder = cs.Mutex(store, "renewed", ttl=0.3)
        holder.acquire()
        got: list[float] = []

        def wait() -> None:
            waiter = cs.Mutex(store, "renewed", ttl=0.3)
            assert waiter.acquire(timeout=10)
            got.append(time.monotonic())
            waiter.release()

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(1.5)
        assert holder.locked()
        released = time.monotonic()
        holder.release()
        thread.join(10)
        assert got, "the waiter never acquired"
        assert got[0] - released < 0.25, f"woken {got[0] - released:.3f}s after the release"


def test_postgres_job_message_carries_the_due_time(postgres_server: Any, namespace: str) -> None:
    from clustersync.stores.postgres.aio import notify_channel

    listener = psycopg.connect(postgres_server.url, autocommit=True)
    try:
        listener.execute(f'LISTEN "{notify_channel(namespace)}"')
        with cs.open_store(postgres_server.url, namespace=namespace) as store:
            scheduler = cs.get_job_once_scheduler(store)
            scheduler.schedule_once("one", datetime.now(UTC) + timedelta(seconds=60))
            scheduler.schedule_many(
                [
                    ("two", datetime.now(UTC) + timedelta(seconds=90), None),
                    ("three", datetime.now(UTC) + timedelta(seconds=30), None),
                ]
            )
        payloads = [n.payload for n in listener.notifies(timeout=1.0, stop_after=2)]
    finally:
        listener.close()
    due = [parse_jobs_due(p) for p in payloads]
    assert len(due) == 2, payloads
    first, second = due
    assert first is not None
    assert 59 < first <= 60
    assert second is not None
    assert 29 < second <= 30


class PostgresEvents:
    """A raw LISTEN on a namespace's PostgreSQL notification channel."""

    def __init__(self, url: str, namespace: str) -> None:
        from clustersync.stores.postgres.aio import notify_channel

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute(f'LISTEN "{notify_channel(namespace)}"')

    def messages(self, settle: float = 0.2) -> list[str]:
        return [n.payload for n in self.conn.notifies(timeout=settle)]

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def postgres_events(postgres_server: Any, namespace: str) -> Iterator[PostgresEvents]:
    events = PostgresEvents(postgres_server.url, namespace)
    yield events
    events.close()


def test_postgres_release_notifies_only_when_a_waiter_marked_the_lease(
    postgres_server: Any, namespace: str, postgres_events: PostgresEvents
) -> None:
    with cs.open_store(postgres_server.url, namespace=namespace) as store:
        holder = cs.Mutex(store, "busy", ttl=20)
        other = cs.Mutex(store, "busy", ttl=20)
        for _ in range(3):
            holder.acquire()
            holder.release()
        assert postgres_events.messages() == []
        holder.acquire()
        assert not other.acquire(blocking=False)  # marks the lease as waited for
        holder.release()
        assert postgres_events.messages() == [lease_channel("m:busy")]


# -- the hub's filter ---------------------------------------------------------------------


class _Flag:
    def __init__(self) -> None:
        self.count = 0

    def set_threadsafe(self) -> None:
        self.count += 1


def test_hub_lets_the_filter_skip_jobs_due_later() -> None:
    hub = ChangeHub(lambda interval: None)
    seen: list[float] = []
    filtered, plain, lease = _Flag(), _Flag(), _Flag()

    def wants(due_in: float) -> bool:
        seen.append(due_in)
        return due_in < 10

    with (
        hub.listen(JOBS_CHANNEL, filtered, 0.01, wants),
        hub.listen(JOBS_CHANNEL, plain, 0.01),
        hub.listen(lease_channel("x@1"), lease, 0.01),
    ):
        hub("jobs@20000000")  # due in 20 s: filtered out
        assert (filtered.count, plain.count) == (0, 1)
        hub("jobs@5000000")  # due in 5 s: wakes
        assert (filtered.count, plain.count) == (1, 2)
        hub("jobs")  # a change without a due time wakes everyone
        hub("jobs@not-a-number")
        hub("*")
        assert (filtered.count, plain.count) == (4, 5)
        hub(lease_channel("x@1"))  # '@' in a lease name is not a due time
        assert lease.count == 2  # that message and '*'
    assert seen == [20.0, 5.0]


def test_scheduler_filter_compares_with_its_planned_wake_up(store_url: str, namespace: str) -> None:
    with cs.open_store(store_url, namespace=namespace) as store:
        scheduler = cs.get_job_once_scheduler(store)
        scheduler.schedule_once(uuid.uuid4().hex, datetime.now(UTC) + timedelta(seconds=2))
        scheduler.set_callback(lambda key, props: None)
        scheduler.start()
        try:
            time.sleep(0.3)  # planned: wake up in about 1.7 s
            assert scheduler._wakes_for(1.0)
            assert not scheduler._wakes_for(5.0)
            assert not scheduler._wakes_for(3600.0)
        finally:
            scheduler.stop(5)
