"""Leader election: at most one leader per name, with a fencing term.

Guarantees:

- At most one live leader per (namespace, name) at any time, judged by the store's
  clock: leadership is a fenced lease (the lease engine of :class:`~clustersync.Mutex`,
  renewed by the store's one renewal worker). Its token is the ``term``: it strictly
  increases with every new leadership, so a resource that rejects smaller terms fences
  off a leader that lost its lease.
- ``on_elected(term)`` and ``on_revoked()`` run one at a time, in order (elected,
  revoked, elected, ...), from the election's own background thread (asyncio: its task;
  a plain function runs in a worker thread, a coroutine function is awaited). Every
  ``on_elected`` is followed by exactly one ``on_revoked``, whatever ends the leadership:
  ``resign()``, ``stop()``, closing the store, a refused renewal, or renewals failing
  until the local lease deadline — then ``on_revoked`` starts at that deadline at the
  latest (later only if ``on_elected`` is still running then: they never overlap).
- ``is_leader`` and ``term`` turn False/None at once when leadership ends (at the local
  deadline at the latest), before ``on_revoked`` runs.
- Campaigning instances wait as mutex waiters do: a resignation wakes them at once (the
  store's release notification), a dead leader is replaced when its lease expires.

Failure modes: store errors while campaigning are retried with backoff (never raised);
an exception in a callback is logged (logger ``clustersync``) and the election goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .._concurrency import aio as shim
from .._core.info import LeaderInfo, identity_of
from .._core.validation import validate_join_timeout, validate_name, validate_ttl
from ..exceptions import LockLostError, StoreUnavailableError
from .lease import Lease
from .mutex import DEFAULT_TTL
from .store import Store, require_store

logger = logging.getLogger("clustersync")

ELECTION_PREFIX = "e:"  # keeps elections apart from mutexes, semaphores and jobs


class Election:
    """Campaign for leadership of ``name``:
    ``Election(store, name, *, ttl=15.0, on_elected=None, on_revoked=None)``.

    ``start()`` campaigns in the background (returns at once); ``resign()`` gives
    leadership up at once and stops campaigning (``start()`` rejoins); ``stop()``
    resigns, then waits for ``on_revoked`` to finish. ``with election:`` starts on entry
    (without waiting for leadership) and stops on exit.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        ttl: float = DEFAULT_TTL,
        on_elected: Callable[[int], Any] | None = None,
        on_revoked: Callable[[], Any] | None = None,
    ) -> None:
        store = require_store(store, "Election()")
        self.name = validate_name(name, "election name")
        self.ttl = validate_ttl(ttl)
        for callback, what in ((on_elected, "on_elected"), (on_revoked, "on_revoked")):
            if callback is not None and not callable(callback):
                raise TypeError(f"{what} must be callable or None")
        self.store = store
        self._on_elected = on_elected
        self._on_revoked = on_revoked
        self._reset()

    def _reset(self) -> None:
        """A new candidate: no lease, no campaign."""
        self._lease = Lease(
            self.store,
            ELECTION_PREFIX + self.name,
            self.ttl,
            self._lost,
            description="election",
            label=self.name,
        )
        #: Set by resign(): ends the current campaign (a new one gets a new event).
        self._stop: shim.CancelEvent | None = None
        self._task: shim.Task | None = None
        self._waker: shim.Waker | None = None
        #: Set while elected (on_elected called, on_revoked not yet).
        self._elected = shim.CancelEvent()
        self._step_down_lock = shim.Lock()

    def __repr__(self) -> str:
        state = f"leader term={self.term}" if self.is_leader else "not leader"
        campaigning = self._stop is not None and not self._stop.is_set()
        return f"<Election {self.name!r} {state}{' campaigning' if campaigning else ''}>"

    # -- state ---------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Whether this object leads now: elected (``on_elected`` is called or due) and
        its lease live by the local deadline."""
        return self._elected.is_set() and self._lease.locked()

    @property
    def term(self) -> int | None:
        """The fencing token of this object's leadership, or None while not leader."""
        hold = self._lease.hold
        return hold.token if hold is not None and self.is_leader else None

    async def wait_until_leader(self, timeout: float | None = None) -> bool:
        """Wait until this object leads (``start()`` it first); True if it does, False
        when ``timeout`` seconds pass first."""
        seconds = validate_join_timeout(timeout)
        deadline = None if seconds is None else shim.monotonic() + seconds
        while not self.is_leader:
            remaining = None if deadline is None else deadline - shim.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if self._elected.is_set():  # leadership just ended: wait for the campaign
                await shim.sleep(0.001 if remaining is None else min(0.001, remaining))
            else:
                await shim.wait_for_event(self._elected, remaining)
        return True

    async def leader(self) -> LeaderInfo | None:
        """Who leads now (any instance; no need to campaign), or None: one store read."""
        lease = await self.store._ops.read_lease(self._lease.name)
        if lease is None:
            return None
        return LeaderInfo(identity_of(lease.owner), lease.token, lease.expires_in)

    # -- campaign ------------------------------------------------------------------------

    def start(self) -> None:
        """Campaign in the background; returns at once. Does nothing while campaigning."""
        if self._stop is not None and not self._stop.is_set():
            return
        if self.store.closed:
            raise StoreUnavailableError(f"store {self.store.url} is closed")
        stop = self._stop = shim.CancelEvent()
        self.store._elections.add(self)
        # The previous campaign may still be finishing (on_revoked): the new one waits.
        self._task = shim.spawn(
            self._campaign, self._task, stop, name=f"clustersync-election:{self.name}"
        )

    async def resign(self) -> None:
        """Give leadership up at once (the lease is released in the store, so another
        candidate takes over within about a round trip) and stop campaigning;
        ``on_revoked`` follows in the background. ``start()`` campaigns again."""
        stop, waker = self._stop, self._waker
        if stop is not None:
            stop.set()
        if waker is not None:
            waker.set_threadsafe()
        await self._step_down()

    async def stop(self, timeout: float | None = None) -> bool:
        """Resign, then wait up to ``timeout`` seconds for the campaign to end (its
        ``on_revoked`` to finish). True once it has ended (False if a callback outlived
        ``timeout``); from inside a callback, returns at once."""
        seconds = validate_join_timeout(timeout)
        await self.resign()
        self.store._elections.discard(self)
        task = self._task
        if task is None or shim.in_task(task):
            return True
        return await shim.join(task, seconds)

    async def __aenter__(self) -> Election:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _lost(self) -> None:
        """The lease's ``on_lost`` (from the store's renewer): wake the campaign."""
        waker = self._waker
        if waker is not None:
            waker.set_threadsafe()

    async def _campaign(self, previous: shim.Task | None, stop: shim.CancelEvent) -> None:
        if previous is not None and not shim.in_task(previous):
            await shim.join(previous, None)
        waker = self._waker = shim.Waker()
        executor = shim.callback_executor(1, f"clustersync-election:{self.name}")
        try:
            while not stop.is_set():
                try:
                    if not await self._lease.acquire(cancel=stop):
                        continue
                except StoreUnavailableError:  # only once the store is closed
                    return
                if stop.is_set():  # resigned while the acquisition was under way
                    await self._step_down()
                    return
                await self._lead(stop, waker, executor)
        finally:
            if executor is not None:
                executor.shutdown(wait=False)

    async def _lead(self, stop: shim.CancelEvent, waker: shim.Waker, executor: Any) -> None:
        """Hold leadership until it ends; on_elected, then on_revoked, in order."""
        hold = self._lease.hold
        assert hold is not None
        self._elected.set()
        try:
            await self._call(self._on_elected, executor, hold.token)
            while not stop.is_set():
                waker.clear()
                hold = self._lease.hold
                if hold is None or not self._lease.locked():
                    break
                # Until the local deadline (each renewal moves it on); a loss, resign()
                # or stop() wakes us sooner.
                await waker.wait(max(0.0, hold.deadline - shim.monotonic()), stop)
        finally:
            self._elected.clear()
            await self._step_down()
        await self._call(self._on_revoked, executor)

    async def _step_down(self) -> None:
        """Release the lease if this object still holds it (lost: nothing to free)."""
        async with self._step_down_lock:
            if self._lease.hold is None:
                return
            try:
                await self._lease.release()
            except LockLostError as exc:
                logger.warning("election %r: %s", self.name, exc)

    async def _call(self, callback: Callable[..., Any] | None, executor: Any, *args: Any) -> None:
        if callback is None:
            return
        try:
            await shim.call_user_blocking(callback, *args, executor=executor)
        except Exception:
            logger.exception("election %r: callback %r failed", self.name, callback)

    def _after_fork(self) -> None:
        """In a forked child (threading API): the parent's leadership stays the
        parent's; a campaign started before the fork goes on here as a new candidate."""
        campaigning = self._stop is not None and not self._stop.is_set()
        self._reset()
        if campaigning:
            self.start()
