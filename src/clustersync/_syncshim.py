"""The threading half of the concurrency shim (see :mod:`clustersync._aioshim`).

Same names, same meaning, built on ``threading``: generated ``_sync/`` code imports this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

Lock = threading.Lock
#: What ``acquire(cancel=...)`` accepts in this world.
CancelEvent = threading.Event
Task = threading.Thread
IS_ASYNC = False

# With a cancel event, a thread cannot wait on two events at once; it checks the cancel
# event this often while waiting.
_CANCEL_POLL = 0.01


def monotonic() -> float:
    return time.monotonic()


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def wait_for_event(event: CancelEvent, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; True if set."""
    return event.wait(timeout)


class Waker:
    """An event that any thread may set."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set_threadsafe(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None, cancel: CancelEvent | None = None) -> bool:
        """Wait until set, ``cancel`` is set or ``timeout`` passes; True if set."""
        if cancel is None:
            return self._event.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not cancel.is_set():
            step = _CANCEL_POLL
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    break
            if self._event.wait(step):
                return True
        return self._event.is_set()


def spawn(fn: Callable[..., None], *args: Any, name: str) -> Task:
    """Run ``fn(*args)`` in a background daemon thread."""
    thread = threading.Thread(target=fn, args=args, name=name, daemon=True)
    thread.start()
    return thread


def in_task(task: Task | None) -> bool:
    """Whether the caller runs inside ``task``."""
    return task is not None and threading.current_thread() is task


def cancel_task(task: Task) -> None:
    """Threads cannot be cancelled; they poll a closed flag instead."""


def join(task: Task, timeout: float | None) -> bool:
    """Wait for a background thread to end; True if it did within ``timeout``."""
    task.join(timeout)
    return not task.is_alive()


def io_executor(name: str) -> Executor | None:
    """Threads call the store directly; no executor needed."""
    return None


def run_blocking(fn: Callable[..., T], *args: Any, executor: Executor | None = None) -> T:
    return fn(*args)


def cancel_safe(operation: T, undo: Callable[[T], None]) -> T:
    """Threads cannot be cancelled from outside: the operation has already completed."""
    return operation


def call_user(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)


def call_user_blocking(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)
