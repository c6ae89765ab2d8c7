"""What the dashboard reads and does, for a store of either API.

:class:`Source` gives the pages one asyncio interface over a store from
``await clustersync.aio.open_store()`` (awaited on the server's event loop) or from
``clustersync.open_store()`` (the threading API: each call runs in a worker thread, so a
Django or Flask service can hand its store over as is).

Everything the pages read comes from an index and is bounded: a page of one-shot jobs
(``list_jobs_page``, key order), ``count_jobs`` and ``next_job_delay``, the live leases,
the registry of recurring jobs (both as small as the cluster's set of names), the recent
runs (at most the 100 the store remembers) and the failed one-shot jobs (as many as have
used up their attempts and wait for an operator). Nothing lists every pending job.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, cast

from .. import aio as _aio_api
from .._async.store import Store as AsyncStore
from .._core.info import FailedJob, LockInfo, RecurringJobInfo, RunInfo
from .._sync.store import Store as SyncStore
from ..stores.contract import StoredJob

#: Most failed jobs one page shows (``list_failed_jobs()`` returns them all).
MAX_FAILED_SHOWN = 200
#: ``count_jobs()`` scans the namespace on some stores (PostgreSQL: about 0.2 s at a
#: million jobs): a count that took longer than CHEAP_COUNT seconds is reused for
#: COUNT_REUSE times what it cost (at most MAX_COUNT_AGE seconds), so that open pages
#: refreshing every 2 s do not keep the store busy counting. Actions drop it.
CHEAP_COUNT = 0.02
COUNT_REUSE = 50
MAX_COUNT_AGE = 60.0


class Source:
    """The dashboard's view of one store (either API); every method is a coroutine."""

    def __init__(self, store: AsyncStore | SyncStore) -> None:
        if isinstance(store, AsyncStore):
            self.threaded = False
            self._api: ModuleType = _aio_api
        elif isinstance(store, SyncStore):
            import clustersync as sync_api

            self.threaded = True
            self._api = sync_api
        else:
            raise TypeError(
                "create_app() needs a store from `await clustersync.aio.open_store(...)` or"
                f" clustersync.open_store(), not {type(store).__name__}"
            )
        self.store = store
        self._count: tuple[int, float] | None = None  # (count, reusable until: monotonic)
        self._counting: asyncio.Future[int] | None = None

    # -- what the header shows ------------------------------------------------------------

    @property
    def url(self) -> str:
        """The store URL, password redacted."""
        return self.store.url

    @property
    def namespace(self) -> str:
        return self.store.namespace

    @property
    def identity(self) -> str:
        return self.store.identity

    # -- plumbing -------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``: awaited for the asyncio API, in a worker thread for threads."""
        if self.threaded:
            return await asyncio.to_thread(functools.partial(fn, *args))
        return await fn(*args)

    def _scheduler(self) -> Any:
        """The store's one-shot scheduler if the application made one, else a detached
        one: ``get_job_once_scheduler(store)`` would fix the options of the store's
        scheduler (``claim_ttl``, ...) before the application asks for its own."""
        existing = self.store._scheduler
        if existing is not None:
            return existing
        return self._api.JobOnceScheduler(self.store)

    # -- reads ----------------------------------------------------------------------------

    async def now_us(self) -> int:
        """The store's clock (µs since the epoch): the cheapest call that reaches it."""
        return cast(int, await self._call(self.store._ops.now_us))

    async def list_locks(self) -> list[LockInfo]:
        return cast(list[LockInfo], await self._call(self._api.list_locks, self.store))

    async def list_recurring_jobs(self) -> list[RecurringJobInfo]:
        jobs = await self._call(self._api.list_recurring_jobs, self.store)
        return cast(list[RecurringJobInfo], jobs)

    async def jobs_page(
        self, prefix: str, after: str | None, limit: int
    ) -> tuple[list[StoredJob], str | None]:
        """A page of pending one-shot jobs in key order (from an index)."""
        page = await self._call(self.store._ops.list_jobs_page, prefix, after, limit)
        return cast(tuple[list[StoredJob], str | None], page)

    async def count_jobs(self) -> int:
        """How many one-shot jobs are stored; an expensive count is reused a while (see
        CHEAP_COUNT), and concurrent requests share one count."""
        cached = self._count
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        if self._counting is None:
            self._counting = asyncio.ensure_future(self._count_now())
        counting = self._counting
        try:
            return await asyncio.shield(counting)
        finally:
            if counting.done() and self._counting is counting:
                self._counting = None

    async def _count_now(self) -> int:
        started = time.monotonic()
        value = cast(int, await self._call(self.store._ops.count_jobs))
        cost = time.monotonic() - started
        reuse = 0.0 if cost < CHEAP_COUNT else min(MAX_COUNT_AGE, cost * COUNT_REUSE)
        self._count = (value, time.monotonic() + reuse)
        return value

    def changed(self) -> None:
        """An action changed the store: counts are read again."""
        self._count = None

    async def next_job_delay(self) -> float | None:
        return cast(float | None, await self._call(self.store._ops.next_job_delay))

    async def failed_jobs(self) -> list[FailedJob]:
        """The failed one-shot jobs, most recent failure first."""
        jobs = cast(list[FailedJob], await self._call(self._scheduler().list_failed_jobs))
        return sorted(jobs, key=lambda job: (job.failed_at, job.key), reverse=True)

    async def recent_runs(self, limit: int) -> list[RunInfo]:
        """The latest runs of every kind of job, newest first."""
        runs = await self._call(functools.partial(self._api.recent_runs, self.store, limit=limit))
        return cast(list[RunInfo], runs)

    # -- actions --------------------------------------------------------------------------

    async def break_lock(self, name: str) -> bool:
        return cast(bool, await self._call(self._api.break_lock, self.store, name))

    async def control_recurring_job(self, action: str, key: str) -> None:
        """``pause``, ``resume`` or ``trigger``; ``KeyError`` for a key never scheduled."""
        control = getattr(self._api, f"{action}_recurring_job")
        await self._call(control, self.store, key)

    async def cancel_job(self, key: str) -> bool:
        """Remove one-shot job ``key``, pending or failed (``scheduler.cancel``)."""
        return cast(bool, await self._call(self._scheduler().cancel, key))

    async def cancel_failed(self, key: str) -> bool:
        """Remove failed job ``key``; False if no failed job has that key. A job that is
        pending again (retried meanwhile, by another operator or the CLI) is left alone:
        the button named a failed job."""
        if key not in {job.key for job in await self.failed_jobs()}:
            return False
        return await self.cancel_job(key)

    async def retry_failed(self, key: str) -> None:
        """Schedule failed job ``key`` again now, with fresh attempts; ``KeyError`` if no
        failed job has that key."""
        await self._call(self._scheduler().retry_failed, key)
