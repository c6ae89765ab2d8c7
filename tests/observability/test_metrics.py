"""Prometheus metrics, scraped from a registry after real work on every store: the names
and labels of the Observability guide, counts that match what happened, nothing recorded
before ``enable_metrics``, and typed errors for bad use."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import clustersync as cs
from clustersync import _metrics
from clustersync import aio as acs
from clustersync.testing import inject_faults

from .conftest import value


def wait_until(condition: object, timeout: float = 10.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_metrics_after_real_work(
    registry: CollectorRegistry, store_url: str, namespace: str
) -> None:
    with cs.open_store(store_url, namespace=namespace) as store:
        # Locks: 2 acquired, 2 timeouts (one non-blocking), 1 cancelled, 1 lost.
        holder, other = cs.Mutex(store, "orders"), cs.Mutex(store, "orders")
        with holder:
            time.sleep(0.05)
            assert not other.acquire(timeout=0.1)
            assert not other.acquire(blocking=False)
            cancel = threading.Event()
            cancel.set()
            assert not other.acquire(cancel=cancel)
        lost = threading.Event()
        victim = cs.Mutex(store, "victim", ttl=0.6, on_lost=lost.set)
        victim.acquire()
        assert cs.break_lock(store, "victim")
        assert lost.wait(5)

        # Recurring jobs: one run that succeeds, one that raises.
        def fail() -> None:
            raise RuntimeError("boom")

        hour = cs.wait_for_interval(timedelta(hours=1))
        ran = threading.Event()
        jobs = [
            cs.schedule(store, "report", hour, ran.set),
            cs.schedule(store, "broken", hour, fail),
        ]

        # One-shot jobs: one ok; one that fails twice (a retry, then an error).
        scheduler = cs.get_job_once_scheduler(
            store, retry=cs.Retry(attempts=2, backoff=timedelta(milliseconds=20))
        )

        def callback(key: str, props: object) -> None:
            if key == "bad":
                raise ValueError("bad job")

        scheduler.set_callback(callback)
        now = datetime.now(UTC)
        scheduler.schedule_many([("good", now, None), ("bad", now, None)])
        later = now + timedelta(days=1)
        scheduler.schedule_many([(f"later-{i}", later, None) for i in range(3)])
        scheduler.start()
        wait_until(lambda: len(scheduler.list_failed_jobs()) == 1 and scheduler.count_jobs() == 3)
        assert ran.wait(5)
        wait_until(
            lambda: (
                value(registry, "clustersync_job_runs_total", type="recurring", outcome="error")
                == 1
            )
        )
        for job in jobs:
            assert job.close(timeout=5)

        # A store error is counted under its operation.
        faults = inject_faults(store)
        faults.fail({"count_jobs"})
        with pytest.raises(cs.StoreUnavailableError):
            scheduler.count_jobs()
        faults.restore()

        text = generate_latest(registry).decode()
        for name in (
            "clustersync_lock_acquisitions_total",
            "clustersync_lock_wait_seconds_bucket",
            "clustersync_lock_hold_seconds_bucket",
            "clustersync_lock_lost_total",
            "clustersync_job_runs_total",
            "clustersync_job_duration_seconds_bucket",
            "clustersync_job_lateness_seconds_bucket",
            "clustersync_jobs_pending",
            "clustersync_store_operation_seconds_bucket",
            "clustersync_store_errors_total",
        ):
            assert f"\n{name}" in text, name

        def locks(result: str) -> float:
            return value(
                registry, "clustersync_lock_acquisitions_total", kind="mutex", result=result
            )

        assert locks("acquired") == 2
        assert locks("timeout") == 2
        assert locks("cancelled") == 1
        assert locks("error") == 0
        assert value(registry, "clustersync_lock_wait_seconds_count", kind="mutex") == 2
        # the released hold (>= 50 ms) and the lost one
        assert value(registry, "clustersync_lock_hold_seconds_count", kind="mutex") == 2
        assert value(registry, "clustersync_lock_hold_seconds_sum", kind="mutex") >= 0.05
        assert value(registry, "clustersync_lock_lost_total", kind="mutex") == 1
        assert (
            value(registry, "clustersync_lock_acquisitions_total", kind="job", result="acquired")
            >= 2
        )

        def runs(job_type: str, outcome: str) -> float:
            return value(registry, "clustersync_job_runs_total", type=job_type, outcome=outcome)

        assert runs("recurring", "ok") == 1
        assert runs("recurring", "error") == 1
        assert runs("once", "ok") == 1
        assert runs("once", "retry") == 1
        assert runs("once", "error") == 1
        assert value(registry, "clustersync_job_duration_seconds_count", type="once") == 3
        assert value(registry, "clustersync_job_lateness_seconds_count", type="once") == 3
        assert value(registry, "clustersync_job_lateness_seconds_count", type="recurring") == 2
        assert value(registry, "clustersync_jobs_pending") == 3
        assert (
            value(registry, "clustersync_store_operation_seconds_count", operation="acquire_lease")
            >= 3
        )
        assert value(registry, "clustersync_store_errors_total", operation="count_jobs") == 1
        assert value(registry, "clustersync_store_errors_total", operation="acquire_lease") == 0
        # One-shot job keys never become labels; without name_labels no name does.
        assert "good" not in text
        assert "orders" not in text
        scheduler.stop()


def test_name_labels(store_url: str, namespace: str) -> None:
    registry = CollectorRegistry()
    cs.enable_metrics(registry, name_labels=True)
    try:
        with cs.open_store(store_url, namespace=namespace) as store:
            with cs.Mutex(store, "orders"):
                pass
            scheduler = cs.get_job_once_scheduler(store)
            scheduler.set_callback(lambda key, props: None)
            scheduler.schedule_once("invoice:42", datetime.now(UTC))
            scheduler.start()
            wait_until(lambda: scheduler.count_jobs() == 0)
            wait_until(
                lambda: (
                    value(
                        registry, "clustersync_job_runs_total", type="once", outcome="ok", name=""
                    )
                    == 1
                )
            )
            scheduler.stop()
        acquired = {"kind": "mutex", "result": "acquired", "name": "orders"}
        assert value(registry, "clustersync_lock_acquisitions_total", **acquired) == 1
        assert (
            value(registry, "clustersync_lock_hold_seconds_count", kind="mutex", name="orders") == 1
        )
        assert "invoice:42" not in generate_latest(registry).decode()
    finally:
        _metrics.disable_metrics()


def test_nothing_is_recorded_before_enable_metrics(store_url: str, namespace: str) -> None:
    assert _metrics.ACTIVE is None
    with cs.open_store(store_url, namespace=namespace) as store:
        with cs.Mutex(store, "before"):
            pass
        registry = CollectorRegistry()
        cs.enable_metrics(registry)
        try:
            acquired = {"kind": "mutex", "result": "acquired"}
            assert value(registry, "clustersync_lock_acquisitions_total", **acquired) == 0
            with cs.Mutex(store, "after"):  # a store opened before: recorded from now on
                pass
            assert value(registry, "clustersync_lock_acquisitions_total", **acquired) == 1
        finally:
            _metrics.disable_metrics()


def test_enable_metrics_arguments(registry: CollectorRegistry) -> None:
    cs.enable_metrics(registry)  # the same again: nothing happens
    with pytest.raises(cs.ConfigurationError, match="already enabled"):
        cs.enable_metrics(CollectorRegistry())
    with pytest.raises(cs.ConfigurationError, match="already enabled"):
        cs.enable_metrics(registry, name_labels=True)
    with pytest.raises(TypeError, match="CollectorRegistry"):
        cs.enable_metrics(object())
    with pytest.raises(TypeError, match="name_labels"):
        cs.enable_metrics(registry, name_labels=1)  # type: ignore[arg-type]


def test_enable_metrics_without_prometheus_client() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import clustersync\n"
        "try:\n"
        "    clustersync.enable_metrics()\n"
        "except clustersync.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'clustersync[prometheus]'" in result.stdout


def test_pending_jobs_of_an_asyncio_store(
    registry: CollectorRegistry, store_url: str, namespace: str
) -> None:
    """The gauge of an asyncio store is counted on its event loop: a scrape from the
    loop's own thread neither blocks nor deadlocks, and sees the count once made."""

    async def main() -> None:
        async with await acs.open_store(store_url, namespace=namespace) as store:
            scheduler = acs.get_job_once_scheduler(store)
            later = datetime.now(UTC) + timedelta(days=1)
            await scheduler.schedule_many([(f"k{i}", later, None) for i in range(4)])
            generate_latest(registry)  # asks the loop for a count
            deadline = time.monotonic() + 10
            while registry.get_sample_value("clustersync_jobs_pending") != 4:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
                generate_latest(registry)

    asyncio.run(main())
