"""A process traced with the OpenTelemetry SDK (in-memory exporter) that writes its
finished spans as JSON: ``python otel_worker.py schedule|run URL NAMESPACE OUT``.

- ``schedule``: inside a span ``web.request``, schedule the one-shot job ``email:1``
  (due now) and ``fails:1`` (raises on every attempt), then exit without running them;
- ``run``: start a scheduler whose callback opens a span ``send-email``, run a recurring
  job ``report`` once, wait on a held mutex (a ``clustersync.lock.wait`` span) and take
  a free one (no span), then exit.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import clustersync

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("app")


def schedule(store: clustersync.Store) -> None:
    scheduler = clustersync.get_job_once_scheduler(store)
    with tracer.start_as_current_span("web.request"):
        scheduler.schedule_once("email:1", datetime.now(UTC), {"to": "a@example.com"})
        scheduler.schedule_once("fails:1", datetime.now(UTC), None)


def run(store: clustersync.Store) -> None:
    done = threading.Event()
    retry = clustersync.Retry(attempts=2, backoff=timedelta(milliseconds=20))
    scheduler = clustersync.get_job_once_scheduler(store, retry=retry)

    def send_email(key: str, props: Any) -> None:
        with tracer.start_as_current_span("send-email"):
            time.sleep(0.01)

    def fails(key: str, props: Any) -> None:
        raise RuntimeError("smtp down")

    scheduler.set_callback(send_email, prefix="email:")
    scheduler.set_callback(fails, prefix="fails:")
    scheduler.start()
    job = clustersync.schedule(
        store, "report", clustersync.wait_for_interval(timedelta(hours=1)), done.set
    )
    deadline = time.monotonic() + 20
    while scheduler.count_jobs() or len(scheduler.list_failed_jobs()) != 1 or not done.is_set():
        if time.monotonic() > deadline:
            raise SystemExit("the jobs did not run")
        time.sleep(0.02)
    job.close()
    scheduler.stop()

    holder = clustersync.Mutex(store, "contended")
    holder.acquire()
    threading.Timer(0.3, holder.release).start()
    with clustersync.Mutex(store, "contended"):  # waits ~0.3 s
        pass
    with clustersync.Mutex(store, "free"):  # no wait, no span
        pass


def main() -> None:
    role, url, namespace, out = sys.argv[1:5]
    with clustersync.open_store(url, namespace=namespace) as store:
        {"schedule": schedule, "run": run}[role](store)
    spans = [
        {
            "name": span.name,
            "trace_id": span.context.trace_id,
            "span_id": span.context.span_id,
            "parent": span.parent.span_id if span.parent else None,
            "links": [[link.context.trace_id, link.context.span_id] for link in span.links],
            "attributes": dict(span.attributes or {}),
            "status": span.status.status_code.name,
            "events": [event.name for event in span.events],
            "duration_s": ((span.end_time or 0) - (span.start_time or 0)) / 1e9,
        }
        for span in exporter.get_finished_spans()
    ]
    with open(out, "w") as file:
        json.dump(spans, file)


if __name__ == "__main__":
    main()
