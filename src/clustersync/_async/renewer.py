"""One background renewer per store for every lease held through it.

A thread (sync) or task (asyncio) per hold would cost a thread start and join on every
acquisition; instead each store keeps a single worker that sleeps until the earliest
renewal is due. Renewal rules are those of :mod:`clustersync._async.lease`: renew every
``ttl / 3``; on store errors retry with capped backoff until the local deadline; a
refused renewal or a passed deadline marks the hold lost and calls ``on_lost`` (in a
task or thread of its own, so a slow callback cannot delay other renewals).

A deadline passes while the worker may be stuck in a call to a store that stopped
answering (until the driver's socket timeout): so each hold also has an expiry timer
(``shim.call_later``), re-armed by every successful renewal, that declares the hold lost
at its deadline whatever the worker is doing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
from typing import TYPE_CHECKING

from .. import _metrics
from .._concurrency import aio as shim
from .._observability import log_event
from ..exceptions import StoreUnavailableError
from .lease import local_deadline

if TYPE_CHECKING:
    from .lease import Hold, Lease
    from .store import Store

logger = logging.getLogger("clustersync.lease")

#: Sleep bound while nothing is held, so the worker notices a closed store.
_IDLE = 1.0
#: Shortest time one renewal attempt is given before it is abandoned.
MIN_ATTEMPT = 0.05


class Renewer:
    """Renews the holds of one store from one worker."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()  # holds are added from any thread (sync world)
        self._heap: list[tuple[float, int, Lease, Hold]] = []
        self._order = itertools.count()
        self._task: shim.Task | None = None
        self._waker: shim.Waker | None = None
        self._closed = False
        # Until when the worker sleeps (monotonic; -inf while it is awake): an added hold
        # wakes it only if its renewal is due before that, not on every acquisition.
        self._sleep_until = -math.inf

    def add(self, lease: Lease, hold: Hold) -> None:
        """Start renewing ``hold`` (from an acquiring task or thread)."""
        self._arm_expiry(lease, hold)
        now = shim.monotonic()
        life = max(0.0, hold.deadline - now)
        # Every ttl / 3 as usual; sooner for a lease granted with a shorter life. Doing
        # it up to half as late again is still safe (at most ttl / 2, or 3/4 of the life).
        first = min(lease.ttl / 3, life / 2)
        latest = now + min(lease.ttl / 2, life * 3 / 4)
        entry = (now + first, next(self._order), lease, hold)
        with self._lock:
            heapq.heappush(self._heap, entry)
            if self._task is None:
                self._waker = shim.Waker()
                self._task = shim.spawn(self._run, name="clustersync-renewer")
            # Wake the worker only if it would otherwise sleep past the latest safe time
            # (a thread wake-up on every acquisition costs the acquiring thread).
            waker = self._waker if latest < self._sleep_until else None
        if waker is not None:
            waker.set_threadsafe()

    def _arm_expiry(self, lease: Lease, hold: Hold) -> None:
        remaining = max(0.0, hold.deadline - shim.monotonic())
        hold.expiry = shim.call_later(remaining, self._expired, lease, hold)

    def _expired(self, lease: Lease, hold: Hold) -> None:
        """The expiry timer of ``hold`` (in the event loop, or the shared timer thread)."""
        if not hold.released:
            self._lose(lease, hold, "it could not be renewed before it expired")

    async def close(self) -> None:
        """Stop renewing (the store is closing): every hold still live ends — it is
        released in the store, so that others take over at once, and its holder sees it
        lost (``on_lost``, ``LockLostError``)."""
        with self._lock:
            self._closed = True
            task, waker = self._task, self._waker
            live = [(lease, hold) for _, _, lease, hold in self._heap]
        if waker is not None:
            waker.set_threadsafe()
        if task is not None and not shim.in_task(task):
            await shim.join(task, 5.0)
        for lease, hold in live:
            if hold.expiry is not None:
                hold.expiry.cancel()
            if hold.released or hold.lost:
                continue
            self._lose(lease, hold, "the store was closed while it was held", logging.WARNING)
            try:
                await lease.release_in_store(hold.owner, hold.token)
            except StoreUnavailableError as exc:
                logger.warning("could not release %r; it expires on its own: %s", lease.name, exc)

    def _next_due(self) -> tuple[float, Lease, Hold] | None:
        """Pop the earliest renewal if it is due; drop released holds on the way."""
        with self._lock:
            while self._heap:
                due, _, lease, hold = self._heap[0]
                if hold.released or hold.lost:
                    heapq.heappop(self._heap)
                    continue
                if due > shim.monotonic():
                    return None
                heapq.heappop(self._heap)
                return due, lease, hold
        return None

    def _wait_time(self) -> float:
        """How long to sleep; from now on, ``add`` wakes the worker for earlier renewals."""
        with self._lock:
            now = shim.monotonic()
            wait = _IDLE if not self._heap else max(0.0, min(_IDLE, self._heap[0][0] - now))
            self._sleep_until = now + wait
            return wait

    async def _run(self) -> None:
        waker = self._waker
        assert waker is not None
        while not self._closed:
            waker.clear()
            while (item := self._next_due()) is not None:
                _, lease, hold = item
                # Each renewal on its own: one stuck call never delays another lease.
                shim.spawn(self._renew_and_requeue, lease, hold, name="clustersync-renewal")
            await waker.wait(self._wait_time())
            with self._lock:
                self._sleep_until = -math.inf

    async def _renew_and_requeue(self, lease: Lease, hold: Hold) -> None:
        delay = await self._renew(lease, hold)
        if delay is None or self._closed:
            return
        due = shim.monotonic() + delay
        with self._lock:
            heapq.heappush(self._heap, (due, next(self._order), lease, hold))
            waker = self._waker if due < self._sleep_until else None
        if waker is not None:
            waker.set_threadsafe()

    async def _renew(self, lease: Lease, hold: Hold) -> float | None:
        """Renew once; return the delay before the next renewal, or None when done.

        The attempt is bounded by half the lease's remaining life: a call stuck on a
        connection that stopped answering is abandoned (the next attempt uses a new
        connection) while there is still time to retry."""
        sent = shim.monotonic()
        try:
            bound = max(MIN_ATTEMPT, (hold.deadline - sent) / 2)
            renewed = await self._store._call_bounded(
                bound, lease.renew_operation, lease.name, hold.owner, hold.token, lease.ttl
            )
        except StoreUnavailableError as exc:
            if hold.released or hold.lost:
                return None
            remaining = hold.deadline - shim.monotonic()
            if remaining <= 0:
                self._lose(lease, hold, f"it could not be renewed before it expired ({exc})")
                return None
            delay = min(hold.backoff.next_delay(), remaining)
            log_event(
                logger,
                logging.WARNING,
                "lock.renewal_failed",
                "could not renew %s %r (%.2fs left); retrying in %.2fs: %s",
                lease.description,
                lease.label,
                remaining,
                delay,
                exc,
                lock=lease.label,
                kind=lease.description,
                token=hold.token,
                identity=self._store.identity,
                error=str(exc),
            )
            return delay
        if hold.released:
            return None
        if not renewed:
            self._lose(lease, hold, "the store no longer has it (expired or taken over)")
            return None
        if hold.expiry is not None:
            hold.expiry.cancel()  # once this returns, the timer has run or never will
        if hold.lost:  # the answer came after the deadline: the timer declared it lost
            return None
        hold.deadline = local_deadline(sent, lease.ttl)
        self._arm_expiry(lease, hold)
        hold.backoff.reset()
        return lease.ttl / 3

    def _lose(self, lease: Lease, hold: Hold, why: str, level: int = logging.ERROR) -> None:
        """Mark ``hold`` lost and call ``on_lost``, once (from the worker or the timer)."""
        with self._lock:
            if hold.lost:
                return
            hold.lost = True
        held = shim.monotonic() - hold.acquired_at
        metrics = _metrics.ACTIVE
        if metrics is not None:
            metrics.lock_lost(lease.description, lease.label)
            metrics.lock_held(lease.description, lease.label, held)
        log_event(
            logger,
            level,
            "lock.lost",
            "lost %s %r (token %d): %s",
            lease.description,
            lease.label,
            hold.token,
            why,
            lock=lease.label,
            kind=lease.description,
            token=hold.token,
            identity=self._store.identity,
            duration_s=held,
            error=why,
        )
        if lease.on_lost is not None:
            shim.spawn(lease.call_on_lost, name=f"clustersync-on-lost:{lease.name}")
