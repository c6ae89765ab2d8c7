"""A self-renewing, owner-checked, fenced lease on one name: the engine of Mutex and Job.

Guarantees and failure modes:

- Acquisition is atomic in the store and mints a fencing token that strictly increases
  for the name. Release and renewal succeed only for the owner of the live lease, so a
  holder whose lease expired can never free or extend the next holder's lease.
- While held, the lease is renewed about every ``ttl / 3``. A renewal that fails with a
  store error is retried with capped, jittered backoff until the lease would expire by
  the local, conservative deadline (measured from *before* the last successful renewal
  was sent). A renewal the store refuses, or a deadline that passes, marks the hold lost:
  ``on_lost`` is called once and ``release()`` raises ``LockLostError``.
- Waiters register for the lease's release notification before each attempt and also
  wake when the current lease would expire, so handoff does not depend on polling and
  a lost notification costs latency, never correctness.
- With a granting store (Redis, ``handoff="grant"``, the default), a blocking acquire
  without ``cancel`` queues up in the store instead and the release writes the lease in
  its name; the grant's life is counted from before the wait was sent (see
  :meth:`Lease._wait_for_grant`), and leaving the queue passes an unseen grant on. At
  most ``max_blocked_waiters`` acquisitions of a store queue at once (each blocks on a
  connection); the others wait to be notified, as with ``handoff="notify"``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .. import _metrics
from .._concurrency import aio as shim
from .._core.backoff import Backoff
from .._core.validation import validate_timeout
from .._observability import LockWaitSpan, log_event, now_ns
from ..exceptions import LockLostError, NotLockedError, StoreUnavailableError
from ..stores.contract import GRANT_LEASE_MS, AcquireResult, lease_channel
from .store import Store

logger = logging.getLogger("clustersync.lease")

#: Latency wanted from change watchers (SQLite polling) while a waiter blocks.
WAITER_POLL_INTERVAL = 0.001
#: Upper bound of one wait without news, in case a notification was lost.
MAX_WAIT_WITHOUT_NEWS = 2.0
#: Pause before retrying an acquisition whose answer came after its ttl: a ttl shorter
#: than the store's round trip can never be held, and must not spin a CPU trying.
SLOW_ANSWER_RETRY = 0.05
#: How long ``release()`` retries a failing store before leaving the lease to expire.
RELEASE_RETRY_SECONDS = 2.0
#: How much faster than the store's clock this host's monotonic clock may run, relative:
#: NTP slews a clock by at most 0.05 %; 0.1 % is 15 ms of a 15 s lease.
CLOCK_DRIFT = 0.001
#: Life of a lease granted by a release, until its new holder's renewer extends it.
GRANT_LEASE_SECONDS = GRANT_LEASE_MS / 1000
_FORKED = (
    "{} {!r} (token {}) was acquired by the parent process before os.fork(); it is the"
    " parent's hold, not this process's"
)


def local_deadline(sent: float, life: float) -> float:
    """Until when (monotonic) this process trusts a lease of ``life`` seconds whose
    request was sent at ``sent``: counted from before the store granted it, and short by
    :data:`CLOCK_DRIFT` of its life, in case this host's clock runs faster than the
    store's (the store's clock decides when the lease really ends)."""
    return sent + life * (1 - CLOCK_DRIFT)


def new_owner_id(identity: str) -> str:
    """A unique owner id that also tells a human who holds: ``<identity>:<random>``."""
    return f"{identity}:{uuid.uuid4().hex[:12]}"


@dataclass(eq=False)
class Hold:
    """One successful acquisition: who owns it, its token and its local deadline."""

    owner: str
    token: int
    deadline: float  # monotonic; the lease is not trusted past it
    released: bool = False
    lost: bool = False
    #: The process that acquired it: after ``os.fork()`` the hold stays the parent's.
    pid: int = field(default_factory=os.getpid)
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.05, cap=1.0))
    #: The renewer's timer that declares the hold lost at its deadline (shim.call_later).
    expiry: Any = None
    #: When it was acquired (monotonic), for the hold time.
    acquired_at: float = field(default_factory=shim.monotonic)


class Lease:
    """Acquire, renew in the background, and release one named lease.

    The store operations of a kind of lease are its methods :meth:`_acquire_in_store_once`,
    :meth:`release_in_store` and the name :attr:`renew_operation`: a subclass that
    overrides them (a semaphore's slot) gets the whole engine — waiting, renewal, loss.
    """

    #: The store operation that renews a hold, called as ``(name, owner, token, ttl)``.
    renew_operation = "renew_lease"
    #: Whether a blocking acquire may queue in the store's grant queue (a plain lease).
    grantable = True
    #: Seconds a blocking acquirer keeps its place in the store's line of waiters between
    #: attempts (0: the store keeps no line for this kind of lease). A waiter then checks
    #: again at least every third of it, and leaves the line when it gives up.
    queue_place = 0.0

    def __init__(
        self,
        store: Store,
        name: str,
        ttl: float,
        on_lost: Callable[[], Any] | None = None,
        *,
        description: str = "lease",
        label: str | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.ttl = ttl
        self.on_lost = on_lost
        #: What holds the lease ("mutex", "job", ...): the ``kind`` of its metrics and logs.
        self.description = description
        #: The name the user gave (``name`` without the prefix of its kind).
        self.label = name if label is None else label
        #: The hold of the last acquisition, until ``release()`` acknowledges it (a lost
        #: hold stays here, lost, so that its holder keeps seeing it lost).
        self.hold: Hold | None = None
        #: One acquisition at a time through this object: another waits until
        #: ``release()``, so it can never replace a hold its holder still believes in.
        self._gate = shim.Gate()

    # -- acquisition ---------------------------------------------------------------------

    async def acquire(
        self,
        blocking: bool = True,
        timeout: float | None = None,
        cancel: shim.CancelEvent | None = None,
    ) -> bool:
        seconds = validate_timeout(timeout)
        if not blocking and seconds is not None:
            raise ValueError("can't specify a timeout for a non-blocking acquire")
        started = shim.monotonic()
        deadline = None if seconds is None else started + seconds
        result = "error"
        try:
            acquired = False
            if await self._gate.enter(blocking, seconds, cancel):
                try:
                    acquired = await self._acquire_in_store(blocking, deadline, cancel)
                finally:
                    if not acquired:
                        self._gate.leave()
            result = _result(acquired, cancel)
            return acquired
        except BaseException as exc:
            result = "error" if isinstance(exc, Exception) else "cancelled"
            raise
        finally:
            self._acquisition_ended(result, started)

    def _acquisition_ended(self, result: str, started: float) -> None:
        """Metrics and the log record of an acquisition that ended with ``result``."""
        metrics = _metrics.ACTIVE
        if metrics is not None:
            metrics.lock_acquisition(
                self.description, self.label, result, shim.monotonic() - started
            )
        hold = self.hold
        if result == "acquired" and hold is not None and logger.isEnabledFor(logging.DEBUG):
            log_event(
                logger,
                logging.DEBUG,
                "lock.acquired",
                "acquired %s %r (token %d)",
                self.description,
                self.label,
                hold.token,
                lock=self.label,
                kind=self.description,
                token=hold.token,
                identity=self.store.identity,
                duration_s=shim.monotonic() - started,
            )

    async def _acquire_in_store(
        self, blocking: bool, deadline: float | None, cancel: shim.CancelEvent | None
    ) -> bool:
        # One owner id for the whole acquisition: a retry after an unknown outcome (a
        # store error) finds the lease the first attempt may have taken, never orphans it.
        owner = new_owner_id(self.store.identity)
        started_ns = now_ns()
        if (
            blocking
            and cancel is None
            and self.store._grants
            and self.grantable
            # Beyond the store's places in grant queues, waiters are notified instead.
            and self.store._grant_places.take()
        ):
            span = LockWaitSpan(self.label, self.description, started_ns)
            outcome = "error"
            try:
                acquired = await self._wait_for_grant(owner, deadline, span)
                outcome = _result(acquired, cancel)
                return acquired
            finally:
                self.store._grant_places.give_back()
                span.end(outcome)
        acquired = False
        try:
            acquired = await self._attempt_and_wait(owner, blocking, deadline, cancel, started_ns)
        finally:
            if blocking and not acquired and self.queue_place:
                await shim.shielded(self._leave_queue(owner))
        return acquired

    async def _attempt_and_wait(
        self,
        owner: str,
        blocking: bool,
        deadline: float | None,
        cancel: shim.CancelEvent | None,
        started_ns: int,
    ) -> bool:
        """Attempt, then (blocking) wait for a release or the expiry and attempt again."""
        result = await self._attempt_or_error(owner, cancel, blocking)
        if isinstance(result, bool):
            return result
        if not blocking:
            if isinstance(result, StoreUnavailableError):
                raise result
            return False
        # Held elsewhere (or the store failed): this acquisition waits.
        span = LockWaitSpan(self.label, self.description, started_ns)
        span.waiting()
        outcome = "error"
        try:
            acquired = await self._wait(owner, result, deadline, cancel)
            outcome = _result(acquired, cancel)
            return acquired
        finally:
            span.end(outcome)

    async def _wait(
        self,
        owner: str,
        result: float | StoreUnavailableError,
        deadline: float | None,
        cancel: shim.CancelEvent | None,
    ) -> bool:
        """Wait for the lease held elsewhere (``result``: how long it still lives, or the
        store error of the first attempt), retrying until acquired, the deadline or
        cancellation."""
        longest_wait = MAX_WAIT_WITHOUT_NEWS
        if self.queue_place:  # come back before our place in the line lapses
            longest_wait = min(longest_wait, self.queue_place / 3)
        waker = shim.Waker()
        backoff = Backoff()
        # Registered from here on, so a release wakes us; the first retry is immediate in
        # case the release happened before we listened.
        just_registered = True
        with self.store._hub.listen(lease_channel(self.name), waker, WAITER_POLL_INTERVAL):
            while True:
                if isinstance(result, StoreUnavailableError):
                    if self.store.closed:
                        raise result
                    wait = backoff.next_delay()
                    self._warn_retry(wait, result)
                else:
                    backoff.reset()
                    wait = 0.0 if just_registered else min(result, longest_wait)
                just_registered = False
                if deadline is not None:
                    remaining = deadline - shim.monotonic()
                    if remaining <= 0:
                        if isinstance(result, StoreUnavailableError):
                            raise result
                        return False
                    wait = min(wait, remaining)
                if wait > 0:
                    await waker.wait(wait, cancel)
                if cancel is not None and cancel.is_set():
                    return False
                waker.clear()
                attempt = await self._attempt_or_error(owner, cancel, True)
                if isinstance(attempt, bool):
                    return attempt
                result = attempt

    async def _wait_for_grant(self, owner: str, deadline: float | None, span: LockWaitSpan) -> bool:
        """Blocking acquire through the store's grant queue (``handoff="grant"``).

        Each round takes the lease if it is free, else queues up (keeping our place) and
        blocks until a release hands the lease to us, for at most the store's
        ``grant_wait(ttl)`` (Redis: 0.25 s, so that a grant is never older than a quarter
        of its life when we see it). Leaving without the lease
        (timeout, store error, cancellation) withdraws from the queue and passes on a
        grant we never saw.
        """
        longest_wait = self.store._grant_ops.grant_wait(self.ttl)
        backoff = Backoff()
        error: StoreUnavailableError | None = None
        acquired = False
        tried = False
        try:
            while True:
                wait = longest_wait
                if deadline is not None:
                    remaining = deadline - shim.monotonic()
                    if remaining <= 0 and tried:
                        if error is not None:
                            raise error
                        return False
                    wait = max(0.0, min(wait, remaining))
                tried = True
                sent = shim.monotonic()
                try:
                    grant = await self.store._grant_ops.wait_for_grant(
                        self.name, owner, self.ttl, wait
                    )
                except StoreUnavailableError as exc:
                    if self.store.closed:
                        raise
                    error = exc
                    span.waiting()
                    delay = backoff.next_delay()
                    if deadline is not None:
                        delay = min(delay, max(0.0, deadline - shim.monotonic()))
                    self._warn_retry(delay, exc)
                    await shim.sleep(delay)
                    continue
                error = None
                backoff.reset()
                if grant.token is None or grant.handed_over:
                    span.waiting()
                if grant.token is None:
                    continue
                deadline_of_grant = local_deadline(sent, grant.valid_for)
                if shim.monotonic() >= deadline_of_grant:
                    # Seen too late to be sure it still holds: pass it on, queue again.
                    logger.warning(
                        "%s %r was granted too long before this waiter ran; passing it on",
                        self.description,
                        self.name,
                    )
                    await self._release_quietly(owner, grant.token)
                    await shim.sleep(SLOW_ANSWER_RETRY)  # a ttl below the round trip: no spin
                    continue
                self._take(owner, grant.token, deadline_of_grant)
                acquired = True
                return True
        finally:
            if not acquired:
                await shim.shielded(self._withdraw(owner))

    def _warn_retry(self, delay: float, error: StoreUnavailableError) -> None:
        log_event(
            logger,
            logging.WARNING,
            "store.error",
            "store error while waiting for %s %r; retrying in %.2fs: %s",
            self.description,
            self.label,
            delay,
            error,
            lock=self.label,
            kind=self.description,
            identity=self.store.identity,
            error=str(error),
        )

    async def _withdraw(self, owner: str) -> bool:
        """Leave the grant queue; True if a grant we never saw was passed on."""
        try:
            return await self.store._grant_ops.withdraw_waiter(self.name, owner)
        except StoreUnavailableError as exc:
            logger.warning(
                "could not leave the queue of %s %r; its place and any grant lapse within"
                " %.0fs: %s",
                self.description,
                self.name,
                GRANT_LEASE_SECONDS,
                exc,
            )
            return False

    def _take(self, owner: str, token: int, deadline: float) -> None:
        hold = Hold(owner, token, deadline)
        self.hold = hold
        self.store._renewer().add(self, hold)

    async def _attempt_or_error(
        self, owner: str, cancel: shim.CancelEvent | None, queue: bool
    ) -> bool | float | StoreUnavailableError:
        """One attempt (``queue``: keep a place in the store's line if refused): True if
        acquired, False if cancelled, the seconds the current lease still lives if held
        elsewhere, or the store error."""
        if cancel is not None and cancel.is_set():
            return False
        sent = shim.monotonic()

        async def undo(result: AcquireResult) -> None:
            if result.acquired and result.token is not None:
                await self.release_in_store(owner, result.token)

        try:
            result = await shim.cancel_safe(self._acquire_in_store_once(owner, queue), undo)
        except StoreUnavailableError as exc:
            return exc
        if not result.acquired or result.token is None:
            return (result.retry_after or 0.0) + 0.0005
        deadline = local_deadline(sent, self.ttl)
        if shim.monotonic() >= deadline:
            # The answer took longer than the ttl: the lease may already have expired, so
            # it protects nothing. Give it back and try again rather than hand it out.
            logger.warning(
                "acquiring %s %r took longer than its ttl; retrying", self.description, self.name
            )
            await self._release_quietly(owner, result.token)
            return SLOW_ANSWER_RETRY
        self._take(owner, result.token, deadline)
        return True

    # -- the store operations of this kind of lease ------------------------------------------

    def _acquire_in_store_once(self, owner: str, queue: bool) -> Awaitable[AcquireResult]:
        """One acquisition attempt in the store (the store is reached at once: a closed
        or forked store raises here, not in a background task); ``queue``: keep a place
        in the store's line if refused (for kinds of lease that have one)."""
        return self.store._ops.acquire_lease(self.name, owner, self.ttl)

    async def _leave_queue(self, owner: str) -> bool:
        """Leave the store's line of waiters (kinds of lease that have one); True if
        ``owner`` was in it."""
        return False

    async def release_in_store(self, owner: str, token: int) -> bool:
        """The owner-checked release in the store; False if there was nothing to free."""
        return await self.store._ops.release_lease(self.name, owner, token)

    async def _release_quietly(self, owner: str, token: int) -> None:
        """Owner-checked release whose failure only means the lease expires on its own."""
        try:
            await self.release_in_store(owner, token)
        except StoreUnavailableError as exc:
            logger.warning(
                "could not give back %s %r; it expires on its own: %s",
                self.description,
                self.name,
                exc,
            )

    # -- loss ---------------------------------------------------------------------------

    async def call_on_lost(self) -> None:
        """Run the ``on_lost`` callback (from the store's renewer, in its own task/thread)."""
        if self.on_lost is None:
            return
        try:
            await shim.call_user(self.on_lost)
        except Exception:
            logger.exception("on_lost callback of %s %r failed", self.description, self.name)

    # -- state and release ---------------------------------------------------------------

    def locked(self) -> bool:
        hold = self.hold
        return (
            hold is not None
            and not hold.lost
            and hold.pid == os.getpid()
            and shim.monotonic() < hold.deadline
        )

    def check(self) -> None:
        hold = self.hold
        if hold is None:
            raise NotLockedError(f"{self.description} {self.name!r} is not held by this object")
        if hold.pid != os.getpid():
            raise LockLostError(_FORKED.format(self.description, self.name, hold.token))
        if hold.lost or shim.monotonic() >= hold.deadline:
            raise LockLostError(
                f"{self.description} {self.name!r} (token {hold.token}) was lost while held"
            )

    async def release(self) -> None:
        """Release the hold (see :class:`~clustersync.Mutex`): ``LockLostError`` if it was
        lost meanwhile."""
        hold = self.hold
        if hold is None:
            raise NotLockedError(f"{self.description} {self.name!r} is not held by this object")
        self.hold = None
        try:
            await self._end(hold)
        finally:
            self._gate.leave()  # the next acquisition through this object may go

    async def _end(self, hold: Hold) -> None:
        if hold.pid != os.getpid():  # the parent's hold: only the parent may release it
            raise LockLostError(_FORKED.format(self.description, self.name, hold.token))
        hold.released = True  # the store's renewer drops it
        if hold.expiry is not None:
            hold.expiry.cancel()
        lost = hold.lost or shim.monotonic() >= hold.deadline
        released = await self._release_in_store(hold)
        if not hold.lost:  # a lost hold was counted when it was lost
            held = shim.monotonic() - hold.acquired_at
            metrics = _metrics.ACTIVE
            if metrics is not None:
                metrics.lock_held(self.description, self.label, held)
            if logger.isEnabledFor(logging.DEBUG):
                log_event(
                    logger,
                    logging.DEBUG,
                    "lock.released",
                    "released %s %r (token %d) after %.3fs",
                    self.description,
                    self.label,
                    hold.token,
                    held,
                    lock=self.label,
                    kind=self.description,
                    token=hold.token,
                    identity=self.store.identity,
                    duration_s=held,
                )
        if lost or not released:
            raise LockLostError(
                f"{self.description} {self.name!r} (token {hold.token}) was lost before release;"
                " the critical section was not fully protected"
            )

    async def _release_in_store(self, hold: Hold) -> bool:
        """Owner-checked delete, retried briefly on store errors.

        Gives up after :data:`RELEASE_RETRY_SECONDS` (or when the lease would expire by
        itself anyway): the critical section was protected until ``release()`` was
        called, and the lease frees itself at expiry.
        """
        backoff = Backoff()
        give_up = min(hold.deadline, shim.monotonic() + RELEASE_RETRY_SECONDS)
        uncertain = False  # an attempt failed with an unknown outcome
        while True:
            try:
                released = await self.release_in_store(hold.owner, hold.token)
                # After an unknown outcome, "nothing to release" means that attempt did it.
                return released or uncertain
            except StoreUnavailableError as exc:
                uncertain = True
                remaining = give_up - shim.monotonic()
                if self.store.closed:  # closing the store ended the lease already
                    return not hold.lost
                if remaining <= 0:
                    logger.warning(
                        "could not release %s %r; it expires on its own: %s",
                        self.description,
                        self.name,
                        exc,
                    )
                    return True
                await shim.sleep(min(backoff.next_delay(), remaining))


def _result(acquired: bool, cancel: shim.CancelEvent | None) -> str:
    """The ``result`` label of an acquisition that returned ``acquired``."""
    if acquired:
        return "acquired"
    return "cancelled" if cancel is not None and cancel.is_set() else "timeout"
