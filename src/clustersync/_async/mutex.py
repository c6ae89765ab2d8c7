"""Cluster-wide mutex with a self-renewing lease and fencing tokens.

Guarantees:

- At most one live lease per (namespace, name) at any time, as judged by the store's
  clock. Acquisition mints a fencing token that strictly increases with every successful
  acquisition of the name, across instances and across restarts of durable stores: pass
  ``mutex.token`` to the resource you protect and let it reject smaller tokens.
- Release and renewal are owner-checked: a holder can only ever free or extend its own
  lease, never the next holder's.
- The lease renews itself about every ``ttl / 3``; renewal errors are retried until the
  lease would expire. If it is lost anyway (store outage longer than the ttl, process
  paused past it), ``on_lost`` is called once, ``locked()`` turns False, ``check()`` and
  ``release()`` raise :class:`~clustersync.LockLostError`.
- Waiters wake at once on release in this process, within about a millisecond across
  processes on SQLite, and when the holder's lease expires (crash takeover ≈ ttl). On
  Redis (``handoff="grant"``, the default), blocked waiters queue up and a release hands
  the lease straight to the first live one (first come, first served); a waiter killed
  or paused while queued may keep the lock for up to 1 s. On PostgreSQL with
  ``open_store(..., handoff="advisory")``, blocked waiters queue in the server on a
  session-level advisory lock and take the lease in the same call.

Failure modes: a store outage while waiting is retried with capped, jittered backoff and
logged; ``acquire`` gives up only when ``timeout`` runs out (re-raising the store error if
the last attempt failed). In asyncio, cancelling a task waiting in ``acquire`` leaves
nothing held.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from .._concurrency import aio as shim
from .._core.validation import validate_name, validate_ttl
from .lease import Lease
from .store import Store, require_store

DEFAULT_TTL = 15.0
MUTEX_PREFIX = "m:"  # keeps mutexes apart from recurring jobs' leases


class _LeaseLock:
    """What :class:`Mutex` and :class:`~clustersync.Semaphore` share: a lock held through
    one fenced, self-renewing lease (``_lease``), with the API of ``threading.Lock``."""

    _lease: Lease

    async def acquire(
        self,
        blocking: bool = True,
        timeout: float | None = None,
        cancel: shim.CancelEvent | None = None,
    ) -> bool:
        """Acquire the lock (a semaphore: one of its slots), like
        ``threading.Lock.acquire``.

        Blocks until held and returns True. Returns False when ``blocking=False`` and the
        lock is held elsewhere, when ``timeout`` seconds pass, or when ``cancel`` is set.
        ``blocking=False`` with a store error raises
        :class:`~clustersync.StoreUnavailableError`.
        """
        return await self._lease.acquire(blocking, timeout, cancel)

    async def release(self) -> None:
        """Release the hold (owner-checked).

        Raises :class:`~clustersync.NotLockedError` if this object does not hold the lock
        and :class:`~clustersync.LockLostError` if the lease was lost while held.
        """
        await self._lease.release()

    @property
    def token(self) -> int | None:
        """The fencing token of the current hold, or None when not held."""
        hold = self._lease.hold
        return None if hold is None else hold.token

    def locked(self) -> bool:
        """Whether this object holds a live lease."""
        return self._lease.locked()

    def check(self) -> None:
        """Raise ``LockLostError`` if the lease was lost (``NotLockedError`` if not held)."""
        self._lease.check()

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


class Mutex(_LeaseLock):
    """A cluster-wide lock: ``Mutex(store, name, *, ttl=15.0, on_lost=None)``.

    Not reentrant (a second ``acquire`` on a held mutex blocks, like ``threading.Lock``);
    releasing from another thread or task than the acquiring one is allowed.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        ttl: float = DEFAULT_TTL,
        on_lost: Callable[[], Any] | None = None,
    ) -> None:
        store = require_store(store, "Mutex()")
        self.name = validate_name(name, "mutex name")
        self.ttl = validate_ttl(ttl)
        if on_lost is not None and not callable(on_lost):
            raise TypeError("on_lost must be callable or None")
        self.store = store
        self._lease = Lease(
            store, MUTEX_PREFIX + name, self.ttl, on_lost, description="mutex", label=name
        )

    def __repr__(self) -> str:
        state = f"held token={self.token}" if self._lease.hold else "unlocked"
        return f"<Mutex {self.name!r} {state}>"
