"""Structured logs: every state change is one record under ``clustersync.`` whose facts
are ``extra`` fields (``event``, ``lock`` or ``job``, ``kind`` or ``type``, ``token``,
``identity``, ``attempt``, ``duration_s``, ``lateness_s``, ``error``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import clustersync as cs
from clustersync.testing import inject_faults


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[Any]:
    """The records of ``event`` (typed Any: their extra fields are attributes)."""
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def facts(record: logging.LogRecord, *names: str) -> dict[str, Any]:
    return {name: getattr(record, name) for name in names}


def test_every_event_carries_its_facts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="clustersync")
    with cs.open_store("memory://logs", identity="web-1") as store:
        faults = inject_faults(store)
        # lock.acquired, lock.released
        with cs.Mutex(store, "orders") as mutex:
            token = mutex.token
            time.sleep(0.02)
        (acquired,) = records(caplog, "lock.acquired")
        assert acquired.name == "clustersync.lease"
        assert acquired.levelno == logging.DEBUG
        assert facts(acquired, "lock", "kind", "token", "identity") == {
            "lock": "orders",
            "kind": "mutex",
            "token": token,
            "identity": "web-1",
        }
        assert acquired.duration_s >= 0
        (released,) = records(caplog, "lock.released")
        assert facts(released, "lock", "kind", "token", "identity") == facts(
            acquired, "lock", "kind", "token", "identity"
        )
        assert released.duration_s >= 0.02

        # lock.renewal_failed, then lock.lost
        lost = threading.Event()
        doomed = cs.Mutex(store, "doomed", ttl=0.6, on_lost=lost.set)
        doomed.acquire()
        faults.fail({"renew_lease"})
        assert lost.wait(5)
        faults.heal()
        renewal = records(caplog, "lock.renewal_failed")[0]
        assert renewal.levelno == logging.WARNING
        assert facts(renewal, "lock", "kind", "token", "identity") == {
            "lock": "doomed",
            "kind": "mutex",
            "token": doomed.token,
            "identity": "web-1",
        }
        assert "renew_lease" in renewal.error
        (lost_record,) = records(caplog, "lock.lost")
        assert lost_record.levelno == logging.ERROR
        assert facts(lost_record, "lock", "kind", "token") == {
            "lock": "doomed",
            "kind": "mutex",
            "token": doomed.token,
        }
        assert "could not be renewed" in lost_record.error
        assert lost_record.duration_s > 0

        # job.started, job.finished, job.failed (recurring)
        def broken() -> None:
            raise RuntimeError("report failed")

        hour = cs.wait_for_interval(timedelta(hours=1))
        ran = threading.Event()
        jobs = [
            cs.schedule(store, "report", hour, ran.set),
            cs.schedule(store, "bad", hour, broken),
        ]
        assert ran.wait(5)
        wait_until(lambda: bool(records(caplog, "job.failed")))
        started = {r.job: r for r in records(caplog, "job.started")}
        assert set(started) == {"report", "bad"}
        assert facts(started["report"], "type", "identity") == {
            "type": "recurring",
            "identity": "web-1",
        }
        assert started["report"].lateness_s >= 0
        assert isinstance(started["report"].token, int)
        wait_until(lambda: bool(records(caplog, "job.finished")))
        (finished,) = records(caplog, "job.finished")
        assert facts(finished, "job", "type") == {"job": "report", "type": "recurring"}
        assert finished.duration_s >= 0
        (failed,) = records(caplog, "job.failed")
        assert facts(failed, "job", "type", "error") == {
            "job": "bad",
            "type": "recurring",
            "error": "RuntimeError: report failed",
        }
        assert failed.levelno == logging.ERROR
        assert failed.exc_info is not None
        for job in jobs:
            assert job.close(timeout=5)
        caplog.clear()

        # job.fired, job.finished, job.retried, job.failed (one-shot)
        scheduler = cs.get_job_once_scheduler(
            store, retry=cs.Retry(attempts=2, backoff=timedelta(milliseconds=20))
        )

        def callback(key: str, props: Any) -> None:
            if key == "bad":
                raise ValueError("no such user")

        scheduler.set_callback(callback)
        now = datetime.now(UTC)
        scheduler.schedule_many([("good", now, None), ("bad", now, None)])
        scheduler.start()
        wait_until(lambda: len(scheduler.list_failed_jobs()) == 1 and not scheduler.count_jobs())
        fired = {(r.job, r.attempt) for r in records(caplog, "job.fired")}
        assert fired == {("good", 1), ("bad", 1), ("bad", 2)}
        for record in records(caplog, "job.fired"):
            assert facts(record, "type", "identity") == {"type": "once", "identity": "web-1"}
            assert record.lateness_s >= 0
        wait_until(lambda: bool(records(caplog, "job.finished")))
        (finished,) = records(caplog, "job.finished")
        assert facts(finished, "job", "type", "attempt") == {
            "job": "good",
            "type": "once",
            "attempt": 1,
        }
        (retried,) = records(caplog, "job.retried")
        assert retried.levelno == logging.WARNING
        assert facts(retried, "job", "type", "attempt", "error") == {
            "job": "bad",
            "type": "once",
            "attempt": 1,
            "error": "ValueError: no such user",
        }
        assert retried.retry_in_s > 0
        (failed,) = records(caplog, "job.failed")
        assert facts(failed, "job", "type", "attempt", "error") == {
            "job": "bad",
            "type": "once",
            "attempt": 2,
            "error": "ValueError: no such user",
        }
        caplog.clear()

        # store.error, store.recovered
        faults.fail({"claim_due_jobs"})
        scheduler.schedule_once("later", datetime.now(UTC), None)  # wakes the scheduler
        wait_until(lambda: bool(records(caplog, "store.error")))
        faults.heal()
        wait_until(lambda: bool(records(caplog, "store.recovered")))
        error = records(caplog, "store.error")[0]
        assert error.levelno == logging.WARNING
        assert error.identity == "web-1"
        assert "claim_due_jobs" in error.error
        (recovered,) = records(caplog, "store.recovered")
        assert recovered.levelno == logging.INFO
        assert recovered.identity == "web-1"
        scheduler.stop()
