"""The asyncio half of the concurrency shim: the only async code not written once.

``_async/`` modules and the asyncio store drivers import this as ``shim``;
``scripts/unasync.py`` points the generated sync code at
:mod:`clustersync._concurrency.threads`, which has the same names built on threads.
Keep the two files in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..exceptions import ConfigurationError
from ..stores.contract import OPERATIONS

if TYPE_CHECKING:
    from ..stores.contract import aio as aio_contract
    from ..stores.contract import sync as sync_contract
    from ..stores.registry import StoreKind

T = TypeVar("T")

Lock = asyncio.Lock
#: What ``acquire(cancel=...)`` accepts in this world.
CancelEvent = asyncio.Event
Task = asyncio.Task[Any]
IS_ASYNC = True


def event_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop (an asyncio store belongs to it), or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def monotonic() -> float:
    return time.monotonic()


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def wait_for_event(event: CancelEvent, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; True if set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Waker:
    """An event that any thread may set; waited on by this event loop."""

    __slots__ = ("_event", "_loop", "_thread")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._thread = threading.get_ident()

    def set_threadsafe(self) -> None:
        if threading.get_ident() == self._thread:
            self._event.set()
            return
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody waits
            self._loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None, cancel: CancelEvent | None = None) -> bool:
        """Wait until set, ``cancel`` is set or ``timeout`` passes; True if set."""
        if self._event.is_set():
            return True
        if cancel is None:
            try:
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                return False
            return True
        if cancel.is_set():
            return False
        waiters = {
            asyncio.ensure_future(self._event.wait()),
            asyncio.ensure_future(cancel.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self._event.is_set()


class Gate:
    """One slot, local to this process: ``enter`` takes it (waiting while it is taken),
    ``leave`` frees it, from any task. A mutex object lets one acquisition at a time
    through, until ``release()`` acknowledges its hold (lost or not)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def enter(
        self, blocking: bool, timeout: float | None, cancel: CancelEvent | None = None
    ) -> bool:
        if not self._lock.locked():
            await self._lock.acquire()  # free: returns at once
            return True
        if not blocking or (timeout is not None and timeout <= 0):
            return False
        if cancel is not None and cancel.is_set():
            return False
        entering = asyncio.ensure_future(self._lock.acquire())
        waiters: set[asyncio.Future[Any]] = {entering}
        if cancel is not None:
            waiters.add(asyncio.ensure_future(cancel.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                if waiter is not entering:
                    waiter.cancel()
            if not entering.done():
                entering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await entering
        return entering.done() and not entering.cancelled()

    def leave(self) -> None:
        if self._lock.locked():
            self._lock.release()


def spawn(fn: Callable[..., Coroutine[Any, Any, None]], *args: Any, name: str) -> Task:
    """Run ``fn(*args)`` in the background (a task here, a daemon thread when sync)."""
    return asyncio.get_running_loop().create_task(fn(*args), name=name)


def in_task(task: Task | None) -> bool:
    """Whether the caller runs inside ``task``."""
    return task is not None and asyncio.current_task() is task


def cancel_task(task: Task) -> None:
    """Ask a background task to stop (threads instead poll a closed flag)."""
    task.cancel()


async def join(task: Task, timeout: float | None) -> bool:
    """Wait for a background task to end; True if it did within ``timeout``."""
    if task.done():
        return True
    done, _ = await asyncio.wait({task}, timeout=timeout)
    return bool(done)


async def bounded(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], seconds: float) -> T:
    """``await fn(*args)``, cancelled after ``seconds`` (``TimeoutError``)."""
    async with asyncio.timeout(seconds):
        return await fn(*args)


def call_later(delay: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
    """Call ``fn(*args)`` from this event loop in ``delay`` seconds unless the returned
    handle is cancelled first (a shared timer thread when sync)."""
    return asyncio.get_running_loop().call_later(delay, fn, *args)


async def run_blocking(fn: Callable[..., T], *args: Any, executor: Executor | None = None) -> T:
    """Run a blocking call in a worker thread (``executor``, else the default one)."""
    if executor is None:
        return await asyncio.to_thread(fn, *args)
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


class _BlockingBackendAdapter:
    """Serves the asyncio store contract from a store whose operations are plain calls.

    Every operation of the contract (:data:`~clustersync.stores.contract.OPERATIONS`) the
    plain backend has becomes a coroutine method. Calls that may block run on a private
    worker thread: store calls must not queue behind user callbacks in the default
    executor (a lease renewal stuck there could let the lease expire).
    """

    def __init__(self, backend: sync_contract.Backend, *, blocking: bool) -> None:
        self.backend = backend
        self.capabilities = backend.capabilities
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="clustersync-store")
            if blocking
            else None
        )
        for name in OPERATIONS:
            operation = getattr(backend, name, None)
            if operation is not None:
                setattr(self, name, self._serve(operation))

    def _serve(self, operation: Callable[..., T]) -> Callable[..., Awaitable[T]]:
        executor = self._executor
        if executor is None:

            async def inline(*args: Any) -> T:
                return operation(*args)

            return inline

        async def threaded(*args: Any) -> T:
            return await asyncio.get_running_loop().run_in_executor(executor, operation, *args)

        return threaded

    def set_listener(self, listener: Callable[[str], None] | None) -> None:
        self.backend.set_listener(listener)

    def set_watch_interval(self, seconds: float | None) -> None:
        self.backend.set_watch_interval(seconds)

    async def close(self) -> None:
        if self._executor is None:
            self.backend.close()
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, self.backend.close)
        self._executor.shutdown(wait=False)


def reopen_after_fork(
    kind: StoreKind, url: str, namespace: str, options: dict[str, Any]
) -> aio_contract.Backend:
    """An asyncio store cannot follow ``os.fork()``: its event loop and connections stay
    in the parent."""
    raise ConfigurationError(
        f"this asyncio store ({kind.name}) was opened before os.fork(); an event loop does"
        " not survive a fork: open the store in the child process instead (e.g. in the"
        " FastAPI/Starlette lifespan, or a gunicorn post_fork hook)"
    )


def adapt_blocking(backend: sync_contract.Backend, *, blocking: bool) -> aio_contract.Backend:
    """The asyncio form of a store backend with plain methods (see
    :class:`_BlockingBackendAdapter`)."""
    return cast("aio_contract.Backend", _BlockingBackendAdapter(backend, blocking=blocking))


async def cancel_safe(operation: Awaitable[T], undo: Callable[[T], Awaitable[None]]) -> T:
    """Await ``operation``; if the caller is cancelled meanwhile, let the operation finish,
    then ``undo`` its result and re-raise the cancellation (so a cancelled ``acquire``
    never leaves a lease behind)."""
    future = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await undo(await future)
        raise


async def shielded(operation: Awaitable[T]) -> T:
    """Await ``operation`` to its end even if the caller is cancelled meanwhile (cleanup
    that must reach the store; a second cancellation leaves it running on its own)."""
    return await asyncio.shield(asyncio.ensure_future(operation))


async def call_user(fn: Callable[..., Any], *args: Any) -> None:
    """Call a user callback; coroutine functions are awaited, plain ones called inline."""
    result = fn(*args)
    if inspect.isawaitable(result):
        await result


def callback_executor(workers: int, name: str) -> ThreadPoolExecutor | None:
    """Worker threads of our own for plain callbacks. Not the loop's default executor:
    drivers resolve host names there (``loop.getaddrinfo``), so long callbacks filling it
    would stall every reconnection, and with it lease and claim renewals."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)


async def call_user_blocking(
    fn: Callable[..., Any], *args: Any, executor: Executor | None = None
) -> None:
    """Like :func:`call_user`, but a plain function runs in a worker thread of
    ``executor`` (see :func:`callback_executor`) so that a slow sync callback cannot
    stall the event loop (lease renewal keeps running). The caller's context variables
    go with it."""
    if inspect.iscoroutinefunction(fn):
        await fn(*args)
        return
    context = contextvars.copy_context()
    result = await asyncio.get_running_loop().run_in_executor(executor, context.run, fn, *args)
    if inspect.isawaitable(result):
        await result
