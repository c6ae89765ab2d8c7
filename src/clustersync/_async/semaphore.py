"""Cluster-wide counting semaphore: up to ``limit`` holders of a name at once.

Guarantees (those of :class:`~clustersync.Mutex`, with ``limit`` slots instead of one):

- At most ``limit`` live slots per (namespace, name) at any time, judged by the store's
  clock. Each acquisition is judged against the ``limit`` of the caller (instances that
  disagree on it each see their own limit honoured when they acquire).
- Acquisition is one atomic store operation that mints a fencing token from the name's
  one counter: tokens strictly increase across every acquisition of the name, whatever
  the slot, so one fenced resource can check every holder (it must then accept the
  writes of up to ``limit`` live tokens, e.g. per holder, not only the highest).
- A slot renews itself about every ``ttl / 3`` (the store's one renewal worker); a slot
  that cannot be renewed before its local deadline is lost: ``on_lost`` is called once,
  ``locked()`` turns False, ``check()`` and ``release()`` raise
  :class:`~clustersync.LockLostError`.
- Waiters are served in order of arrival: a blocking ``acquire`` takes a place in the
  store's line of the name, and a slot goes to a newcomer only when no earlier waiter
  wants it, so no waiter starves while slots keep being released. Waiters wake when a
  slot is released (the store's change notifications, as mutex waiters do), when the
  earliest slot would expire, and at least every :data:`QUEUE_PLACE` / 3 seconds to keep
  their place.

Failure modes: as :class:`~clustersync.Mutex` (store outages are retried while waiting;
a cancelled asyncio acquire leaves nothing held, nor a place in the line). A waiter that
dies or is paused while first in line holds the next free slot back for at most
:data:`QUEUE_PLACE` seconds (its place lapses).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .._core.info import HolderInfo, identity_of
from .._core.validation import validate_name, validate_ttl
from ..exceptions import StoreUnavailableError
from ..stores.contract import AcquireResult
from .lease import Lease
from .mutex import DEFAULT_TTL, _LeaseLock
from .store import Store, require_store

logger = logging.getLogger("clustersync.lease")

SEMAPHORE_PREFIX = "s:"  # keeps semaphores apart from mutexes, elections and jobs
#: Seconds a waiter keeps its place in the line without checking in again: the longest
#: a dead or paused waiter can hold back a free slot.
QUEUE_PLACE = 2.0


class _SlotLease(Lease):
    """One slot of a semaphore: the lease engine on the store's slot operations."""

    renew_operation = "renew_slot"
    grantable = False
    queue_place = QUEUE_PLACE

    def __init__(
        self,
        store: Store,
        name: str,
        limit: int,
        ttl: float,
        on_lost: Callable[[], Any] | None,
        label: str,
    ) -> None:
        super().__init__(store, name, ttl, on_lost, description="semaphore", label=label)
        self.limit = limit

    def _acquire_in_store_once(self, owner: str, queue: bool) -> Awaitable[AcquireResult]:
        wait = self.queue_place if queue else 0.0
        return self.store._ops.acquire_slot(self.name, owner, self.limit, self.ttl, wait)

    async def _leave_queue(self, owner: str) -> bool:
        try:
            return await self.store._ops.leave_slot_queue(self.name, owner)
        except StoreUnavailableError as exc:
            logger.warning(
                "could not leave the line of semaphore %r; the place lapses within %.0fs: %s",
                self.name,
                self.queue_place,
                exc,
            )
            return False

    async def release_in_store(self, owner: str, token: int) -> bool:
        return await self.store._ops.release_slot(self.name, owner, token)


def validate_limit(limit: object) -> int:
    """``limit`` as an int >= 1 (``TypeError`` for a non-int or a bool, ``ValueError``
    below 1)."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, not {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return limit


class Semaphore(_LeaseLock):
    """Up to ``limit`` holders at once, cluster-wide:
    ``Semaphore(store, name, *, limit, ttl=15.0, on_lost=None)``.

    The API of :class:`~clustersync.Mutex` (``acquire``, ``release``, ``locked``,
    ``check``, ``token``, ``with``), holding one of ``limit`` slots. Not reentrant: one
    object holds at most one slot (a second ``acquire`` on it waits for its release);
    use one object per concurrent holder.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        limit: int,
        ttl: float = DEFAULT_TTL,
        on_lost: Callable[[], Any] | None = None,
    ) -> None:
        store = require_store(store, "Semaphore()")
        self.name = validate_name(name, "semaphore name")
        self.limit = validate_limit(limit)
        self.ttl = validate_ttl(ttl)
        if on_lost is not None and not callable(on_lost):
            raise TypeError("on_lost must be callable or None")
        self.store = store
        self._lease = _SlotLease(
            store, SEMAPHORE_PREFIX + name, self.limit, self.ttl, on_lost, label=name
        )

    def __repr__(self) -> str:
        state = f"held token={self.token}" if self._lease.hold else "not held"
        return f"<Semaphore {self.name!r} limit={self.limit} {state}>"

    async def holders(self) -> list[HolderInfo]:
        """Who holds a slot of this semaphore now (every instance), sorted by token: one
        store read."""
        slots = await self.store._ops.list_slots(self._lease.name)
        return [HolderInfo(identity_of(s.owner), s.token, s.expires_in) for s in slots]
