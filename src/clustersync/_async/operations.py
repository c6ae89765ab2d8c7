"""Operating a cluster: see and steer the recurring jobs and locks of a store.

- :func:`list_recurring_jobs` — every recurring job any instance scheduled, with its
  schedule, whether it is paused, where it runs now, its last run and the next one;
- :func:`pause_recurring_job` / :func:`resume_recurring_job` — cluster-wide and
  persistent: while paused no instance starts a run (a run in progress finishes);
- :func:`trigger_recurring_job` — one extra run as soon as possible, on exactly one
  instance (still never two at once), even while paused;
- :func:`list_locks` — the live leases: mutexes, election leaders and running recurring
  jobs;
- :func:`break_lock` — an operator ends a mutex's live lease or a semaphore's slots: the
  next acquisition gets a higher fencing token, and the old holder learns it at its next
  renewal (``on_lost``).

Each is one or two store operations, from any process that opens the store: the CLI,
the dashboard, or a script of yours.
"""

from __future__ import annotations

from datetime import datetime

from .._core.info import LockInfo, RecurringJobInfo, RunInfo, identity_of
from .._core.validation import micros_to_datetime, validate_name
from ..stores.contract import RecurringJobRecord
from .election import ELECTION_PREFIX
from .job import JOB_PREFIX
from .mutex import MUTEX_PREFIX
from .semaphore import SEMAPHORE_PREFIX
from .store import Store, require_store

#: Internal lease-name prefixes and the kind of lock each denotes.
LEASE_KINDS = {MUTEX_PREFIX: "mutex", ELECTION_PREFIX: "election", JOB_PREFIX: "job"}


async def list_recurring_jobs(store: Store) -> list[RecurringJobInfo]:
    """The recurring jobs of the store's namespace, sorted by key (see
    :class:`~clustersync.RecurringJobInfo`)."""
    store = require_store(store, "list_recurring_jobs()")
    records = await store._ops.list_recurring_jobs()
    running = {
        lease.name[len(JOB_PREFIX) :]: identity_of(lease.owner)
        for lease in await store._ops.list_leases()
        if lease.name.startswith(JOB_PREFIX)
    }
    return [
        RecurringJobInfo(
            key=record.key,
            schedule=record.schedule,
            paused=record.paused,
            # The lease is also held briefly to recheck whether a run is due: running
            # only from the start of a run until its end is recorded.
            running_on=running.get(record.key) if _in_run(record) else None,
            last_started=_moment(record.last_started_us),
            last_finished=_moment(record.last_finished_us),
            last_outcome=record.last_outcome,
            last_error=record.last_error,
            next_run=_moment(record.next_run_us),
            instances=record.instances,
        )
        for record in records
    ]


async def pause_recurring_job(store: Store, key: str) -> None:
    """Pause recurring job ``key`` on every instance, persistently (idempotent).

    Raises ``KeyError`` if no instance ever scheduled ``key``."""
    await _control(store, key, "pause", "pause_recurring_job()")


async def resume_recurring_job(store: Store, key: str) -> None:
    """Resume recurring job ``key`` on every instance (idempotent). ``KeyError`` if no
    instance ever scheduled it."""
    await _control(store, key, "resume", "resume_recurring_job()")


async def trigger_recurring_job(store: Store, key: str) -> None:
    """Run recurring job ``key`` once more as soon as possible, on exactly one instance
    that schedules it (even while paused; it stays paused). ``KeyError`` if no instance
    ever scheduled it."""
    await _control(store, key, "trigger", "trigger_recurring_job()")


async def _control(store: Store, key: str, action: str, what: str) -> None:
    store = require_store(store, what)
    validate_name(key, "job key")
    if not await store._ops.control_recurring_job(key, action):
        raise KeyError(f"no recurring job {key!r} was ever scheduled in this namespace")


async def recent_runs(store: Store, limit: int = 50) -> list[RunInfo]:
    """The most recent runs of the namespace's jobs (one-shot and recurring), newest first:
    at most ``limit``, of the last 100 the store remembers."""
    store = require_store(store, "recent_runs()")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")
    return [
        RunInfo(
            kind=run.kind,
            key=run.key,
            due=_moment(run.due_us),
            started=_moment(run.started_us),
            finished=micros_to_datetime(run.finished_us),
            outcome=run.outcome,
            error=run.error,
            identity=identity_of(run.owner),
            attempt=run.attempt,
            lateness_s=(
                None
                if run.due_us is None or run.started_us is None
                else (run.started_us - run.due_us) / 1_000_000
            ),
        )
        for run in await store._ops.recent_runs(limit)
    ]


async def list_locks(store: Store) -> list[LockInfo]:
    """The live leases of the namespace: mutexes, election leaders and the recurring
    jobs running now, sorted by kind then name. (Semaphore holders are listed by
    ``Semaphore.holders()``.)"""
    store = require_store(store, "list_locks()")
    locks = []
    for lease in await store._ops.list_leases():
        prefix = lease.name[:2]
        kind = LEASE_KINDS.get(prefix)
        name = lease.name[2:] if kind else lease.name
        locks.append(
            LockInfo(kind or "other", name, identity_of(lease.owner), lease.token, lease.expires_in)
        )
    locks.sort(key=lambda lock: (lock.kind, lock.name))
    return locks


async def break_lock(store: Store, name: str, token: int | None = None) -> bool:
    """End the live holds named ``name``, whoever holds them (an operator's override).

    Without ``token``: the live lease of mutex ``name`` and every live slot of semaphore
    ``name``. With ``token``: only the semaphore slot that has that fencing token. The
    next acquisition gets a higher fencing token, so the old holder's writes are fenced
    off; the old holder learns it no later than its next renewal (``on_lost``,
    ``LockLostError``). Returns whether anything live was ended.
    """
    store = require_store(store, "break_lock()")
    validate_name(name, "lock name")
    if token is not None and (isinstance(token, bool) or not isinstance(token, int)):
        raise TypeError(f"token must be an int or None, not {type(token).__name__}")
    broken = await store._ops.break_slots(SEMAPHORE_PREFIX + name, token) > 0
    if token is None:
        broken = await store._ops.break_lease(MUTEX_PREFIX + name) or broken
    return broken


def _in_run(record: RecurringJobRecord) -> bool:
    """Whether a run of the job started and did not finish (or its instance died)."""
    started, finished = record.last_started_us, record.last_finished_us
    return started is not None and (finished is None or started > finished)


def _moment(micros: int | None) -> datetime | None:
    return None if micros is None else micros_to_datetime(micros)
