"""FastAPI + clustersync: background work that runs once per cluster, not once per worker.

Every worker process of ``uvicorn --workers 4`` or ``gunicorn -w 4`` runs the lifespan
below, so anything started there runs four times -- unless it goes through clustersync:

- the recurring job ``purge-expired-sessions`` is started in every worker, and runs on one
  of them at a time, about once per ``CLEANUP_INTERVAL_SECONDS`` for the whole service;
- ``POST /reminders`` stores a one-shot job that fires once, at its time, on whichever
  worker is alive then (also after restarts); ``DELETE /reminders/{key}`` cancels it.

Run it from the ``examples`` folder::

    uvicorn fastapi_app.main:app --workers 4
    gunicorn -k uvicorn_worker.UvicornWorker -w 4 fastapi_app.main:app

    curl -X POST localhost:8000/reminders -H 'Content-Type: application/json' \\
         -d '{"key": "remind:42", "at": "2030-01-31T09:00:00Z", "props": {"user": 42}}'
    curl -X DELETE localhost:8000/reminders/remind:42

Environment:

- ``CLUSTERSYNC_URL`` -- the store every worker shares (default
  ``sqlite:///clustersync.db``: the workers of one host; use ``redis://...`` or
  ``postgresql://...`` when the service runs on several hosts) and
  ``CLUSTERSYNC_NAMESPACE`` (default ``fastapi-example``);
- ``CLEANUP_INTERVAL_SECONDS`` -- the recurring job's interval (default 300);
- ``CLEANUP_WORK_SECONDS`` -- how long the stand-in for the job's work sleeps (default 0);
- ``EVENT_LOG`` -- a file where every worker appends one JSON line per event (worker
  started, job run, reminder fired); the tests read it. Unset: events are only logged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from pydantic import AwareDatetime, BaseModel, Field

from clustersync import aio

NAMESPACE = os.environ.get("CLUSTERSYNC_NAMESPACE", "fastapi-example")
CLEANUP_INTERVAL = timedelta(seconds=float(os.environ.get("CLEANUP_INTERVAL_SECONDS", "300")))
CLEANUP_WORK_SECONDS = float(os.environ.get("CLEANUP_WORK_SECONDS", "0"))
EVENT_LOG = os.environ.get("EVENT_LOG")

log = logging.getLogger("fastapi_app")


def record(event: str, **fields: Any) -> None:
    """Log an event, and append it to ``EVENT_LOG`` as one JSON line if set."""
    line = json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields})
    log.info(line)
    if EVENT_LOG:
        with open(EVENT_LOG, "a", encoding="utf-8") as events:
            events.write(line + "\n")


# -- the background work ---------------------------------------------------------------


def purge_expired_sessions() -> None:
    """The recurring job. A plain function: ``clustersync.aio`` runs it in a worker thread,
    so it may block (database calls, HTTP requests) while the event loop keeps serving."""
    record("cleanup-start")
    time.sleep(CLEANUP_WORK_SECONDS)  # stands for the real work: DELETE FROM sessions ...
    record("cleanup-end")


async def send_reminder(key: str, props: Any) -> None:
    """The one-shot callback. A coroutine function runs on the event loop: await, never
    block. It runs once per reminder -- again only if its worker died while running it."""
    record("reminder", key=key, props=props)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Every worker runs this after the fork: one store per process (an asyncio store
    # cannot cross a fork), every worker on the same store and namespace.
    store = await aio.open_store(namespace=NAMESPACE)  # CLUSTERSYNC_URL
    try:
        aio.schedule(
            store,
            "purge-expired-sessions",
            aio.wait_for_interval(CLEANUP_INTERVAL),
            purge_expired_sessions,
        )
        scheduler = aio.get_job_once_scheduler(store)
        scheduler.set_callback(send_reminder)
        await scheduler.start()
        app.state.scheduler = scheduler
        record("worker-started")
        yield
    finally:
        # Stops the job and the scheduler here (a running callback finishes first); the
        # other workers carry on.
        await store.close()


app = FastAPI(title="clustersync FastAPI example", lifespan=lifespan)


def get_scheduler(request: Request) -> aio.JobOnceScheduler:
    scheduler: aio.JobOnceScheduler = request.app.state.scheduler
    return scheduler


Scheduler = Annotated[aio.JobOnceScheduler, Depends(get_scheduler)]


# -- the API -----------------------------------------------------------------------------


class Reminder(BaseModel):
    key: str = Field(min_length=1, max_length=255, examples=["remind:42"])
    at: AwareDatetime
    props: dict[str, Any] = Field(default_factory=dict)


@app.post("/reminders", status_code=status.HTTP_201_CREATED)
async def create_reminder(reminder: Reminder, scheduler: Scheduler) -> Reminder:
    """Store a reminder that fires once at ``at`` (at once if ``at`` has passed)."""
    try:
        job = await scheduler.schedule_once(reminder.key, reminder.at, reminder.props)
    except aio.DuplicateJobError:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{reminder.key!r} is pending") from None
    except ValueError as exc:  # e.g. props larger than the scheduler accepts
        raise HTTPException(422, str(exc)) from None
    return Reminder(key=job.key, at=job.run_at, props=job.props)


@app.get("/reminders")
async def list_reminders(scheduler: Scheduler) -> list[Reminder]:
    """The pending reminders, soonest first."""
    return [
        Reminder(key=job.key, at=job.run_at, props=job.props)
        for job in await scheduler.list_scheduled_jobs()
    ]


@app.delete("/reminders/{key}", status_code=status.HTTP_204_NO_CONTENT)
async def cancel_reminder(key: str, scheduler: Scheduler) -> Response:
    """Cancel a pending reminder; 404 if none is pending (fired, firing or unknown)."""
    if not await scheduler.cancel(key):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no pending reminder {key!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@app.get("/health")
async def health() -> dict[str, Any]:
    return {"status": "ok", "pid": os.getpid()}
