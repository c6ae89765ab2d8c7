"""Regression tests of the bugs the reliability suite found (model test and fuzzing), one
per bug, deterministic and quick. Each docstring says what used to happen."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import clustersync as cs
from clustersync import aio
from clustersync.stores.contract import NewJob
from clustersync.testing.faults import inject_faults
from tests.conftest import selected_backends
from tests.servers import PostgresServer, RedisServer

HOUR = timedelta(hours=1)
FAR = datetime(9999, 1, 1, tzinfo=UTC)
#: Timeouts too long for threading's waits (``threading.TIMEOUT_MAX`` is ~292 years).
HUGE_TIMEOUTS = [1e300, math.inf, 10**400, threading.TIMEOUT_MAX]


def nested(levels: int) -> Any:
    value: Any = None
    for _ in range(levels):
        value = [value]
    return value


# -- timeouts of close() and stop() ---------------------------------------------------------


@pytest.mark.parametrize("timeout", HUGE_TIMEOUTS)
def test_job_close_and_scheduler_stop_accept_huge_timeouts(timeout: float) -> None:
    """Job.close(timeout=1e300) and JobOnceScheduler.stop(timeout=inf) raised OverflowError
    from threading (and stop() left the scheduler stuck as started)."""
    with cs.open_store("memory://") as store:
        job = cs.schedule(store, "k", cs.wait_for_interval(HOUR), lambda: None)
        assert job.close(timeout=timeout) is True
        scheduler = cs.get_job_once_scheduler(store)
        scheduler.set_callback(lambda key, props: None)
        scheduler.start()
        assert scheduler.stop(timeout=timeout) is True
        assert not scheduler.started
        scheduler.start()  # usable again
        assert scheduler.stop(timeout=timeout) is True


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(-1, ValueError), (math.nan, ValueError), (True, TypeError), ("5", TypeError)],
)
def test_job_close_and_scheduler_stop_reject_bad_timeouts(
    timeout: object, error: type[Exception]
) -> None:
    """close() and stop() accepted NaN (waiting no time) and negative timeouts, and "5"
    failed deep in threading; they validate like acquire() now, before changing anything."""
    with cs.open_store("memory://") as store:
        job = cs.schedule(store, "k", cs.wait_for_interval(HOUR), lambda: None)
        with pytest.raises(error):
            job.close(timeout=timeout)  # type: ignore[arg-type]
        assert job.close(timeout=10) is True
        scheduler = cs.get_job_once_scheduler(store)
        scheduler.set_callback(lambda key, props: None)
        scheduler.start()
        with pytest.raises(error):
            scheduler.stop(timeout=timeout)  # type: ignore[arg-type]
        assert scheduler.started
        assert scheduler.stop(timeout=10) is True


async def test_aio_close_and_stop_validate_timeouts() -> None:
    async with await aio.open_store("memory://") as store:
        job = aio.schedule(store, "k", aio.wait_for_interval(HOUR), lambda: None)
        with pytest.raises(ValueError):
            await job.close(timeout=-1)
        assert await job.close(timeout=math.inf) is True
        scheduler = aio.get_job_once_scheduler(store)
        scheduler.set_callback(lambda key, props: None)
        await scheduler.start()
        with pytest.raises(ValueError):
            await scheduler.stop(timeout=math.nan)
        assert await scheduler.stop(timeout=1e300) is True


# -- a ttl shorter than a round trip -------------------------------------------------------------


@pytest.mark.parametrize("ttl", [1e-9, 5e-324])
def test_acquiring_with_a_ttl_shorter_than_a_round_trip_does_not_spin(ttl: float) -> None:
    """Every answer comes after such a ttl, so the lease is given back and the acquisition
    retried — immediately, thousands of times a second, each logging a warning, for as
    long as the caller waits (forever without a timeout). Now it retries every 50 ms."""
    with cs.open_store("memory://") as store:
        faults = inject_faults(store)
        mutex = cs.Mutex(store, "tiny", ttl=ttl)
        assert mutex.acquire(timeout=0.5) is False
        assert faults.calls["acquire_lease"] <= 20
        assert store._ops.list_leases() == []


# -- recurring jobs with waits beyond what threading can sleep ---------------------------------


def test_recurring_job_waiting_centuries_sleeps_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """A job whose next run was more than ~292 years away failed every sleep with an
    OverflowError (sync API), logged as "next_wait failed" again and again."""
    ran = threading.Event()
    with cs.open_store("memory://") as store:
        job = cs.schedule(store, "rare", cs.wait_for_interval(timedelta(days=400 * 365)), ran.set)
        assert ran.wait(10)  # never ran: runs at once, then waits 400 years
        with caplog.at_level(logging.ERROR, logger="clustersync"):
            threading.Event().wait(0.3)
            assert job.close(timeout=10) is True
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_interval_helpers_do_not_overflow() -> None:
    """wait_for_rounded_interval(timedelta.max) raised OverflowError (a date after 9999),
    and wait_for_interval(timedelta.max) did when last_finished was ahead of now."""
    now = datetime(2030, 1, 1, tzinfo=UTC)
    rounded = cs.wait_for_rounded_interval(timedelta.max)
    assert rounded(now, cs.JobMetadata(now)) == timedelta.max
    plain = cs.wait_for_interval(timedelta.max)
    assert plain(now, cs.JobMetadata(now + HOUR)) == timedelta.max
    assert plain(now, cs.JobMetadata(now)) == timedelta.max


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"])
def test_cron_expression_that_never_matches_is_rejected(expression: str) -> None:
    """Well-formed expressions that never match were accepted; the job then logged a
    CroniterBadDateError on every attempt, forever."""
    with pytest.raises(ValueError, match="never matches"):
        cs.wait_for_cron(expression)
    cs.wait_for_cron("0 0 29 2 *")  # leap days do happen


# -- props ---------------------------------------------------------------------------------------


def test_props_nested_too_deeply_are_refused_before_storing() -> None:
    """Props nested hundreds of levels deep were stored, then list_scheduled_jobs() (and
    the scheduler's callback, and other processes) failed with RecursionError on any
    deeper call stack: one such job broke listing for the whole namespace."""
    with cs.open_store("memory://") as store:
        scheduler = cs.get_job_once_scheduler(store)
        with pytest.raises(TypeError, match="nested deeper than 100"):
            scheduler.schedule_once("deep", FAR, nested(500))
        with pytest.raises(TypeError):
            scheduler.schedule_many([("a", FAR, None), ("deep", FAR, {"k": nested(100)})])
        scheduler.schedule_once("ok", FAR, nested(100))
        depth = sys.getrecursionlimit() - 200

        def deep(levels: int) -> list[cs.JobOnceMetadata]:
            return deep(levels - 1) if levels else scheduler.list_scheduled_jobs()

        [job] = deep(depth)  # listing works near the bottom of a deep stack
        assert job.props == nested(100)


# -- URLs and options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://\ud800",
        "postgresql://\ud800",
        "sqlite:///\ud800.db",
        "sqlite:///\x00.db",
        "memory://\x00",
        "postgresql://u:p@127.0.0.1:1/\x00",
    ],
)
def test_urls_with_nul_or_lone_surrogates_are_configuration_errors(url: str) -> None:
    """Redis and PostgreSQL URLs with a lone surrogate raised UnicodeError, SQLite ones a
    bare ValueError("embedded null byte")."""
    with pytest.raises(cs.ConfigurationError):
        cs.open_store(url)


SERVERS = [b for b in selected_backends() if b in ("redis", "postgres")]


@pytest.fixture(params=SERVERS)
def server_url(request: pytest.FixtureRequest) -> str:
    server: RedisServer | PostgresServer = request.getfixturevalue(f"{request.param}_server")
    return server.url


@pytest.mark.parametrize("name", ["connect_timeout", "socket_timeout"])
@pytest.mark.parametrize("value", [math.inf, 1e300, 10**400, math.nan, 0, -1, True, "x", None])
def test_server_store_timeouts_are_configuration_errors(
    server_url: str, name: str, value: object
) -> None:
    """Infinite or huge timeouts raised OverflowError from the drivers, NaN and strings
    obscure ValueErrors or TypeErrors."""
    with pytest.raises(cs.ConfigurationError, match=name):
        cs.open_store(server_url, **{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, 1.5, math.inf, "4", True])
def test_server_store_max_connections_must_be_a_positive_int(
    server_url: str, value: object
) -> None:
    with pytest.raises(cs.ConfigurationError, match="max_connections"):
        cs.open_store(server_url, max_connections=value)


@pytest.mark.parametrize(
    "query",
    [
        "?foo=bar",
        "?socket_timeout=1e400",
        "?socket_timeout=-1",
        "?health_check_interval=1e400",
        "?protocol=9",
    ],
)
def test_redis_url_query_options_are_checked(redis_server: RedisServer, query: str) -> None:
    """An unknown query option raised redis-py's TypeError ("unexpected keyword argument")
    on connecting, a huge timeout an OverflowError."""
    with pytest.raises(cs.ConfigurationError):
        cs.open_store(redis_server.url + query)


# -- Redis namespaces ----------------------------------------------------------------------------


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    if "redis" not in selected_backends():
        pytest.skip("redis not in CLUSTERSYNC_TEST_BACKENDS")
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.mark.parametrize("special", ["\\", "[", "]", "*", "?", "}", "%"])
def test_redis_lists_leases_of_namespaces_with_glob_characters(
    redis_url: str, namespace: str, special: str
) -> None:
    """list_leases() of a namespace containing a backslash found nothing: the SCAN
    pattern escaped [, ? and * but not the escape character itself."""
    with cs.open_store(redis_url, namespace=f"{namespace}a{special}b") as store:
        mutex = cs.Mutex(store, "m")
        assert mutex.acquire(blocking=False)
        assert [lease.name for lease in store._ops.list_leases()] == ["m:m"]
        mutex.release()


def test_redis_namespaces_never_share_keys(redis_url: str, namespace: str) -> None:
    """Keys were "cs:{" + namespace + "}:" + rest, so namespace N with mutex "q}:l:m:q"
    and namespace "N}:l:m:q" with mutex "q" used the same key: each blocked the other."""
    with (
        cs.open_store(redis_url, namespace=namespace) as first,
        cs.open_store(redis_url, namespace=namespace + "}:l:m:q") as second,
    ):
        one = cs.Mutex(first, "q}:l:m:q")
        two = cs.Mutex(second, "q")
        assert one.acquire(blocking=False)
        assert two.acquire(blocking=False), "two namespaces shared a lease"
        assert [lease.name for lease in first._ops.list_leases()] == ["m:q}:l:m:q"]
        assert [lease.name for lease in second._ops.list_leases()] == ["m:q"]
        one.release()
        two.release()


# -- claim order ---------------------------------------------------------------------------------


@pytest.fixture
def store(store_url: str, namespace: str) -> Iterator[cs.Store]:
    with cs.open_store(store_url, namespace=namespace) as opened:
        yield opened


def test_jobs_due_at_the_same_time_are_claimed_in_key_order(store: cs.Store) -> None:
    """PostgreSQL claimed jobs with equal due times in table order, not by key as the
    memory reference (and SQLite, Redis) do: found by the model test when two claims
    made in one call expired together."""
    past = store._ops.now_us() - 10_000_000
    store._ops.put_jobs([NewJob(key, past, "null") for key in ("k3", "k1", "k4", "k2")])
    assert [c.key for c in store._ops.claim_due_jobs("o", 1, 60.0)] == ["k1"]
    assert sorted(c.key for c in store._ops.claim_due_jobs("o", 2, 60.0)) == ["k2", "k3"]
    assert [c.key for c in store._ops.claim_due_jobs("o", 5, 60.0)] == ["k4"]


def test_aio_store_claims_in_key_order_too(store_url: str, namespace: str) -> None:
    async def main() -> list[str]:
        async with await aio.open_store(store_url, namespace=namespace) as store:
            past = await store._ops.now_us() - 10_000_000
            await store._ops.put_jobs([NewJob(k, past, "null") for k in ("b", "c", "a")])
            return [c.key for c in await store._ops.claim_due_jobs("o", 1, 60.0)]

    assert asyncio.run(main()) == ["a"]
