"""Large ``schedule_many`` batches on Redis: stored step by step (one script of a
thousand jobs at a time), so other clients are never blocked for long, and still all or
nothing.

Regression: the whole batch was one Lua script. 100,000 jobs blocked every other client
of the server for 0.7 s, 400,000 for 3.4 s, and a million ran past ``lua-time-limit``:
every client of the server got ``BUSY`` errors for 20 s.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

import clustersync as cs
from clustersync.stores.redis import sync as redis_sync
from tests.conftest import selected_backends

pytestmark = pytest.mark.skipif("redis" not in selected_backends(), reason="Redis not selected")

WHEN = datetime.now(UTC) + timedelta(days=1)


@pytest.fixture
def store(redis_server: Any) -> Iterator[cs.Store]:
    with cs.open_store(redis_server.url, namespace=f"batch-{uuid.uuid4().hex[:8]}") as opened:
        yield opened


def _keys(scheduler: cs.JobOnceScheduler) -> list[str]:
    return sorted(job.key for job in scheduler.list_scheduled_jobs())


def test_a_batch_larger_than_a_step_is_stored_whole(
    store: cs.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_sync, "_PUT_STEP", 100)
    scheduler = cs.get_job_once_scheduler(store)
    batch = [(f"k{n:04}", WHEN, {"n": n}) for n in range(1050)]
    scheduler.schedule_many(batch)
    assert _keys(scheduler) == [key for key, _, _ in batch]
    scheduler.schedule_many(batch)  # an identical retry succeeds
    assert len(_keys(scheduler)) == 1050


def test_a_duplicate_in_a_late_step_stores_nothing(
    store: cs.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_sync, "_PUT_STEP", 100)
    scheduler = cs.get_job_once_scheduler(store)
    scheduler.schedule_once("k1040", WHEN + timedelta(seconds=1))  # differs from the batch's
    batch = [(f"k{n:04}", WHEN, None) for n in range(1050)]
    with pytest.raises(cs.DuplicateJobError) as raised:
        scheduler.schedule_many(batch)
    assert raised.value.key == "k1040"
    assert _keys(scheduler) == ["k1040"]
    with pytest.raises(cs.DuplicateJobError):
        scheduler.schedule_many([*batch[:500], ("k0001", WHEN, None)])  # repeated in it
    assert _keys(scheduler) == ["k1040"]


def test_a_duplicate_appearing_between_the_steps_undoes_the_earlier_ones(
    store: cs.Store, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance stores a conflicting key after the batch was checked: the steps
    stored before it are undone, and the call raises ``DuplicateJobError``."""
    monkeypatch.setattr(redis_sync, "_PUT_STEP", 100)
    scheduler = cs.get_job_once_scheduler(store)
    scheduler.schedule_once("k0005", WHEN)  # identical to the batch's: must survive
    backend = store._ops
    real_step = backend._put_step  # type: ignore[attr-defined]
    puts = [0]

    def step(jobs: Any, mode: str) -> set[str]:
        if mode == "put":
            puts[0] += 1
            if puts[0] == 3:  # after two steps were stored
                with cs.open_store(redis_server.url, namespace=store.namespace) as other:
                    cs.get_job_once_scheduler(other).schedule_once("k0250", WHEN, "theirs")
        result: set[str] = real_step(jobs, mode)
        return result

    monkeypatch.setattr(backend, "_put_step", step)
    with pytest.raises(cs.DuplicateJobError) as raised:
        scheduler.schedule_many([(f"k{n:04}", WHEN, None) for n in range(1050)])
    assert raised.value.key == "k0250"
    assert _keys(scheduler) == ["k0005", "k0250"]


@pytest.mark.slow
def test_a_huge_batch_does_not_block_other_clients(store: cs.Store, redis_server: Any) -> None:
    scheduler = cs.get_job_once_scheduler(store)
    batch = [(f"k{n}", WHEN, None) for n in range(200_000)]
    pings: list[float] = []
    errors: list[str] = []
    done = threading.Event()

    def probe() -> None:
        client = redis.Redis.from_url(redis_server.url, socket_timeout=30)
        while not done.is_set():
            began = time.monotonic()
            try:
                client.ping()
            except redis.RedisError as exc:
                errors.append(repr(exc))
            pings.append(time.monotonic() - began)
            time.sleep(0.02)
        client.close()

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        scheduler.schedule_many(batch)
    finally:
        done.set()
        prober.join(30)
    assert not errors, errors[:3]
    assert max(pings) < 1.0, f"another client waited {max(pings):.2f}s for a PING"
    assert scheduler.store._ops.next_job_delay() is not None
