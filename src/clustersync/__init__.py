"""clustersync: make several instances of a Python service behave as one cluster.

- :class:`Mutex` — a cluster-wide lock with a self-renewing lease, fencing tokens and a
  loud signal (``on_lost``, ``LockLostError``) when the lease is lost.
- :class:`Semaphore` — the same with up to ``limit`` holders at once.
- :class:`Election` — leader election: one leader per name, a fencing ``term``,
  ``on_elected``/``on_revoked`` callbacks in order.
- :func:`schedule` — a recurring job that runs on at most one instance at a time, at a
  cadence shared by all instances.
- :func:`get_job_once_scheduler` — persisted one-shot jobs that fire once across the
  cluster, on whichever instance is alive, even after restarts.

This module is the threading API; :mod:`clustersync.aio` is the same API for asyncio.
Stores: ``memory://``, ``sqlite:///path.db`` (default), Redis and PostgreSQL.

Observability: state changes are logged under ``clustersync.`` with structured
``extra`` fields, :func:`enable_metrics` records Prometheus metrics, and with the
OpenTelemetry API installed job runs and lock waits make spans.
"""

from __future__ import annotations

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
from ._sync.election import Election
from ._sync.job import Job, schedule
from ._sync.job_once import JobOnce, JobOnceMetadata, JobOnceScheduler, get_job_once_scheduler
from ._sync.mutex import Mutex
from ._sync.operations import (
    break_lock,
    list_locks,
    list_recurring_jobs,
    pause_recurring_job,
    recent_runs,
    resume_recurring_job,
    trigger_recurring_job,
)
from ._sync.semaphore import Semaphore
from ._sync.store import Store, open_store
from .exceptions import (
    ClusterSyncError,
    ConfigurationError,
    DuplicateJobError,
    LockLostError,
    NotLockedError,
    SchedulerError,
    StoreUnavailableError,
)

__version__ = "0.1.0"

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
    "__version__",
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
