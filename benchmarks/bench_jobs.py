"""Job scenarios of ``benchmarks/run.py`` (scenarios 6 and 7): one-shot jobs on
3 scheduler processes, and a recurring job on 3 instances, for clustersync and the peers.

Every implementation is driven through the same small async interface (``JobDriver``):
open, schedule one job, schedule a batch, run a scheduler until told to stop. Each
scheduler process reports every firing as ``(key, time.time(), time.monotonic(),
scheduler index)`` on a shared queue; the producer process (an instance that schedules
but does not run a scheduler, so every job fires on *another* instance) reports what it
scheduled and when.

Peers (PostgreSQL only: neither has a Redis job store):

- APScheduler 4 (pre-release): ``AsyncScheduler`` with ``SQLAlchemyDataStore``
  (``postgresql+psycopg``) and ``PsycopgEventBroker`` (LISTEN/NOTIFY); a one-shot job is
  a schedule with a ``DateTrigger``; each of the 3 processes has the default role (both
  scheduler and worker). No batch API.
- procrastinate: ``PsycopgConnector``; a one-shot job is a task deferred with
  ``schedule_at``; 3 workers with the default ``fetch_job_polling_interval`` (5 s) and
  ``listen_notify=True``. Batch API: ``batch_defer_async``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any, Protocol

import clustersync

#: The firing queue of this process (set by the process entry points).
EVENTS: Any = None
INDEX = -1
#: Recurring job overlap check: shared [inside, overlaps].
SHARED: Any = None

FAR_FUTURE = timedelta(days=365)


def record_fire(key: str) -> None:
    EVENTS.put((key, time.time(), time.monotonic(), INDEX))


@dataclass(frozen=True)
class JobSpec:
    """One implementation of the job scenarios (picklable)."""

    id: str
    label: str
    store: str  # redis | postgres | sqlite
    kind: str  # clustersync | apscheduler | procrastinate
    url: str
    namespace: str = "bench"


class NotSupported(Exception):
    """The implementation has no such feature (e.g. no batch API)."""


class JobDriver(Protocol):
    async def open(self, *, create_schema: bool) -> None: ...

    async def close(self) -> None: ...

    async def schedule_one(self, key: str, run_at: datetime) -> None: ...

    async def schedule_batch(self, items: Sequence[tuple[str, datetime]]) -> None: ...

    async def run_scheduler(self, stop: asyncio.Event) -> None: ...

    async def run_recurring(self, key: str, interval: float, stop: asyncio.Event) -> None: ...


# -- clustersync (threading API, as most users would run it) ------------------------------


class CsDriver:
    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.store: clustersync.Store | None = None

    async def open(self, *, create_schema: bool) -> None:
        self.store = clustersync.open_store(self.spec.url, namespace=self.spec.namespace)
        self.scheduler = clustersync.get_job_once_scheduler(self.store)

    async def close(self) -> None:
        if self.store is not None:
            self.store.close()

    async def schedule_one(self, key: str, run_at: datetime) -> None:
        self.scheduler.schedule_once(key, run_at)

    async def schedule_batch(self, items: Sequence[tuple[str, datetime]]) -> None:
        self.scheduler.schedule_many([(key, when, None) for key, when in items])

    async def run_scheduler(self, stop: asyncio.Event) -> None:
        self.scheduler.set_callback(lambda key, props: record_fire(key))
        self.scheduler.start()
        try:
            await stop.wait()
        finally:
            self.scheduler.stop()

    async def run_recurring(self, key: str, interval: float, stop: asyncio.Event) -> None:
        assert self.store is not None
        job = clustersync.schedule(
            self.store,
            key,
            clustersync.wait_for_rounded_interval(timedelta(seconds=interval)),
            lambda: recurring_tick(key),
        )
        try:
            await stop.wait()
        finally:
            job.close()


def recurring_tick(key: str) -> None:
    """A recurring run: report it, and check that no other instance runs at once."""
    if SHARED is not None:
        if SHARED[0] != 0:
            SHARED[1] += 1
        SHARED[0] = INDEX + 1
    record_fire(key)
    time.sleep(0.005)  # a short critical section, so that overlaps could show
    if SHARED is not None:
        if SHARED[0] != INDEX + 1:
            SHARED[1] += 1
        SHARED[0] = 0


# -- APScheduler 4 ---------------------------------------------------------------------


async def aps_fired(key: str) -> None:
    record_fire(key)


async def aps_tick(key: str) -> None:
    recurring_tick(key)


class ApsDriver:
    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.stack = contextlib.AsyncExitStack()
        self.scheduler: Any = None

    async def open(self, *, create_schema: bool) -> None:
        from apscheduler import AsyncScheduler
        from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
        from apscheduler.eventbrokers.psycopg import PsycopgEventBroker
        from sqlalchemy.ext.asyncio import create_async_engine

        sqla_url = self.spec.url.replace("postgresql://", "postgresql+psycopg://", 1)
        engine = create_async_engine(sqla_url)
        data_store = SQLAlchemyDataStore(engine, schema=None)
        broker = PsycopgEventBroker(self.spec.url)
        self.scheduler = await self.stack.enter_async_context(
            AsyncScheduler(data_store, broker, identity=f"bench-{os.getpid()}")
        )
        if create_schema:
            await self.scheduler.configure_task("fired", func=aps_fired)

    async def close(self) -> None:
        await self.stack.aclose()

    async def schedule_one(self, key: str, run_at: datetime) -> None:
        from apscheduler.triggers.date import DateTrigger

        await self.scheduler.add_schedule("fired", DateTrigger(run_at), id=key, kwargs={"key": key})

    async def schedule_batch(self, items: Sequence[tuple[str, datetime]]) -> None:
        raise NotSupported("APScheduler 4 has no batch API for schedules")

    async def run_scheduler(self, stop: asyncio.Event) -> None:
        await self.scheduler.configure_task("fired", func=aps_fired)
        await self.scheduler.start_in_background()
        await stop.wait()
        await self.scheduler.stop()

    async def run_recurring(self, key: str, interval: float, stop: asyncio.Event) -> None:
        from apscheduler import ConflictPolicy
        from apscheduler.triggers.interval import IntervalTrigger

        await self.scheduler.configure_task("tick", func=aps_tick)
        # Aligned to whole multiples of the interval, like wait_for_rounded_interval.
        now = time.time()
        start = datetime.fromtimestamp((now // interval + 1) * interval, UTC)
        await self.scheduler.add_schedule(
            "tick",
            IntervalTrigger(seconds=interval, start_time=start),
            id=key,
            kwargs={"key": key},
            conflict_policy=ConflictPolicy.do_nothing,
        )
        await self.scheduler.start_in_background()
        await stop.wait()
        await self.scheduler.stop()


# -- procrastinate -----------------------------------------------------------------------


class ProcrastinateDriver:
    def __init__(self, spec: JobSpec) -> None:
        import procrastinate

        self.spec = spec
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=spec.url),
        )

        async def fired(key: str) -> None:
            record_fire(key)

        self.task: Any = self.app.task(name="bench_fired", queue="bench")(fired)
        self.opened: Any = None

    async def open(self, *, create_schema: bool) -> None:
        self.opened = self.app.open_async()
        await self.opened.__aenter__()
        if create_schema:
            with contextlib.suppress(Exception):  # already applied
                await self.app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        if self.opened is not None:
            await self.opened.__aexit__(None, None, None)

    async def schedule_one(self, key: str, run_at: datetime) -> None:
        await self.task.configure(schedule_at=run_at).defer_async(key=key)

    async def schedule_batch(self, items: Sequence[tuple[str, datetime]]) -> None:
        # One schedule_at per batch call: group the items by run time.
        groups: dict[datetime, list[dict[str, Any]]] = {}
        for key, when in items:
            groups.setdefault(when, []).append({"key": key})
        for when, kwargs in groups.items():
            await self.task.configure(schedule_at=when).batch_defer_async(*kwargs)

    async def run_scheduler(self, stop: asyncio.Event) -> None:
        worker = asyncio.create_task(
            self.app.run_worker_async(
                queues=["bench"],
                wait=True,
                install_signal_handlers=False,
                delete_jobs="always",
                concurrency=16,
            )
        )
        await stop.wait()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(worker, 10)

    async def run_recurring(self, key: str, interval: float, stop: asyncio.Event) -> None:
        if interval != 1.0:
            raise NotSupported("procrastinate periodic tasks take a cron: whole seconds only")

        # A 6-field cron (croniter: seconds last): every second; each worker defers the
        # periodic job, the database keeps one per tick (periodic_id), one worker runs it.
        async def tick(timestamp: int) -> None:
            recurring_tick(key)

        task = self.app.task(name="bench_tick", queue="bench")(tick)
        self.app.periodic(cron="* * * * * *", periodic_id=key)(task)

        await self.run_scheduler(stop)


DRIVERS: dict[str, Callable[[JobSpec], JobDriver]] = {
    "clustersync": CsDriver,
    "apscheduler": ApsDriver,
    "procrastinate": ProcrastinateDriver,
}


def make_driver(spec: JobSpec) -> JobDriver:
    return DRIVERS[spec.kind](spec)


# -- processes -----------------------------------------------------------------------------


async def _wait_for_stop(ctl: Connection, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ctl.recv)
    stop.set()


def scheduler_process(
    spec: JobSpec, index: int, events: Any, ctl: Connection, recurring: tuple[str, float] | None
) -> None:
    """A scheduler instance: fires jobs (or runs the recurring job) until told to stop."""
    global EVENTS, INDEX
    EVENTS, INDEX = events, index

    async def main() -> None:
        driver = make_driver(spec)
        await driver.open(create_schema=False)
        stop = asyncio.Event()
        waiter = asyncio.create_task(_wait_for_stop(ctl, stop))
        try:
            ctl.send("started")
            if recurring is None:
                await driver.run_scheduler(stop)
            else:
                await driver.run_recurring(recurring[0], recurring[1], stop)
        finally:
            waiter.cancel()
            await driver.close()

    asyncio.run(main())
    ctl.send("stopped")


def recurring_process(
    spec: JobSpec, index: int, events: Any, shared: Any, key: str, interval: float, ctl: Connection
) -> None:
    global SHARED  # noqa: PLW0603 - per-process state of a worker
    SHARED = shared
    scheduler_process(spec, index, events, ctl, (key, interval))


def producer_process(spec: JobSpec, ctl: Connection) -> None:
    """The instance that schedules: runs the commands ``ctl`` sends, answers each."""

    async def main() -> None:
        driver = make_driver(spec)
        await driver.open(create_schema=True)
        loop = asyncio.get_running_loop()
        try:
            ctl.send("ready")
            while True:
                command, *args = await loop.run_in_executor(None, ctl.recv)
                if command == "quit":
                    return
                try:
                    result: Any = await PRODUCER_COMMANDS[command](driver, *args)
                except NotSupported as exc:
                    result = {"unsupported": str(exc)}
                ctl.send(result)
        finally:
            await driver.close()

    asyncio.run(main())


async def cmd_lateness(driver: JobDriver, count: int, lead: float, spread: float) -> Any:
    """Schedule ``count`` jobs at ``lead`` .. ``lead + spread`` s from now; their run_at."""
    prefix = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    planned: dict[str, float] = {}
    for i in range(count):
        key = f"late-{prefix}-{i}"
        run_at = now + timedelta(seconds=lead + spread * i / max(1, count - 1))
        await driver.schedule_one(key, run_at)
        planned[key] = run_at.timestamp()
    return planned


async def cmd_discovery(driver: JobDriver, count: int) -> Any:
    """Schedule ``count`` jobs due now, one after the other with 50-150 ms of idle time in
    between (the schedulers are asleep); ``time.monotonic()`` before each call."""
    import random

    prefix = uuid.uuid4().hex[:8]
    started: dict[str, float] = {}
    for i in range(count):
        await asyncio.sleep(random.uniform(0.05, 0.15))
        key = f"disc-{prefix}-{i}"
        began = time.monotonic()
        await driver.schedule_one(key, datetime.now(UTC))
        started[key] = began
    return started


async def cmd_throughput(driver: JobDriver, count: int, batch: int) -> Any:
    """Jobs/s storing ``count`` far-future jobs, one call each (``batch`` 0) or in
    batches of ``batch``."""
    prefix = uuid.uuid4().hex[:8]
    when = datetime.now(UTC) + FAR_FUTURE
    keys = [f"tp-{prefix}-{i}" for i in range(count)]
    began = time.perf_counter()
    if batch <= 0:
        for key in keys:
            await driver.schedule_one(key, when)
    else:
        for i in range(0, count, batch):
            await driver.schedule_batch([(key, when) for key in keys[i : i + batch]])
    seconds = time.perf_counter() - began
    return {"jobs": count, "seconds": round(seconds, 4), "jobs_per_s": round(count / seconds, 1)}


async def cmd_fill(driver: JobDriver, count: int, batch: int) -> Any:
    """Add ``count`` far-future pending jobs (batched when the driver can)."""
    result = await cmd_throughput(driver, count, batch)
    return result


PRODUCER_COMMANDS: dict[str, Callable[..., Awaitable[Any]]] = {
    "lateness": cmd_lateness,
    "discovery": cmd_discovery,
    "throughput": cmd_throughput,
    "fill": cmd_fill,
}
