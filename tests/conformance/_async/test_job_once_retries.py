"""One-shot jobs that fail, on every store: retries with backoff counted in the store,
failed jobs (listed, retried, cancelled), the ``JobContext`` third parameter, handlers by
key prefix, and the recent runs."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clustersync import aio as cs
from clustersync._concurrency import aio as shim

SOON = 20.0
FAST = cs.Retry(attempts=3, backoff=timedelta(seconds=0.2), max_backoff=timedelta(seconds=1))


class Attempts:
    """A callback that raises for its first ``failures`` attempts and records each call
    with its context and time."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.lock = threading.Lock()
        self.calls: list[tuple[str, cs.JobContext, float]] = []

    def __call__(self, key: str, props: Any, context: cs.JobContext) -> None:
        with self.lock:
            self.calls.append((key, context, time.monotonic()))
            count = len(self.calls)
        if count <= self.failures:
            raise ValueError(f"attempt {count} failed\nmore details")


async def wait_until(predicate: Any, what: str, timeout: float = SOON) -> None:
    deadline = shim.monotonic() + timeout
    while not predicate():
        if shim.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await shim.sleep(0.01)


async def test_a_failing_callback_is_retried_with_backoff_until_it_succeeds(
    store: cs.Store,
) -> None:
    calls = Attempts(failures=2)
    scheduler = cs.get_job_once_scheduler(store, retry=FAST)
    scheduler.set_callback(calls)
    await scheduler.start()
    run_at = datetime.now(UTC)
    await scheduler.schedule_once("flaky", run_at, {"n": 1})
    try:
        await wait_until(lambda: len(calls.calls) == 3, "three attempts")
        await shim.sleep(0.5)
        assert len(calls.calls) == 3, "ran again after it succeeded"
        attempts = [context.attempt for _, context, _ in calls.calls]
        assert attempts == [1, 2, 3]
        first, second, third = (at for _, _, at in calls.calls)
        assert second - first >= 0.1, "the first retry waited at least half its backoff"
        assert third - second >= 0.2, "the second retry waited at least half of 0.4 s"
        contexts = [context for _, context, _ in calls.calls]
        assert contexts[0].run_at == run_at
        assert contexts[1].run_at > contexts[0].run_at, "a retry's run_at is when it was due"
        assert {context.scheduled_by for context in contexts} == {store.identity}
        assert await scheduler.list_failed_jobs() == []
        runs = await cs.recent_runs(store)
        assert [(run.key, run.outcome, run.attempt) for run in runs][:3] == [
            ("flaky", "ok", 3),
            ("flaky", "retry", 2),
            ("flaky", "retry", 1),
        ]
        assert runs[2].error == "ValueError: attempt 1 failed"
        assert runs[2].lateness_s is not None
        assert runs[2].lateness_s >= 0
    finally:
        await scheduler.stop(5)


async def test_a_job_that_keeps_failing_is_kept_as_failed(store: cs.Store) -> None:
    calls = Attempts(failures=1000)
    scheduler = cs.get_job_once_scheduler(store, retry=FAST)
    scheduler.set_callback(calls)
    await scheduler.start()
    run_at = datetime.now(UTC) - timedelta(seconds=1)
    try:
        await scheduler.schedule_once("doomed", run_at, {"user": 7})
        deadline = shim.monotonic() + SOON
        while not (failed := await scheduler.list_failed_jobs()):
            assert shim.monotonic() < deadline, "never kept as failed"
            await shim.sleep(0.02)
        await shim.sleep(0.5)
        assert len(calls.calls) == 3, "exactly `attempts` runs"
        (job,) = failed
        assert (job.key, job.props, job.attempts) == ("doomed", {"user": 7}, 3)
        assert job.run_at == run_at
        assert job.last_error == "ValueError: attempt 3 failed"
        assert job.failed_at >= run_at
        assert await scheduler.list_scheduled_jobs() == [], "a failed job is not pending"
        with pytest.raises(cs.DuplicateJobError):
            await scheduler.schedule_once("doomed", run_at, {"user": 7})
        calls.failures = 0
        await scheduler.retry_failed("doomed")
        await wait_until(lambda: len(calls.calls) == 4, "the retried job ran")
        assert calls.calls[-1][1].attempt == 1, "a fresh attempt count"
        with pytest.raises(KeyError):
            await scheduler.retry_failed("doomed")
        calls.failures = 1000
        await scheduler.schedule_once("doomed-2", run_at)
        await wait_until(lambda: len(calls.calls) == 7, "three more attempts")
        deadline = shim.monotonic() + SOON
        while not await scheduler.list_failed_jobs():
            assert shim.monotonic() < deadline
            await shim.sleep(0.02)
        assert await scheduler.cancel("doomed-2"), "cancel removes a failed job"
        assert await scheduler.list_failed_jobs() == []
    finally:
        await scheduler.stop(5)


async def test_without_retry_a_failing_callback_ends_the_job(store: cs.Store) -> None:
    calls = Attempts(failures=1)
    scheduler = cs.get_job_once_scheduler(store)
    scheduler.set_callback(calls)
    await scheduler.start()
    try:
        await scheduler.schedule_once("once", datetime.now(UTC))
        await wait_until(lambda: len(calls.calls) == 1, "the job ran")
        deadline = shim.monotonic() + SOON
        while not (runs := await cs.recent_runs(store)):
            assert shim.monotonic() < deadline
            await shim.sleep(0.02)
        assert (runs[0].key, runs[0].outcome) == ("once", "error")
        await shim.sleep(0.3)
        assert len(calls.calls) == 1
        assert await scheduler.list_failed_jobs() == []
        assert await scheduler.list_scheduled_jobs() == []
    finally:
        await scheduler.stop(5)


async def test_handlers_by_key_prefix(store: cs.Store) -> None:
    """Two modules of one app each register their handler; the longest prefix wins; a
    key no handler matches is left pending, never dropped."""
    seen: list[tuple[str, str]] = []

    def handler(name: str) -> Any:
        return lambda key, props: seen.append((name, key))

    scheduler = cs.get_job_once_scheduler(store)
    scheduler.set_callback(handler("billing"), prefix="billing:")
    scheduler.set_callback(handler("billing-eu"), prefix="billing:eu:")
    scheduler.set_callback(handler("mail"), prefix="mail:")
    await scheduler.start()
    try:
        now = datetime.now(UTC)
        for key in ("billing:1", "billing:eu:2", "mail:3", "other:4"):
            await scheduler.schedule_once(key, now)
        await wait_until(lambda: len(seen) == 3, "three handled jobs")
        await shim.sleep(0.3)
        assert sorted(seen) == [
            ("billing", "billing:1"),
            ("billing-eu", "billing:eu:2"),
            ("mail", "mail:3"),
        ]
        assert [job.key for job in await scheduler.list_scheduled_jobs()] == ["other:4"], (
            "a job no handler matches is left pending"
        )
    finally:
        await scheduler.stop(5)
    with pytest.raises(TypeError):
        scheduler.set_callback(handler("x"), prefix=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        scheduler.set_callback(handler("x"), prefix="")


async def test_retry_options_are_validated(store: cs.Store) -> None:
    for bad, error in (
        ({"attempts": 0}, ValueError),
        ({"attempts": 1.5}, TypeError),
        ({"backoff": timedelta(0)}, ValueError),
        ({"backoff": 3}, TypeError),
        ({"backoff": timedelta(hours=2)}, ValueError),  # above max_backoff
    ):
        with pytest.raises(error):
            cs.Retry(**bad)
    with pytest.raises(TypeError):
        cs.get_job_once_scheduler(store, retry=3)
    retry = cs.Retry(attempts=4, backoff=timedelta(seconds=10), max_backoff=timedelta(seconds=30))
    delays = [retry.delay(n) for n in (1, 2, 3, 4)]
    assert 5 <= delays[0] <= 10
    assert 10 <= delays[1] <= 20
    assert 15 <= delays[2] <= 30
    assert 15 <= delays[3] <= 30, "capped by max_backoff"
