"""Clocks: the system clock and a manual clock for tests.

Stores without a clock of their own (memory, SQLite) judge lease expiry with the clock
they were opened with, so tests can move time forward instead of sleeping. Orchestration
waits (sleeps, timeouts) always use real time.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time as float seconds since the Unix epoch."""

    def time(self) -> float: ...


class SystemClock:
    """The host's wall clock (``time.time``)."""

    def time(self) -> float:
        return time.time()


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that only moves when told to; thread-safe.

    Stores opened with it register a listener so that :meth:`advance` wakes every waiter
    (leases may have expired, jobs may have become due).
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def time(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0) and wake the stores that use this clock."""
        if not math.isfinite(seconds):  # NaN or infinity would poison every later reading
            raise ValueError(f"a clock can only advance by a finite time, got {seconds!r}")
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def add_listener(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._listeners.remove(listener)
