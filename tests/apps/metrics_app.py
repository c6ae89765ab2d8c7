"""A WSGI app in Prometheus multi-process mode, as deployed under gunicorn: every
worker enables clustersync's metrics and opens its own store (no ``--preload``), and
``/metrics`` aggregates the samples of all workers with ``MultiProcessCollector``.
Configured by environment variables (``CLUSTERSYNC_URL``, ``APP_NAMESPACE``,
``PROMETHEUS_MULTIPROC_DIR``).

``GET /work`` takes and releases the mutex ``shared``, waits 50 ms (so that concurrent
requests spread over the workers) and answers the worker's pid.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

import clustersync

clustersync.enable_metrics()
store = clustersync.open_store(namespace=os.environ["APP_NAMESPACE"])
scheduler = clustersync.get_job_once_scheduler(store)
scheduler.set_callback(lambda key, props: None)
scheduler.start()

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [generate_latest(registry)]
    with clustersync.Mutex(store, "shared"):
        pass
    time.sleep(0.05)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
