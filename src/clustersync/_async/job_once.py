"""One-shot jobs: persisted jobs that fire once across the cluster and survive restarts.

Guarantees:

- ``schedule_once`` stores the job (key, run time, JSON props) before returning; nothing
  is stored when it raises. Keys are unique per namespace (``DuplicateJobError``).
- Every started scheduler on the same store and namespace competes for due jobs; a due
  job is *claimed* atomically with a lease by exactly one scheduler, which runs the
  callback and then deletes the job only if it still owns the claim. Exactly once when
  nothing crashes; at least once if the instance running a callback dies (another
  instance re-runs it after the claim lease expires). Long callbacks keep their claim
  renewed.
- Jobs are fired at their ``run_at`` (never early, judged by the store's clock) by
  whichever instance is alive, including jobs scheduled by instances that have died.
- A scheduler costs one task or thread plus one per *running* callback — nothing per
  pending job. It sleeps until the earliest due time in the store's run-time index and
  wakes early when jobs are added or cancelled (in this process at once; across
  processes through the store's change notification) — unless the added job is due
  after its planned wake-up, which costs it nothing.
- ``cancel`` removes the job everywhere and never waits for a running callback, so it
  cannot deadlock; cancelling then re-scheduling a key fires once, at the new time.

Failure modes: store errors in the scheduler loop are logged and retried with capped
backoff. A callback that raises is logged; without ``retry`` the job is then done, with
``Retry`` it runs again later (on any instance) until it succeeds or uses up its attempts,
and is then kept as failed (``list_failed_jobs``, ``retry_failed``).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import _metrics
from .._concurrency import aio as shim
from .._core.backoff import Backoff
from .._core.info import FailedJob, JobContext, one_line_error
from .._core.retry import Retry
from .._core.validation import (
    DEFAULT_MAX_PROPS_BYTES,
    datetime_to_micros,
    decode_props,
    encode_props,
    micros_to_datetime,
    require_aware,
    validate_join_timeout,
    validate_name,
    validate_ttl,
)
from .._observability import current_trace, job_span, log_event
from ..exceptions import DuplicateJobError, SchedulerError, StoreUnavailableError
from ..stores.contract import JOBS_CHANNEL, ClaimedJob, NewJob
from .lease import new_owner_id
from .store import Store, require_store

logger = logging.getLogger("clustersync")

DEFAULT_CLAIM_TTL = 15.0
DEFAULT_MAX_RUNNING = 16
#: Latency wanted from change watchers (SQLite polling) for jobs added elsewhere.
SCHEDULER_POLL_INTERVAL = 0.005
#: Longest sleep without news, in case a notification was lost.
MAX_IDLE = 5.0
#: A ``jobs@<due>`` message is judged late by its delivery time; a job announced as due
#: less than this after our planned wake-up still wakes us (covers delivery delay).
DUE_HINT_SLACK = 0.05
#: After how long a job that no handler here matched is claimed again.
NO_HANDLER_DELAY = 30.0
#: The scheduler whose callback runs in this context (a callback may stop its scheduler).
_FIRING: ContextVar[JobOnceScheduler | None] = ContextVar(
    "clustersync_firing_scheduler", default=None
)


@dataclass(frozen=True, slots=True)
class JobOnceMetadata:
    """A pending one-shot job: its key, run time (aware UTC) and JSON-decoded props."""

    key: str
    run_at: datetime
    props: Any


@dataclass(eq=False)
class JobOnce:
    """A stored one-shot job, as returned by ``schedule_once``."""

    key: str
    run_at: datetime
    props: Any
    _scheduler: JobOnceScheduler = field(repr=False)

    async def cancel(self) -> bool:
        """Remove the job with this key everywhere; True if a pending job was removed."""
        return await self._scheduler.cancel(self.key)


@dataclass(eq=False)
class _Running:
    """One callback run here. ``owner`` is unique to the claim call that produced it, so
    that an old run of a key (cancelled while running, then scheduled again) can never
    complete or renew a newer run's claim of the same key, whose claim counter may
    have restarted at the same value."""

    job: ClaimedJob
    owner: str
    task: shim.Task | None = None
    lost: bool = False


class JobOnceScheduler:
    """Fires stored one-shot jobs on this instance; one per store object.

    Get it with :func:`get_job_once_scheduler`.
    """

    def __init__(
        self,
        store: Store,
        *,
        claim_ttl: float = DEFAULT_CLAIM_TTL,
        max_running: int = DEFAULT_MAX_RUNNING,
        max_props_bytes: int = DEFAULT_MAX_PROPS_BYTES,
        retry: Retry | None = None,
    ) -> None:
        self.store = store
        self.claim_ttl = validate_ttl(claim_ttl, "claim_ttl")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a Retry or None, not {type(retry).__name__}")
        #: How callbacks that raise are retried (None: not retried, the job is done).
        self.retry = retry
        if isinstance(max_running, bool) or not isinstance(max_running, int) or max_running < 1:
            raise ValueError("max_running must be a positive int")
        if isinstance(max_props_bytes, bool) or not isinstance(max_props_bytes, int):
            raise TypeError("max_props_bytes must be an int")
        if max_props_bytes < 2:
            raise ValueError("max_props_bytes must be at least 2")
        self.max_running = max_running
        self.max_props_bytes = max_props_bytes
        self._owner = new_owner_id(self.store.identity)
        #: Handlers by key prefix (None: the handler of every other key).
        self._handlers: dict[str | None, _Handler] = {}
        self._task: shim.Task | None = None
        self._stopping = False
        self._waker: shim.Waker | None = None
        self._running: set[_Running] = set()  # every run in progress here
        self._executor: Executor | None = None  # asyncio: the threads of plain callbacks
        self._claim_calls = 0
        # Monotonic time of the planned wake-up; infinite while rereading the store, so
        # that every change seen meanwhile wakes us again.
        self._wake_at = math.inf

    @property
    def started(self) -> bool:
        return self._task is not None

    def set_callback(self, callback: Callable[..., Any], *, prefix: str | None = None) -> None:
        """Set the function called as ``callback(key, props)`` for the jobs whose key
        starts with ``prefix`` (the longest matching prefix wins), or without a prefix for
        every other key; setting the same prefix again replaces its handler. Independent
        modules of one app can each handle their own keys.

        A callback that takes a third parameter is called as ``callback(key, props,
        context)`` with a :class:`~clustersync.JobContext` (attempt, run_at,
        scheduled_by). Coroutine functions are awaited in asyncio; plain functions run in
        a worker thread. A job whose key no handler matches is logged and left pending.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if prefix is not None:
            validate_name(prefix, "callback prefix")
        self._handlers[prefix] = _Handler(callback, _takes_context(callback))

    def _handler_for(self, key: str) -> _Handler | None:
        best: str | None = None
        for prefix in self._handlers:
            matches = prefix is not None and key.startswith(prefix)
            if matches and (best is None or len(prefix) > len(best)):  # type: ignore[arg-type]
                best = prefix
        return self._handlers.get(best) if best is not None else self._handlers.get(None)

    async def start(self) -> None:
        """Start firing jobs on this instance (including those already due).

        Raises :class:`~clustersync.SchedulerError` if no callback is set or the scheduler
        is already started, and :class:`~clustersync.StoreUnavailableError` if the store
        cannot be reached.
        """
        if not self._handlers:
            raise SchedulerError("set a callback with set_callback() before start()")
        if self._task is not None:
            raise SchedulerError("the scheduler has already been started")
        await self.store._ops.next_job_delay()  # fail loudly now if the store is unreachable
        self._stopping = False
        self._executor = shim.callback_executor(self.max_running, "clustersync-job-once")
        self._task = shim.spawn(self._loop, name="clustersync-job-once-scheduler")

    async def stop(self, timeout: float | None = None) -> bool:
        """Stop firing jobs here; jobs stay stored. Waits up to ``timeout`` for running
        callbacks (their claims keep being renewed meanwhile). Idempotent; True if
        stopped within ``timeout`` (None or seconds >= 0, ``ValueError`` otherwise)."""
        seconds = validate_join_timeout(timeout)
        task = self._task
        if task is None:
            return True
        self._stopping = True
        self._wake()
        if shim.in_task(task):
            return False
        if _FIRING.get() is self:
            return True  # from inside a callback: stopped; the callback ends when it returns
        stopped = await shim.join(task, seconds)
        if stopped:
            self._task = None
        return stopped

    def _after_fork(self) -> None:
        """In a forked child (threading API): the parent's runs and claims stay the
        parent's; a scheduler started before the fork runs here too, from a new thread."""
        # Claims made here must never match the parent's.
        self._owner = new_owner_id(self.store.identity)
        self._running = set()
        self._waker = None
        self._wake_at = math.inf
        if self._task is not None and not self._stopping:
            self._task = shim.spawn(self._loop, name="clustersync-job-once-scheduler")
        else:
            self._task = None

    def _wake(self) -> None:
        waker = self._waker
        if waker is not None:
            waker.set_threadsafe()

    # -- scheduling ----------------------------------------------------------------------

    def _prepare(self, key: str, run_at: datetime, props: Any) -> tuple[NewJob, JobOnce]:
        validate_name(key, "job key")
        when = require_aware(run_at, "run_at")
        props_json = encode_props(props, self.max_props_bytes)
        new = NewJob(
            key, datetime_to_micros(when), props_json, self.store.identity, current_trace()
        )
        return new, JobOnce(key, when, decode_props(props_json), self)

    async def schedule_once(self, key: str, run_at: datetime, props: Any = None) -> JobOnce:
        """Store a job that fires once at ``run_at`` (aware datetime; past = at once).

        Raises ``ValueError`` (bad key, naive ``run_at``, props too large), ``TypeError``
        (props not JSON-serializable) and :class:`~clustersync.DuplicateJobError` (the key
        is stored with another ``run_at`` or props); nothing is stored when it raises.
        Storing an identical job again succeeds, so retrying after
        :class:`~clustersync.StoreUnavailableError` (outcome unknown) is safe. Allowed
        before ``start()``.
        """
        new, job = self._prepare(key, run_at, props)
        await self.store._ops.put_jobs([new])
        return job

    async def schedule_many(self, jobs: Iterable[tuple[str, datetime, Any]]) -> list[JobOnce]:
        """Store many jobs in as few round trips as the store allows; all or nothing
        (validation and duplicates as for :meth:`schedule_once`; jobs already stored
        identically count as stored)."""
        prepared = [self._prepare(*_as_triple(entry)) for entry in jobs]
        seen: set[str] = set()
        for new, _ in prepared:
            if new.key in seen:
                raise DuplicateJobError(new.key)
            seen.add(new.key)
        await self.store._ops.put_jobs([new for new, _ in prepared])
        return [job for _, job in prepared]

    async def cancel(self, key: str) -> bool:
        """Remove the pending job ``key`` everywhere; True if a pending job was removed.

        Idempotent and never waits for a running callback (a job already firing is not
        pending: it finishes, and this returns False).
        """
        validate_name(key, "job key")
        return await self.store._ops.cancel_job(key)

    async def list_scheduled_jobs(self) -> list[JobOnceMetadata]:
        """The pending jobs, sorted by ``run_at`` then key."""
        return [
            JobOnceMetadata(
                job.key, micros_to_datetime(job.run_at_us), decode_props(job.props_json)
            )
            for job in await self.store._ops.list_jobs()
        ]

    # -- firing --------------------------------------------------------------------------

    async def _loop(self) -> None:
        waker = self._waker = shim.Waker()
        backoff = Backoff(cap=2.0)
        renew_every = self.claim_ttl / 3
        next_renewal = shim.monotonic() + renew_every
        failing = False  # the last round ended with a store error
        try:
            with self.store._hub.listen(
                JOBS_CHANNEL, waker, SCHEDULER_POLL_INTERVAL, self._wakes_for
            ):
                while not (self._stopping and not self._running):
                    # Cleared before rereading: a change committed after the reread
                    # began is announced after this point and wakes us.
                    waker.clear()
                    self._wake_at = math.inf
                    if not self._running:  # claims made from now on renew within renew_every
                        next_renewal = shim.monotonic() + renew_every
                    try:
                        if self._running and shim.monotonic() >= next_renewal:
                            await self._renew_claims()
                            next_renewal = shim.monotonic() + renew_every
                        delay = await self._claim_and_start()
                        await self._count_pending()
                        if failing:
                            failing = False
                            log_event(
                                logger,
                                logging.INFO,
                                "store.recovered",
                                "one-shot scheduler: the store answers again",
                                identity=self.store.identity,
                            )
                        backoff.reset()
                    except StoreUnavailableError as exc:
                        if self.store.closed and self._stopping:
                            break
                        delay = backoff.next_delay()
                        failing = True
                        log_event(
                            logger,
                            logging.WARNING,
                            "store.error",
                            "one-shot scheduler: store error, retrying in %.2fs: %s",
                            delay,
                            exc,
                            identity=self.store.identity,
                            error=str(exc),
                        )
                    except Exception:  # the loop must not die: started would lie
                        delay = backoff.next_delay()
                        logger.exception(
                            "one-shot scheduler: unexpected error, retrying in %.2fs", delay
                        )
                    if self._running:
                        delay = min(delay, max(0.0, next_renewal - shim.monotonic()))
                    self._wake_at = shim.monotonic() + delay
                    await waker.wait(delay)
        finally:
            self._waker = None
            if self._executor is not None:
                self._executor.shutdown(wait=False)

    async def _count_pending(self) -> None:
        """In Prometheus multi-process mode, where no collector runs at scrape time, count
        the pending jobs for ``clustersync_jobs_pending`` now and then."""
        metrics = _metrics.ACTIVE
        if metrics is not None and metrics.multiprocess and metrics.pending.due(self.store):
            metrics.pending_counted(self.store, await self.store._ops.count_jobs())

    def _wakes_for(self, due_in: float) -> bool:
        """Whether a job added elsewhere, due in ``due_in`` seconds, should wake us now
        (called by the store's notification reader, from any thread)."""
        return shim.monotonic() + due_in - DUE_HINT_SLACK < self._wake_at

    async def _claim_and_start(self) -> float:
        """Claim due jobs into free slots; return how long to sleep."""
        if self._stopping:
            return MAX_IDLE
        free = self.max_running - len(self._running)
        if free > 0:
            self._claim_calls += 1
            owner = f"{self._owner}:{self._claim_calls}"
            claimed = await self.store._ops.claim_due_jobs(owner, free, self.claim_ttl)
            for job in claimed:
                running = _Running(job, owner)
                self._running.add(running)
                running.task = shim.spawn(
                    self._fire, running, name=f"clustersync-job-once:{job.key}"
                )
            if len(claimed) == free:
                return MAX_IDLE  # slots full; a finishing callback wakes us
        else:
            return MAX_IDLE
        delay = await self.store._ops.next_job_delay()
        return MAX_IDLE if delay is None else min(delay, MAX_IDLE)

    async def _renew_claims(self) -> None:
        by_owner: dict[str, list[_Running]] = {}
        for running in list(self._running):
            if not running.lost:  # a lost claim never comes back
                by_owner.setdefault(running.owner, []).append(running)
        for owner, runs in by_owner.items():
            claims = [(r.job.key, r.job.claim) for r in runs]
            # Bounded: a call stuck on a silent connection is retried on a new one while
            # the claims still live (they were renewed a third of claim_ttl ago at most).
            renewed = set(
                await self.store._call_bounded(
                    self.claim_ttl / 3, "renew_job_claims", owner, claims, self.claim_ttl
                )
            )
            for running in runs:
                if running.job.key not in renewed and running in self._running:
                    running.lost = True
                    logger.error(
                        "one-shot job %r: claim lost (cancelled or expired) while its callback"
                        " runs; it may run again",
                        running.job.key,
                    )

    async def _fire(self, running: _Running) -> None:
        job = running.job
        handler = self._handler_for(job.key)
        end: _End
        if handler is None:
            logger.warning(
                "one-shot job %r: no callback handles this key here; left pending (retried"
                " in %.0fs, or by an instance that handles it)",
                job.key,
                NO_HANDLER_DELAY,
            )
            end = _End("retry", delay=NO_HANDLER_DELAY, count_attempt=False)
        else:
            end = await self._run_handler(handler, job)
        try:
            await self._end(job, running.owner, end)
        finally:
            self._running.discard(running)
            self._wake()

    async def _run_handler(self, handler: _Handler, job: ClaimedJob) -> _End:
        """Run the callback of ``job``; what to do with the job afterwards."""
        props = decode_props(job.props_json)
        args: tuple[Any, ...] = (job.key, props)
        if handler.takes_context:
            context = JobContext(job.attempt, micros_to_datetime(job.due_us), job.scheduled_by)
            args += (context,)
        # The store's clock said it was due at due_us; this host's clock is close enough.
        lateness = max(0.0, time.time() - job.due_us / 1_000_000)
        facts: dict[str, Any] = {
            "job": job.key,
            "type": "once",
            "attempt": job.attempt,
            "identity": self.store.identity,
        }
        log_event(
            logger,
            logging.DEBUG,
            "job.fired",
            "one-shot job %r: attempt %d fired (%.3fs late)",
            job.key,
            job.attempt,
            lateness,
            lateness_s=lateness,
            **facts,
        )
        end = _End("complete", outcome="ok")
        firing = _FIRING.set(self)
        started = shim.monotonic()
        try:
            with job_span(job.key, "once", job.attempt, lateness, job.trace) as span:
                try:
                    await shim.call_user_blocking(handler.callback, *args, executor=self._executor)
                except Exception as exc:
                    span.failed(exc)
                    end = self._after_error(job, exc, shim.monotonic() - started, facts)
        finally:
            _FIRING.reset(firing)
        duration = shim.monotonic() - started
        metrics = _metrics.ACTIVE
        if metrics is not None:
            metrics.job_run("once", "", end.run_outcome, duration, lateness)
        if end.run_outcome == "ok":
            log_event(
                logger,
                logging.DEBUG,
                "job.finished",
                "one-shot job %r: finished in %.3fs",
                job.key,
                duration,
                duration_s=duration,
                **facts,
            )
        return end

    def _after_error(
        self, job: ClaimedJob, exc: Exception, duration: float, facts: dict[str, Any]
    ) -> _End:
        """Log a callback that raised ``exc``; retry the job, keep it failed, or (without
        ``retry``) count it done."""
        error = one_line_error(exc)
        retry = self.retry
        if retry is None:
            log_event(
                logger,
                logging.ERROR,
                "job.failed",
                "one-shot job %r: callback raised; the job is done",
                job.key,
                exc_info=True,
                duration_s=duration,
                error=error,
                **facts,
            )
            return _End("complete", outcome="error", error=error)
        if job.attempt < retry.attempts:
            delay = retry.delay(job.attempt)
            log_event(
                logger,
                logging.WARNING,
                "job.retried",
                "one-shot job %r: attempt %d of %d raised; retrying in %.1fs",
                job.key,
                job.attempt,
                retry.attempts,
                delay,
                exc_info=True,
                duration_s=duration,
                error=error,
                retry_in_s=delay,
                **facts,
            )
            return _End("retry", delay=delay, error=error)
        log_event(
            logger,
            logging.ERROR,
            "job.failed",
            "one-shot job %r: attempt %d of %d raised; kept as failed",
            job.key,
            job.attempt,
            retry.attempts,
            exc_info=True,
            duration_s=duration,
            error=error,
            **facts,
        )
        return _End("fail", error=error)

    async def _end(self, job: ClaimedJob, owner: str, end: _End) -> None:
        """Complete, retry or fail ``job`` in the store, retrying store errors for as long
        as the claim would live (a run not recorded runs again)."""
        backoff = Backoff()
        deadline = shim.monotonic() + self.claim_ttl
        while True:
            try:
                if end.action == "complete":
                    await self.store._ops.complete_job(
                        job.key, owner, job.claim, end.outcome, end.error
                    )
                elif end.action == "retry":
                    await self.store._ops.retry_job(
                        job.key, owner, job.claim, end.delay, end.error, end.count_attempt
                    )
                else:
                    await self.store._ops.fail_job(job.key, owner, job.claim, end.error or "")
                return
            except StoreUnavailableError as exc:
                if shim.monotonic() >= deadline or self.store.closed:
                    logger.error(
                        "one-shot job %r ran but could not be marked done; it may run again: %s",
                        job.key,
                        exc,
                    )
                    return
                await shim.sleep(backoff.next_delay())

    # -- failed jobs ---------------------------------------------------------------------

    async def list_failed_jobs(self) -> list[FailedJob]:
        """The jobs that used up their attempts (see ``retry``), sorted by key. They
        never fire by themselves and are not in :meth:`list_scheduled_jobs`."""
        return [
            FailedJob(
                record.key,
                micros_to_datetime(record.run_at_us),
                decode_props(record.props_json),
                record.attempts,
                record.last_error,
                micros_to_datetime(record.failed_at_us),
            )
            for record in await self.store._ops.list_failed_jobs()
        ]

    async def retry_failed(self, key: str) -> None:
        """Schedule the failed job ``key`` again, due now, with a fresh attempt count.
        Raises ``KeyError`` if no failed job has that key. (``cancel(key)`` removes a
        failed job.)"""
        validate_name(key, "job key")
        if not await self.store._ops.retry_failed_job(key):
            raise KeyError(f"no failed one-shot job with key {key!r}")

    async def count_jobs(self) -> int:
        """How many one-shot jobs are stored, pending or running (cheap)."""
        return await self.store._ops.count_jobs()

    async def list_scheduled_jobs_page(
        self, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> tuple[list[JobOnceMetadata], str | None]:
        """A page of the pending jobs whose key starts with ``prefix``, in key order,
        after the key ``after``, from an index (cheap with a million jobs); and the
        cursor of the next page, None at the end."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        jobs, cursor = await self.store._ops.list_jobs_page(prefix, after, limit)
        page = [
            JobOnceMetadata(
                job.key, micros_to_datetime(job.run_at_us), decode_props(job.props_json)
            )
            for job in jobs
        ]
        return page, cursor


@dataclass(frozen=True, slots=True)
class _Handler:
    callback: Callable[..., Any]
    takes_context: bool


@dataclass(frozen=True, slots=True)
class _End:
    """What becomes of a job after its run: completed, retried later, or failed."""

    action: str  # "complete", "retry" or "fail"
    outcome: str = "ok"
    error: str | None = None
    delay: float = 0.0
    count_attempt: bool = True

    @property
    def run_outcome(self) -> str:
        """How the run went: ``ok``, ``error`` or ``retry`` (the ``outcome`` label)."""
        if self.action == "complete":
            return self.outcome
        return "retry" if self.action == "retry" else "error"


def _takes_context(callback: Callable[..., Any]) -> bool:
    """Whether ``callback`` accepts a third positional argument (the JobContext)."""
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the two-argument form
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 3


def _as_triple(entry: Any) -> tuple[str, datetime, Any]:
    try:
        key, run_at, *rest = entry
    except (TypeError, ValueError):
        raise TypeError("schedule_many takes (key, run_at[, props]) tuples") from None
    if len(rest) > 1:
        raise TypeError("schedule_many takes (key, run_at[, props]) tuples")
    return key, run_at, rest[0] if rest else None


def get_job_once_scheduler(store: Store, **options: Any) -> JobOnceScheduler:
    """The one-shot job scheduler of ``store`` (the same object for the same store).

    ``options`` (``claim_ttl``, ``max_running``, ``max_props_bytes``) configure the
    scheduler when it is first created; later calls may repeat the same options, and
    raise :class:`~clustersync.SchedulerError` if they ask for different ones.
    """
    store = require_store(store, "get_job_once_scheduler()")
    scheduler = store._scheduler
    if scheduler is None:
        scheduler = store._scheduler = JobOnceScheduler(store, **options)
        return scheduler
    wanted = JobOnceScheduler(store, **options)  # the same validation as the first call
    differ = [
        f"{name}={getattr(wanted, name)!r} (it has {getattr(scheduler, name)!r})"
        for name in options
        if getattr(wanted, name) != getattr(scheduler, name)
    ]
    if differ:
        raise SchedulerError(
            "the one-shot scheduler of this store already exists with other options: "
            + ", ".join(differ)
            + "; pass the same options (or none) to get_job_once_scheduler()"
        )
    return scheduler
