"""PostgreSQL with ``wakeups="poll"`` behind a transaction-pooling PgBouncer: no LISTEN
(PgBouncer drops or misroutes notifications, see ``tests/test_topologies.py``), so a
waiter learns of changes made through other store objects by polling — lock waiters
every ``LOCK_POLL`` (50 ms), schedulers and recurring jobs every ``CHANGE_POLL``
(0.5 s). The figures are printed (``pytest -s``) and quoted in docs/guide/stores.md.
The conformance and contract suites run on the ``postgres-pgbouncer`` target."""

from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

import clustersync as cs
from clustersync.stores.postgres.aio import CHANGE_POLL, LOCK_POLL
from tests.servers import PgBouncerServer, PostgresServer
from tests.test_server_failures import handoff_latency, wait_until

#: Rounds measured per figure.
ROUNDS = 8


def poll_url(bouncer: PgBouncerServer) -> str:
    return bouncer.url + "?wakeups=poll&prepared_statements=false"


def new_namespace() -> str:
    return f"poll-{uuid.uuid4().hex[:10]}"


def figures(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


def test_poll_mode_opens_no_listen_connection(
    pgbouncer: PgBouncerServer, postgres_server: PostgresServer
) -> None:
    namespace = new_namespace()
    with cs.open_store(poll_url(pgbouncer), namespace=namespace) as store:
        backend: Any = store._ops
        assert backend.wakeups == "poll"
        assert backend._feed is None
        with cs.Mutex(store, "m"):
            pass
        with postgres_server.socket_connect() as admin:
            listening = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%'"
                " AND datname = %s AND query LIKE %s",
                (postgres_server.dbname, f"%{backend._channel}%"),
            ).fetchone()
        assert listening == (0,)


def test_a_release_elsewhere_wakes_a_waiter_within_the_lock_poll(
    pgbouncer: PgBouncerServer,
) -> None:
    """Handoff between two store objects (as between two processes): the waiter's poller
    sees the lease free within ``LOCK_POLL``. Without polling, the waiter would only
    retry at its 2 s fallback (1.3 s after the release in ``handoff_latency``)."""
    namespace = new_namespace()
    url = poll_url(pgbouncer)
    with (
        cs.open_store(url, namespace=namespace) as holder,
        cs.open_store(url, namespace=namespace) as waiter,
    ):
        latencies = [handoff_latency(holder, waiter, "handoff") for _ in range(ROUNDS)]
    print(f"\n[pgbouncer, wakeups=poll] lock handoff: {figures(latencies)}")
    assert statistics.median(latencies) < LOCK_POLL + 0.15, latencies
    assert max(latencies) < 1.0, latencies


def test_a_job_scheduled_elsewhere_fires_within_the_change_poll(
    pgbouncer: PgBouncerServer,
) -> None:
    """A scheduler with nothing due sleeps up to 5 s; a job another store object adds,
    due at once, reaches it through its poller (every ``CHANGE_POLL``): late by up to
    that (the polls' phase is random: the gaps between jobs are)."""
    namespace = new_namespace()
    url = poll_url(pgbouncer)
    fired: dict[str, float] = {}
    done = threading.Event()

    def callback(key: str, props: Any) -> None:
        fired[key] = time.time()
        if len(fired) == ROUNDS:
            done.set()

    lateness = []
    with (
        cs.open_store(url, namespace=namespace) as running,
        cs.open_store(url, namespace=namespace) as scheduling,
    ):
        scheduler = cs.get_job_once_scheduler(running)
        scheduler.set_callback(callback)
        scheduler.start()
        other = cs.get_job_once_scheduler(scheduling)
        rng = random.Random(7)
        for i in range(ROUNDS):
            time.sleep(rng.uniform(0.2, 0.7))  # the scheduler is idle: asleep for up to 5 s
            run_at = datetime.now(UTC)
            key = f"job-{i}"
            other.schedule_once(key, run_at)
            wait_until(partial(fired.__contains__, key), f"{key} fired", 10)
            lateness.append(fired[key] - run_at.timestamp())
        scheduler.stop()
    print(f"\n[pgbouncer, wakeups=poll] lateness of a job scheduled elsewhere: {figures(lateness)}")
    assert min(lateness) >= -0.01, "fired early"
    assert max(lateness) < CHANGE_POLL + 1.0, lateness


def test_a_trigger_elsewhere_reaches_an_idle_recurring_job_within_the_change_poll(
    pgbouncer: PgBouncerServer,
) -> None:
    """A recurring job that ran and waits an hour hears of a trigger made through another
    store object at its instance's next poll (without it: at its 10 s heartbeat)."""
    namespace = new_namespace()
    url = poll_url(pgbouncer)
    runs: list[float] = []
    with (
        cs.open_store(url, namespace=namespace) as running,
        cs.open_store(url, namespace=namespace) as operator,
    ):
        job = cs.schedule(
            running, "hourly", cs.wait_for_interval(timedelta(hours=1)), lambda: runs.append(0)
        )
        try:
            wait_until(lambda: len(runs) == 1, "the first run", 10)
            time.sleep(0.2)
            began = time.monotonic()
            cs.trigger_recurring_job(operator, "hourly")
            took = wait_until(lambda: len(runs) == 2, "the triggered run", 10)
        finally:
            job.close()
    print(f"\n[pgbouncer, wakeups=poll] trigger to run: {took * 1000:.0f} ms")
    assert took < CHANGE_POLL + 1.0
    assert time.monotonic() - began < 10


@pytest.mark.parametrize("wakeups", ["listen", "poll"])
def test_poll_mode_works_without_pgbouncer_too(
    postgres_server: PostgresServer, wakeups: str
) -> None:
    """``wakeups`` is a store option as well as a URL parameter, on any server."""
    namespace = new_namespace()
    with (
        cs.open_store(postgres_server.url, namespace=namespace, wakeups=wakeups) as a,
        cs.open_store(postgres_server.url, namespace=namespace, wakeups=wakeups) as b,
    ):
        assert handoff_latency(a, b, f"direct-{wakeups}") < 1.0
