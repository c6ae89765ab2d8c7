"""Routing of store change notifications to the waiters of one store object.

A backend calls the hub (from any thread) with the channel that changed; the hub wakes
the wakers registered for that channel. Registering tells the backend how quickly the
waiters want to hear about changes made by *other* processes (SQLite polls only while
someone waits). Notifications only make waiting fast: every waiter also has a deadline,
so a lost notification costs latency, never correctness.

A ``jobs@<µs>`` message (a job due in that long was added) goes to the ``jobs`` waiters,
each of which may register a filter that skips the wake-up when it will wake up before
that job is due anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from .stores.contract import ANY_CHANNEL, JOBS_CHANNEL, JOBS_DUE_PREFIX, parse_jobs_due

#: ``due_filter(seconds)``: True if a job due in ``seconds`` should wake the waiter.
DueFilter = Callable[[float], bool]


class _Waker(Protocol):
    def set_threadsafe(self) -> None: ...


class ChangeHub:
    """Channel -> registered wakers, thread-safe."""

    def __init__(self, set_watch_interval: Callable[[float | None], None]) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, dict[int, tuple[_Waker, float, DueFilter | None]]] = {}
        self._set_watch_interval = set_watch_interval
        self._watch_interval: float | None = None
        self._next_id = 0

    def __call__(self, channel: str) -> None:
        """The backend's listener: wake the waiters of ``channel`` (all, for ``*``)."""
        due_in = None
        if channel.startswith(JOBS_DUE_PREFIX):
            due_in = parse_jobs_due(channel)
            channel = JOBS_CHANNEL
        with self._lock:
            if channel == ANY_CHANNEL:
                entries = [e for group in self._waiters.values() for e in group.values()]
            else:
                entries = list(self._waiters.get(channel, {}).values())
        for waker, _, due_filter in entries:
            if due_in is None or due_filter is None or due_filter(due_in):
                waker.set_threadsafe()

    @contextmanager
    def listen(
        self,
        channel: str,
        waker: _Waker,
        poll_interval: float,
        due_filter: DueFilter | None = None,
    ) -> Iterator[None]:
        """Wake ``waker`` on changes of ``channel`` while inside the block.

        ``poll_interval`` is the latency wanted for changes made by other processes;
        ``due_filter`` (``jobs`` only) decides about messages announcing a job's due time.
        """
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            self._waiters.setdefault(channel, {})[ident] = (waker, poll_interval, due_filter)
            self._update_watch_locked()
        try:
            yield
        finally:
            with self._lock:
                group = self._waiters.get(channel, {})
                group.pop(ident, None)
                if not group:
                    self._waiters.pop(channel, None)
                self._update_watch_locked()

    def _update_watch_locked(self) -> None:
        intervals = [p for group in self._waiters.values() for _, p, _ in group.values()]
        wanted = min(intervals) if intervals else None
        if wanted != self._watch_interval:
            self._watch_interval = wanted
            self._set_watch_interval(wanted)
