"""Change notifications from a server store: pushed (Redis pub/sub, PostgreSQL
LISTEN/NOTIFY) or, where the server cannot push them, polled.

A :class:`ChangeFeed` keeps one connection subscribed to a namespace's change channel and
hands every message (a channel name such as ``lease:m:x`` or ``jobs``) to the store's
listener. The first subscription is made before ``open_store`` returns, so nothing
published after that is missed while connected; when the connection breaks it reconnects
with capped backoff and wakes every waiter (``*``) because messages may have been missed.

A :class:`ChangePoller` asks the store instead, at the pace the store chooses, and only
while someone waits (PostgreSQL with ``wakeups="poll"``, e.g. behind a
transaction-pooling PgBouncer, where LISTEN does not work).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from ..._concurrency import aio as shim
from ..._core.backoff import Backoff
from ..contract import ANY_CHANNEL, ChangeListener

logger = logging.getLogger("clustersync.notify")

C = TypeVar("C")
#: What one receive got: the channels that changed, and whether anything arrived.
Received = tuple[list[str], bool]

#: How long one receive waits before the reader checks whether the feed was closed.
POLL = 0.1
#: How often the reader asks the server for an answer on a quiet connection.
KEEPALIVE = 5.0


class _Replaced(Exception):
    """The feed was asked to replace its connection (:meth:`ChangeFeed.reset`)."""


class PushNotifications:
    """The listener plumbing shared by backends whose server pushes changes."""

    _listener: ChangeListener | None = None

    def set_listener(self, listener: ChangeListener | None) -> None:
        self._listener = listener

    def set_watch_interval(self, seconds: float | None) -> None:
        """Nothing to poll: the server pushes changes."""

    def _notify(self, channel: str) -> None:
        listener = self._listener
        if listener is not None:
            listener(channel)


class ChangeFeed(Generic[C]):
    """One subscribed connection, read by a background task (asyncio) or thread (sync)."""

    def __init__(
        self,
        *,
        what: str,
        connect: Callable[[], Awaitable[C]],
        receive: Callable[[C], Awaitable[Received]],
        disconnect: Callable[[C], Awaitable[None]],
        notify: Callable[[str], None],
        errors: tuple[type[BaseException], ...],
        ping: Callable[[C], Awaitable[bool]],
        answer_within: float,
    ) -> None:
        """``receive(conn)`` waits up to :data:`POLL` for messages: the channels that
        changed, and whether anything at all arrived (a keep-alive answer counts).
        ``ping(conn)`` asks the server for an answer: True if it was a round trip that
        got one, False if the answer arrives later through ``receive``. A connection
        that has not been heard from within ``answer_within`` of a ping is replaced: a
        connection can die silently (a broken middlebox), and waiters would otherwise
        fall back on their deadlines for good."""
        self._what = what
        self._connect = connect
        self._receive = receive
        self._ping = ping
        self._answer_within = answer_within
        self._disconnect = disconnect
        self._notify = notify
        self._errors = errors
        self._conn: C | None = None
        self._reader: shim.Task | None = None
        self._closed = False
        self._reset = False
        self._waker: shim.Waker | None = None

    async def start(self, *, wait: bool = True) -> None:
        """Subscribe (errors propagate to ``open_store``) and start reading; with
        ``wait=False``, start reading at once and subscribe in the background (retried
        with backoff, as after a lost connection)."""
        if wait:
            self._conn = await self._connect()
        self._reader = shim.spawn(self._read, name=f"clustersync-{self._what}")

    def reset(self) -> None:
        """Replace the connection soon (within :data:`POLL`): the server it is subscribed
        on may no longer be the one that publishes (a failover). Every waiter is woken
        once the new subscription is made. Callable from any thread."""
        self._reset = True
        waker = self._waker
        if waker is not None:
            waker.set_threadsafe()  # cut a reconnection backoff short

    async def _read(self) -> None:
        self._waker = shim.Waker()
        errors: tuple[type[BaseException], ...] = (*self._errors, _Replaced)
        backoff = Backoff(cap=2.0)
        heard = pinged = shim.monotonic()
        while not self._closed:
            conn = self._conn
            try:
                if self._reset:
                    self._reset = False
                    raise _Replaced(f"{self._what} replaced: the server may have changed")
                if conn is None:
                    conn = self._conn = await self._connect()
                    heard = pinged = shim.monotonic()
                    self._notify(ANY_CHANNEL)  # messages may have been missed meanwhile
                channels, arrived = await self._receive(conn)
                now = shim.monotonic()
                if arrived:
                    heard = now
                elif now - heard > KEEPALIVE + self._answer_within:
                    raise TimeoutError(f"nothing heard for {now - heard:.1f}s, not even a ping")
                if now - pinged >= KEEPALIVE:
                    pinged = now
                    if await self._ping(conn):
                        heard = shim.monotonic()
                backoff.reset()
            except errors as exc:
                if self._closed:
                    return
                delay = 0.0 if isinstance(exc, _Replaced) else backoff.next_delay()
                logger.warning("%s lost; reconnecting in %.2fs: %s", self._what, delay, exc)
                self._conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await self._disconnect(conn)
                self._notify(ANY_CHANNEL)
                if delay > 0 and not self._reset:
                    await self._waker.wait(delay)
                self._waker.clear()
                continue
            for channel in channels:
                self._notify(channel)

    async def close(self) -> None:
        self._closed = True
        waker = self._waker
        if waker is not None:
            waker.set_threadsafe()
        reader = self._reader
        if reader is not None and not shim.in_task(reader):
            shim.cancel_task(reader)
            await shim.join(reader, 2 * POLL + 1)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self._disconnect(conn)


class ChangePoller:
    """Changes found by polling the store, in a background task (a thread when sync).

    While ``interval()`` returns a number of seconds (None: nobody waits, nothing to
    poll), ``poll(fresh)`` runs every that many seconds; it reads what changed and tells
    the store's listener. ``fresh`` is True for the first poll after a pause or an
    error: that reading is a new baseline, and a change may have landed unseen before
    it, so the store should wake every waiter once (they just recheck). :meth:`wake`
    makes the next poll happen at once (call it when ``interval()`` got shorter)."""

    #: How often an idle poller rechecks ``interval()`` without being woken.
    IDLE_RECHECK = 1.0

    def __init__(
        self,
        *,
        what: str,
        poll: Callable[[bool], Awaitable[None]],
        interval: Callable[[], float | None],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self._what = what
        self._poll = poll
        self._interval = interval
        self._errors = errors
        self._waker: shim.Waker | None = None
        self._task: shim.Task | None = None
        self._closed = False

    async def start(self) -> None:
        self._waker = shim.Waker()
        self._task = shim.spawn(self._run, name=f"clustersync-{self._what}")

    def wake(self) -> None:
        """Poll now (from any thread): the interval got shorter, or waiting started."""
        waker = self._waker
        if waker is not None:
            waker.set_threadsafe()

    async def _run(self) -> None:
        waker = self._waker
        assert waker is not None
        backoff = Backoff(cap=2.0)
        fresh = True
        while not self._closed:
            waker.clear()
            every = self._interval()
            if every is None:
                fresh = True  # changes while nobody waits are irrelevant: waiters recheck
                await waker.wait(self.IDLE_RECHECK)
                continue
            try:
                await self._poll(fresh)
                fresh = False
                backoff.reset()
                delay = every
            except self._errors as exc:
                if self._closed:
                    return
                fresh = True
                delay = backoff.next_delay()
                logger.warning("%s failed; retrying in %.2fs: %s", self._what, delay, exc)
            await waker.wait(delay)

    async def close(self) -> None:
        self._closed = True
        self.wake()
        task = self._task
        if task is not None and not shim.in_task(task):
            shim.cancel_task(task)
            await shim.join(task, self.IDLE_RECHECK + 1)
