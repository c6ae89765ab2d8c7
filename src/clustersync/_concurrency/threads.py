"""The threading half of the concurrency shim (see :mod:`clustersync._concurrency.aio`).

Same names, same meaning, built on ``threading``: generated ``_sync/`` code imports this.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

    from ..stores.contract import sync as sync_contract
    from ..stores.registry import StoreKind

T = TypeVar("T")

Lock = threading.Lock
#: What ``acquire(cancel=...)`` accepts in this world.
CancelEvent = threading.Event
Task = threading.Thread
IS_ASYNC = False

# With a cancel event, a thread cannot wait on two events at once; it checks the cancel
# event this often while waiting.
_CANCEL_POLL = 0.01


def event_loop() -> asyncio.AbstractEventLoop | None:
    """No event loop: a threading store belongs to no loop."""
    return None


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


class Gate:
    """One slot, local to this process: ``enter`` takes it (waiting while it is taken),
    ``leave`` frees it, from any thread. A mutex object lets one acquisition at a time
    through, until ``release()`` acknowledges its hold (lost or not). A forked child
    starts with the slot free (the parent's hold is not the child's)."""

    __slots__ = ("_cond", "_pid", "_taken")

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._taken = False
        self._pid = os.getpid()

    def enter(
        self, blocking: bool, timeout: float | None, cancel: CancelEvent | None = None
    ) -> bool:
        if self._pid != os.getpid():
            self._reset()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._taken:
                if not blocking or (cancel is not None and cancel.is_set()):
                    return False
                step = None if cancel is None else _CANCEL_POLL
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    step = remaining if step is None else min(step, remaining)
                self._cond.wait(step)
            self._taken = True
            return True

    def leave(self) -> None:
        with self._cond:
            self._taken = False
            self._cond.notify()


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


class Timer:
    """A delayed call of :func:`call_later`. After :meth:`cancel` returns, the call has
    either completed or will never run (so it may safely act on a resource that the
    caller releases next)."""

    __slots__ = ("_args", "_fn", "_lock", "cancelled")

    def __init__(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self._fn = fn
        self._args = args
        self._lock = threading.Lock()
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            if self.cancelled:
                return
            self.cancelled = True
        _TIMERS.count_cancelled()

    def _run(self) -> None:
        with self._lock:
            if self.cancelled:
                return
            self.cancelled = True
            self._fn(*self._args)


class _TimerThread:
    """One daemon thread runs every delayed call of the process (watchdogs: they are
    rare, quick and need no precision better than :data:`_TIMER_GRANULARITY`).

    Cancelled timers stay in the heap until due or until they are the majority (then the
    heap is rebuilt), so arming and cancelling cost no wake-up of the thread.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self.cancelled = 0  # cancelled timers still in the heap (about)

    def count_cancelled(self) -> None:
        with self._cond:
            self.cancelled += 1

    def call_later(self, delay: float, fn: Callable[..., None], args: tuple[Any, ...]) -> Timer:
        timer = Timer(fn, args)
        entry = (time.monotonic() + delay, next(self._order), timer)
        with self._cond:
            heap = self._heap
            if self.cancelled > 64 and self.cancelled * 2 > len(heap):
                heap[:] = [queued for queued in heap if not queued[2].cancelled]
                heapq.heapify(heap)
                self.cancelled = 0
            heapq.heappush(heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="clustersync-timers", daemon=True
                )
                self._thread.start()
            elif heap[0] is entry:  # due before what the thread waits for
                self._cond.notify()
        return timer

    def _run(self) -> None:
        while True:
            with self._cond:
                heap = self._heap
                due: list[Timer] = []
                now = time.monotonic()
                while heap and heap[0][0] <= now:
                    timer = heapq.heappop(heap)[2]
                    if timer.cancelled:
                        self.cancelled = max(0, self.cancelled - 1)
                    else:
                        due.append(timer)
                if not due:
                    wait = None if not heap else max(heap[0][0] - now, _TIMER_GRANULARITY)
                    self._cond.wait(wait)
                    continue
            for timer in due:
                try:
                    timer._run()
                except Exception:  # a watchdog must not kill the timer thread
                    logging.getLogger("clustersync").exception("delayed call failed")


#: How late a delayed call of the threading world may run.
_TIMER_GRANULARITY = 0.05
_TIMERS = _TimerThread()


def _new_timer_thread_after_fork() -> None:
    """A forked child has no timer thread, and the parent's timers are not its own."""
    global _TIMERS  # noqa: PLW0603 - the child replaces the process-wide timer thread
    _TIMERS = _TimerThread()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_timer_thread_after_fork)


def bounded(fn: Callable[..., T], args: tuple[Any, ...], seconds: float) -> T:
    """``fn(*args)`` in a daemon thread of its own, waited for at most ``seconds``
    (``TimeoutError``; the call goes on in its thread until the driver gives up)."""
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, fn(*args)))
        except BaseException as exc:  # handed to the waiting thread
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name="clustersync-bounded-call", daemon=True).start()
    if not done.wait(seconds):
        raise TimeoutError(f"no answer within {seconds:.2f}s")
    ok, value = outcome[0]
    if ok:
        result: T = value
        return result
    raise value


def call_later(delay: float, fn: Callable[..., None], *args: Any) -> Timer:
    """Call ``fn(*args)`` in about ``delay`` seconds (from a shared timer thread) unless
    the returned timer is cancelled first."""
    return _TIMERS.call_later(delay, fn, args)


def run_blocking(fn: Callable[..., T], *args: Any, executor: Executor | None = None) -> T:
    return fn(*args)


def reopen_after_fork(
    kind: StoreKind, url: str, namespace: str, options: dict[str, Any]
) -> sync_contract.Backend:
    """Open the backend of a store again in a forked child (its own connections)."""
    backend: sync_contract.Backend = kind.load(kind.backend)(url, namespace, options)
    return backend


def adapt_blocking(backend: sync_contract.Backend, *, blocking: bool) -> sync_contract.Backend:
    """Threads call a store with plain methods directly: nothing to adapt."""
    return backend


def cancel_safe(operation: T, undo: Callable[[T], None]) -> T:
    """Threads cannot be cancelled from outside: the operation has already completed."""
    return operation


def shielded(operation: T) -> T:
    """Threads cannot be cancelled from outside: the operation has already completed."""
    return operation


def call_user(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)


def callback_executor(workers: int, name: str) -> Executor | None:
    """Threads run callbacks in their own thread: no executor."""
    return None


def call_user_blocking(
    fn: Callable[..., Any], *args: Any, executor: Executor | None = None
) -> None:
    fn(*args)
