"""The project's background work: a recurring job and the one-shot reminders.

``start()`` runs in every serving process; clustersync makes the recurring job run on one
process at a time, about once per ``CLEANUP_INTERVAL`` for the whole project, and each
reminder fire once.
"""

import functools
import json
import logging
import os
import time
from collections.abc import Callable
from functools import wraps
from importlib import import_module
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import close_old_connections

import clustersync
from clustersync.contrib.django import get_store

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)


def record(event: str, **fields: Any) -> None:
    """Log an event, and append it to ``settings.EVENT_LOG`` as one JSON line if set."""
    line = json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields})
    log.info(line)
    if settings.EVENT_LOG:
        with open(settings.EVENT_LOG, "a", encoding="utf-8") as events:
            events.write(line + "\n")


def uses_database(callback: Callable[P, R]) -> Callable[P, R]:
    """Callbacks run in background threads, outside Django's request cycle: close stale
    or expired database connections before and after each run, as Django does around
    every request."""

    @wraps(callback)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return callback(*args, **kwargs)
        finally:
            close_old_connections()

    return run


@uses_database
def clear_expired_sessions() -> None:
    """What ``manage.py clearsessions`` does, once per interval for the whole project."""
    record("cleanup-start")
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()
    record("cleanup-end")


@uses_database
def send_reminder(key: str, props: Any) -> None:
    """The one-shot callback (in a real project: send_mail(...))."""
    record("reminder", key=key, props=props)


@functools.cache  # once per process
def start() -> None:
    """Start the background work of this process."""
    store = get_store()
    clustersync.schedule(
        store,
        "clear-expired-sessions",
        clustersync.wait_for_interval(settings.CLEANUP_INTERVAL),
        clear_expired_sessions,
    )
    scheduler = clustersync.get_job_once_scheduler(store)
    scheduler.set_callback(send_reminder)
    scheduler.start()
    record("background-started")
