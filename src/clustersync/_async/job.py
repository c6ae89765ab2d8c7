"""Recurring jobs: a callback that runs on at most one instance at a time.

Guarantees:

- However many instances ``schedule`` the same key on the same store and namespace, the
  callback never runs on two at once: a run happens only while holding the job's lease
  (a fenced, self-renewing lease separate from user mutexes).
- The schedule is shared: ``last_finished`` is stored (judged by the store's clock) and
  written only by the holder of the lease, and every instance rechecks ``next_wait``
  under the lease before running, so the job runs about once per interval in total,
  not once per instance.
- An exception in the callback is logged with its traceback (logger ``clustersync``) and
  counts as a finished run. A store outage is retried with backoff; a job never stops
  because of one.
- ``close()`` stops the job on this instance: it waits for a running callback (up to
  ``timeout``) but never for another instance's hold.

Failure modes: if an instance dies mid-callback, the lease expires after ``ttl`` and
another instance runs the job when ``next_wait`` says it is due (``last_finished`` was not
updated, so usually at once).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import Executor
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from .. import _metrics
from .._concurrency import aio as shim
from .._core.backoff import Backoff
from .._core.info import one_line_error
from .._core.intervals import JobMetadata, NextWaitInterval, describe_schedule
from .._core.validation import (
    micros_to_datetime,
    validate_join_timeout,
    validate_name,
    validate_ttl,
)
from .._observability import job_span, log_event
from ..exceptions import LockLostError, StoreUnavailableError
from ..stores.contract import job_channel
from .lease import Lease, new_owner_id
from .store import Store, require_store

logger = logging.getLogger("clustersync")

DEFAULT_JOB_TTL = 15.0
#: Longest sleep until a run is due: the wait is recomputed at least this often (waits
#: longer than ~292 years overflow the threading primitives).
MAX_SLEEP = 3600.0
JOB_PREFIX = "j:"  # keeps job leases apart from user mutexes
#: How often an instance refreshes its registration of the job (the registry counts
#: the instances whose registration is younger than REGISTRATION_TTL).
HEARTBEAT = 10.0
REGISTRATION_TTL = 30.0
#: Latency wanted from change watchers (SQLite polling) for pause, resume and trigger.
CONTROL_POLL_INTERVAL = 0.5
#: The latest next run written to the registry (a wait of centuries is "far away").
MAX_PLANNED = 100 * 365 * 86400.0
#: The job whose callback runs in this context (a callback may close its own job).
_RUNNING: ContextVar[Job | None] = ContextVar("clustersync_running_job", default=None)


class Job:
    """A running recurring job on this instance; created by :func:`schedule`."""

    def __init__(
        self,
        store: Store,
        key: str,
        next_wait: NextWaitInterval,
        callback: Callable[[], Any],
        *,
        ttl: float,
    ) -> None:
        self.store = store
        self.key = key
        self._next_wait = next_wait
        self._schedule = describe_schedule(next_wait)
        self._callback = callback
        self._lease = Lease(store, JOB_PREFIX + key, ttl, description="job", label=key)
        self._stop = shim.CancelEvent()
        self._task: shim.Task | None = None
        self._waker: shim.Waker | None = None
        self._executor: Executor | None = None  # asyncio: the thread of plain callbacks
        #: This instance's registration in the store's registry of recurring jobs.
        self._instance = new_owner_id(store.identity)

    def __repr__(self) -> str:
        state = "closed" if self._stop.is_set() else "running"
        return f"<Job {self.key!r} {state}>"

    def _start(self) -> None:
        self.store._jobs.add(self)
        self._executor = shim.callback_executor(1, f"clustersync-job:{self.key}")
        self._task = shim.spawn(self._run, name=f"clustersync-job:{self.key}")

    def _after_fork(self) -> None:
        """In a forked child (threading API): run the job here too, from a new thread."""
        if self._stop.is_set():
            return
        self._stop = shim.CancelEvent()
        self._instance = new_owner_id(self.store.identity)
        self._start()

    async def metadata(self) -> JobMetadata:
        """The job's shared metadata (``last_finished`` of the latest run, or None)."""
        record = await self.store._ops.get_job_metadata(self.key)
        return _to_metadata(record.last_finished_us)

    async def pause(self) -> None:
        """Pause the job on every instance, persistently: no run starts until
        :meth:`resume` (a run in progress finishes; :meth:`trigger` still runs once)."""
        await self._control("pause")

    async def resume(self) -> None:
        """Resume the job on every instance (idempotent)."""
        await self._control("resume")

    async def trigger(self) -> None:
        """Ask for one extra run as soon as possible, on exactly one instance (never two
        at once, even while paused; the job stays paused); then the cadence goes on."""
        await self._control("trigger")

    async def _control(self, action: str) -> None:
        if not await self.store._ops.control_recurring_job(self.key, action):
            await self._register(None)  # called before this instance registered the job
            await self.store._ops.control_recurring_job(self.key, action)

    async def close(self, timeout: float | None = None) -> bool:
        """Stop the job here, waiting up to ``timeout`` for a running callback.

        Idempotent. Returns True once the job has stopped on this instance (False if a
        running callback outlived ``timeout``; it stops when the callback returns).
        ``timeout`` is None or a number of seconds >= 0 (``ValueError`` otherwise).
        """
        seconds = validate_join_timeout(timeout)
        self._stop.set()
        waker = self._waker
        if waker is not None:
            waker.set_threadsafe()
        self.store._jobs.discard(self)
        task = self._task
        if task is None or shim.in_task(task) or _RUNNING.get() is self:
            return True  # called by the job's own callback: it stops when that returns
        return await shim.join(task, seconds)

    async def _plan(self) -> tuple[float, int | None]:
        """Seconds until the job is due (``inf`` while paused, 0 when triggered) and when
        that is by the store's clock (µs; None while paused)."""
        record = await self.store._ops.get_job_metadata(self.key)
        if record.triggered:
            return 0.0, record.store_now_us
        if record.paused:
            return math.inf, None
        now = micros_to_datetime(record.store_now_us)
        wait = self._next_wait(now, _to_metadata(record.last_finished_us))
        if not isinstance(wait, timedelta):
            raise TypeError(f"next_wait must return a timedelta, not {type(wait).__name__}")
        seconds = wait.total_seconds()
        return seconds, record.store_now_us + int(min(seconds, MAX_PLANNED) * 1_000_000)

    async def _register(self, next_run_us: int | None) -> None:
        await self.store._ops.register_recurring_job(
            self.key, self._instance, self._schedule, next_run_us, REGISTRATION_TTL
        )

    async def _run(self) -> None:
        waker = self._waker = shim.Waker()
        try:
            with self.store._hub.listen(job_channel(self.key), waker, CONTROL_POLL_INTERVAL):
                await self._loop(waker)
        finally:
            self._waker = None
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            if not self.store.closed:
                try:
                    await self.store._ops.unregister_recurring_job(self.key, self._instance)
                except StoreUnavailableError as exc:  # its registration just expires
                    logger.debug("job %r: could not unregister: %s", self.key, exc)

    async def _loop(self, waker: shim.Waker) -> None:
        backoff = Backoff(cap=5.0)
        next_heartbeat = -math.inf
        registered: int | None = None  # the next run this instance last registered
        failing = False  # the last round ended with a store error
        while not self._stop.is_set():
            try:
                # Cleared before reading the store: a pause, resume or trigger committed
                # after the read began is announced after this point and wakes us.
                waker.clear()
                wait, next_run_us = await self._plan()
                if failing:
                    failing = False
                    log_event(
                        logger,
                        logging.INFO,
                        "store.recovered",
                        "job %r: the store answers again",
                        self.key,
                        job=self.key,
                        type="recurring",
                        identity=self.store.identity,
                    )
                if shim.monotonic() >= next_heartbeat or _moved(registered, next_run_us):
                    await self._register(next_run_us)
                    registered = next_run_us
                    next_heartbeat = shim.monotonic() + HEARTBEAT
                if wait > 0:
                    heartbeat_in = max(0.0, next_heartbeat - shim.monotonic())
                    await waker.wait(min(wait, MAX_SLEEP, heartbeat_in))
                    continue
                # Due: take the lease (waiting while another instance runs it), then
                # recheck under it — the other instance may just have run the job.
                if not await self._lease.acquire(cancel=self._stop):
                    continue
                try:
                    wait = (await self._plan())[0]
                    if wait <= 0:
                        await self._run_once(lateness=-wait)
                finally:
                    await self._release()
                backoff.reset()
            except StoreUnavailableError as exc:
                if self.store.closed:
                    return
                delay = backoff.next_delay()
                failing = True
                log_event(
                    logger,
                    logging.WARNING,
                    "store.error",
                    "job %r: store error, retrying in %.2fs: %s",
                    self.key,
                    delay,
                    exc,
                    job=self.key,
                    type="recurring",
                    identity=self.store.identity,
                    error=str(exc),
                )
                await shim.wait_for_event(self._stop, delay)
            except Exception:
                delay = backoff.next_delay()
                logger.exception("job %r: next_wait failed; retrying in %.2fs", self.key, delay)
                await shim.wait_for_event(self._stop, delay)

    async def _run_once(self, lateness: float) -> None:
        """Run the callback once (the lease is held); ``lateness``: seconds since it was
        due (0 for a trigger)."""
        hold = self._lease.hold
        if hold is None:  # pragma: no cover - the lease is held here
            return
        # The last word on pause: a pause committed before this is never missed.
        if not await self.store._ops.start_job_run(
            self.key, self._lease.name, hold.owner, hold.token
        ):
            return
        facts: dict[str, Any] = {
            "job": self.key,
            "type": "recurring",
            "identity": self.store.identity,
        }
        log_event(
            logger,
            logging.DEBUG,
            "job.started",
            "job %r: run started (%.3fs late)",
            self.key,
            lateness,
            token=hold.token,
            lateness_s=lateness,
            **facts,
        )
        running = _RUNNING.set(self)
        outcome, error = "ok", None
        started = shim.monotonic()
        try:
            with job_span(self.key, "recurring", 1, lateness) as span:
                try:
                    await shim.call_user_blocking(self._callback, executor=self._executor)
                except Exception as exc:
                    outcome, error = "error", one_line_error(exc)
                    span.failed(exc)
                    log_event(
                        logger,
                        logging.ERROR,
                        "job.failed",
                        "job %r: callback raised; the run counts as finished",
                        self.key,
                        exc_info=True,
                        duration_s=shim.monotonic() - started,
                        error=error,
                        **facts,
                    )
        finally:
            _RUNNING.reset(running)
        duration = shim.monotonic() - started
        metrics = _metrics.ACTIVE
        if metrics is not None:
            metrics.job_run("recurring", self.key, outcome, duration, lateness)
        if outcome == "ok":
            log_event(
                logger,
                logging.DEBUG,
                "job.finished",
                "job %r: run finished in %.3fs",
                self.key,
                duration,
                duration_s=duration,
                **facts,
            )
        if not await self._record_finished(outcome, error):
            logger.error("job %r: lease lost during the run; last_finished not recorded", self.key)

    async def _record_finished(self, outcome: str, error: str | None) -> bool:
        """Write ``last_finished``, retrying store errors for as long as the lease lives
        (a run not recorded would run again at once). The write is idempotent, so a
        retry after an unknown outcome is harmless."""
        hold = self._lease.hold
        if hold is None:  # pragma: no cover - the lease is held during the run
            return False
        if hold.lost or shim.monotonic() >= hold.deadline:
            # Declared lost here (on_lost ran, the loss was logged): the store may still
            # hold the lease for a round trip longer, but the run is not recorded, as
            # the log said, and the job is due again.
            return False
        backoff = Backoff(base=0.02, cap=0.5)
        while True:
            try:
                return await self.store._ops.set_job_finished(
                    self.key, self._lease.name, hold.owner, hold.token, outcome, error
                )
            except StoreUnavailableError as exc:
                remaining = hold.deadline - shim.monotonic()
                if hold.lost or remaining <= 0 or self.store.closed:
                    raise
                delay = min(backoff.next_delay(), remaining)
                logger.warning(
                    "job %r: could not record the run; retrying in %.2fs: %s", self.key, delay, exc
                )
                await shim.sleep(delay)

    async def _release(self) -> None:
        try:
            await self._lease.release()
        except LockLostError as exc:
            logger.error("job %r: %s", self.key, exc)


def _moved(registered: int | None, planned: int | None) -> bool:
    """Whether the planned next run moved enough (a run happened, a pause) to tell the
    registry before the next heartbeat."""
    if registered is None or planned is None:
        return registered != planned
    return abs(planned - registered) > 1_000_000


def _to_metadata(last_finished_us: int | None) -> JobMetadata:
    if last_finished_us is None:
        return JobMetadata(None)
    return JobMetadata(micros_to_datetime(last_finished_us))


def schedule(
    store: Store,
    key: str,
    next_wait: NextWaitInterval,
    callback: Callable[[], Any],
    *,
    ttl: float = DEFAULT_JOB_TTL,
) -> Job:
    """Start a recurring job on this instance and return at once.

    ``next_wait(now, metadata)`` decides how long to wait before the next run (see
    :func:`wait_for_interval`, :func:`wait_for_rounded_interval`, :func:`wait_for_cron`).
    ``ttl`` is the lease of a running callback: if this instance dies mid-run, another may
    run the job ``ttl`` seconds later. Raises ``ValueError``/``TypeError`` for a bad key,
    ``next_wait`` or ``callback``.
    """
    store = require_store(store, "schedule()")
    validate_name(key, "job key")
    if not callable(next_wait):
        raise TypeError("next_wait must be callable (e.g. wait_for_interval(...))")
    if not callable(callback):
        raise TypeError("callback must be callable")
    job = Job(store, key, next_wait, callback, ttl=validate_ttl(ttl))
    job._start()
    return job
