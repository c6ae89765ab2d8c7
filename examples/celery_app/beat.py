"""A replacement for ``celery beat``: the schedule runs in every worker process, and
clustersync makes each period enqueue its task once for the whole cluster.

``celery beat`` must run as exactly one process: none, and no periodic task is sent; two,
and every task is sent twice. Here every worker process starts a clustersync recurring
job per entry of ``SCHEDULE``; the job runs on one process at a time and its schedule is
shared, so each period is enqueued once while any worker is alive.

The jobs start on ``worker_process_init``, in each pool process after it was forked (with
``--pool solo``, in the worker itself): a store must be opened after a fork, and the main
process of a prefork worker forks a new pool process whenever one is replaced
(``--max-tasks-per-child``, a crash, a time limit). Jobs started in the main process
(``worker_ready``) would be copied into each of them, in the middle of whatever they were
doing. ``worker_process_shutdown`` closes the store, which lets another process take over
at once.

Environment: ``CLUSTERSYNC_URL`` (every worker, on every host, must use the same store:
SQLite for the workers of one host, Redis or PostgreSQL across hosts),
``DIGEST_PERIOD_SECONDS`` (default 3600).
"""

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

import clustersync

from .celery import app
from .tasks import record

NAMESPACE = os.environ.get("CLUSTERSYNC_NAMESPACE", "celery-example")
DIGEST_PERIOD = timedelta(seconds=float(os.environ.get("DIGEST_PERIOD_SECONDS", "3600")))

log = logging.getLogger(__name__)
SEND_ATTEMPTS = 5

#: key -> (period, task name), like celery beat's ``beat_schedule``: each task is sent at
#: every multiple of its period (UTC), with the start of the period as argument. (For
#: calendar times, schedule with ``clustersync.wait_for_cron("0 2 * * *")`` instead.)
SCHEDULE: dict[str, tuple[timedelta, str]] = {
    "send-digest": (DIGEST_PERIOD, "celery_app.tasks.send_digest"),
}


def enqueuer(key: str, task: str, period: timedelta) -> Callable[[], None]:
    """The job's callback: enqueue ``task`` with the start of the current period."""

    def enqueue() -> None:
        now = datetime.now(UTC).timestamp()
        start = datetime.fromtimestamp(now - now % period.total_seconds(), UTC).isoformat()
        # A callback that raises still counts as the period's run: retry a failed send
        # here (the broker restarting, a SQLite broker busy), or the period is skipped.
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                app.send_task(task, kwargs={"period": start})
                break
            except Exception as exc:
                if attempt == SEND_ATTEMPTS:
                    raise
                log.warning("%s: sending %s failed (%r), retrying", key, task, exc)
                time.sleep(0.1 * 2**attempt)
        record("enqueued", key=key, period=start)

    return enqueue


class Beat:
    """The store and jobs of this process."""

    store: clustersync.Store | None = None

    @classmethod
    def start(cls) -> None:
        cls.store = store = clustersync.open_store(namespace=NAMESPACE)  # CLUSTERSYNC_URL
        for key, (period, task) in SCHEDULE.items():
            every = clustersync.wait_for_rounded_interval(period)
            clustersync.schedule(store, key, every, enqueuer(key, task, period))
        record("beat-started")

    @classmethod
    def stop(cls) -> None:
        if cls.store is not None:
            cls.store.close()  # waits for a running enqueue, releases the job's lease


@worker_process_init.connect
def start_beat(**kwargs: Any) -> None:
    Beat.start()


@worker_process_shutdown.connect
def stop_beat(**kwargs: Any) -> None:
    Beat.stop()
