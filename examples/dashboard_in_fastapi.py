"""The clustersync dashboard inside a FastAPI service, under ``/ops``.

    pip install "clustersync[dashboard]" fastapi
    CLUSTERSYNC_URL=sqlite:///cluster.db uvicorn dashboard_in_fastapi:app --app-dir examples

then open http://127.0.0.1:8000/ops/. Each worker process opens its asyncio store in the
lifespan (an asyncio store belongs to the event loop that serves the app) and mounts the
dashboard on it there. The service itself runs a recurring job and one-shot reminders,
which the dashboard shows.

The dashboard has no login of its own: before passing ``allow_actions=True``, put
``/ops`` behind the service's authentication (here ``DASHBOARD_ACTIONS=1`` turns them on,
for a service that only listens on loopback).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request

from clustersync import aio
from clustersync.dashboard import create_app

logger = logging.getLogger("example")


async def refresh_cache() -> None:
    logger.info("cache refreshed")


async def send_reminder(key: str, props: Any) -> None:
    logger.info("reminder %s for %s", key, props)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    store = await aio.open_store(namespace=os.environ.get("CLUSTERSYNC_NAMESPACE", "default"))
    job = aio.schedule(
        store, "refresh-cache", aio.wait_for_interval(timedelta(minutes=5)), refresh_cache
    )
    scheduler = aio.get_job_once_scheduler(store)
    scheduler.set_callback(send_reminder)
    await scheduler.start()
    # Routes are looked up per request, so a mount added here serves from now on.
    app.mount(
        "/ops",
        create_app(store, allow_actions=os.environ.get("DASHBOARD_ACTIONS") == "1"),
        name="ops",
    )
    app.state.scheduler = scheduler
    try:
        yield
    finally:
        await job.close(timeout=30)
        await store.close()  # stops the scheduler too


app = FastAPI(lifespan=lifespan)


@app.post("/users/{user}/reminder")
async def remind(user: int, request: Request) -> dict[str, str]:
    run_at = datetime.now(UTC) + timedelta(hours=2)
    scheduler: aio.JobOnceScheduler = request.app.state.scheduler
    await scheduler.schedule_once(f"remind:{user}", run_at, {"user": user})
    return {"key": f"remind:{user}", "run_at": run_at.isoformat()}


@app.get("/")
async def home() -> dict[str, str]:
    return {"dashboard": "/ops/"}
