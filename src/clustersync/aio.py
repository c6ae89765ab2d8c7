"""clustersync for asyncio: the same API and semantics as :mod:`clustersync`.

``await aio.open_store(url)``, ``aio.Mutex`` and ``aio.Semaphore``
(``await m.acquire(timeout=...)``, ``async with m``), ``aio.Election`` (``start()``,
``await e.stop()``, ``async with e``), ``aio.schedule(...)`` (callbacks may be
coroutine functions; plain functions run in a worker thread so the event loop keeps
renewing leases), and
``aio.get_job_once_scheduler(store)``. Cancelling a task that waits in ``acquire``
leaves nothing held.
"""

from __future__ import annotations

from ._async.election import Election
from ._async.job import Job, schedule
from ._async.job_once import JobOnce, JobOnceMetadata, JobOnceScheduler, get_job_once_scheduler
from ._async.mutex import Mutex
from ._async.operations import (
    break_lock,
    list_locks,
    list_recurring_jobs,
    pause_recurring_job,
    recent_runs,
    resume_recurring_job,
    trigger_recurring_job,
)
from ._async.semaphore import Semaphore
from ._async.store import Store, open_store
from ._core.info import (
    FailedJob,
    HolderInfo,
    JobContext,
    LeaderInfo,
    LockInfo,
    RecurringJobInfo,
    RunInfo,
)
from ._core.intervals import (
    JobMetadata,
    NextWaitInterval,
    wait_for_cron,
    wait_for_interval,
    wait_for_rounded_interval,
)
from ._core.retry import Retry
from ._metrics import enable_metrics
from .exceptions import (
    ClusterSyncError,
    ConfigurationError,
    DuplicateJobError,
    LockLostError,
    NotLockedError,
    SchedulerError,
    StoreUnavailableError,
)

__all__ = [
    "ClusterSyncError",
    "ConfigurationError",
    "DuplicateJobError",
    "Election",
    "FailedJob",
    "HolderInfo",
    "Job",
    "JobContext",
    "JobMetadata",
    "JobOnce",
    "JobOnceMetadata",
    "JobOnceScheduler",
    "LeaderInfo",
    "LockInfo",
    "LockLostError",
    "Mutex",
    "NextWaitInterval",
    "NotLockedError",
    "RecurringJobInfo",
    "Retry",
    "RunInfo",
    "SchedulerError",
    "Semaphore",
    "Store",
    "StoreUnavailableError",
    "break_lock",
    "enable_metrics",
    "get_job_once_scheduler",
    "list_locks",
    "list_recurring_jobs",
    "open_store",
    "pause_recurring_job",
    "recent_runs",
    "resume_recurring_job",
    "schedule",
    "trigger_recurring_job",
    "wait_for_cron",
    "wait_for_interval",
    "wait_for_rounded_interval",
]
