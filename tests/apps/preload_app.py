"""A WSGI app that opens its clustersync store at import, as a Django or Flask app
would: under ``gunicorn --preload`` that happens once in the master, before the workers
are forked. Configured by environment variables (``CLUSTERSYNC_URL``, ``APP_NAMESPACE``,
``APP_LOG``: a file where the one-shot callback appends ``<pid> <key>``).

``GET /hold?name=N&ttl=T&seconds=S`` holds the mutex ``N`` (ttl T) for S seconds in the
worker that serves it and answers ``held <token> <pid>`` if the lease was still live
at the end, else ``lost``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import clustersync

store = clustersync.open_store(namespace=os.environ["APP_NAMESPACE"])
# Used before the fork, as an app does at start-up: connections, the change feed and the
# renewer now exist in the master.
_warm = clustersync.Mutex(store, "warm-up")
_warm.acquire()
_warm.release()


def _record(key: str, props: Any) -> None:
    with open(os.environ["APP_LOG"], "a") as log:
        log.write(f"{os.getpid()} {key}\n")


scheduler = clustersync.get_job_once_scheduler(store)
scheduler.set_callback(_record)
scheduler.start()

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if environ.get("PATH_INFO") != "/hold":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"ok {os.getpid()}".encode()]
    mutex = clustersync.Mutex(store, query["name"], ttl=float(query["ttl"]))
    if not mutex.acquire(timeout=10):
        body = "busy"
    else:
        time.sleep(float(query["seconds"]))
        body = f"held {mutex.token} {os.getpid()}" if mutex.locked() else "lost"
        try:
            mutex.release()
        except clustersync.LockLostError:
            body = "lost"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
