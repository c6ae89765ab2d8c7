"""Fault injection for tests: make a store fail on demand.

    faults = inject_faults(store)             # sync or asyncio Store
    faults.fail({"renew_lease"})              # only renewals fail from now on
    ...
    faults.heal()                             # everything works again
    assert faults.calls["acquire_lease"] >= 2

While failing, the chosen operations raise
:class:`~clustersync.StoreUnavailableError` (with an :class:`InjectedFault` as
``__cause__``, like a driver error) *before* reaching the real engine, so nothing changes
in the store. Every operation call is counted, failing or not. Plumbing (change
listeners, watch intervals, ``close``) is never failed.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from ..exceptions import StoreUnavailableError
from ..stores import contract

__all__ = ["OPERATIONS", "FaultController", "InjectedFault", "inject_faults"]

_T = TypeVar("_T")

#: The store operations that can be made to fail (every operation of the store contract).
OPERATIONS = contract.OPERATIONS


def _select(operations: Iterable[str] | None) -> frozenset[str]:
    if isinstance(operations, str):
        raise TypeError("operations must be a collection of names, e.g. {'renew_lease'}")
    chosen = OPERATIONS if operations is None else frozenset(operations)
    unknown = chosen - OPERATIONS
    if unknown:
        raise ValueError(f"unknown store operations: {sorted(unknown)}")
    return chosen


class InjectedFault(ConnectionError):
    """The stand-in driver error behind an injected ``StoreUnavailableError``."""


class _HasBackend(Protocol):
    _backend: Any


class FaultController:
    """Switches injected faults on and off and counts operation calls (thread-safe)."""

    def __init__(self, store: _HasBackend, backend: Any) -> None:
        self._store = store
        self.backend = backend  # the real backend
        self._lock = threading.Lock()
        self._failing = False
        self._delays: dict[str, float] = {}
        self._lost_answers: Counter[str] = Counter()
        self._errors: dict[str, list[BaseException]] = {}
        self._operations: frozenset[str] = OPERATIONS
        #: Calls per operation name (failed ones included).
        self.calls: Counter[str] = Counter()
        #: Injected failures per operation name.
        self.failures: Counter[str] = Counter()

    @property
    def failing(self) -> bool:
        """Whether the selected operations fail now."""
        return self._failing

    @failing.setter
    def failing(self, value: bool) -> None:
        self._failing = bool(value)

    @property
    def operations(self) -> frozenset[str]:
        """The operations that fail while :attr:`failing` is on."""
        return self._operations

    def fail(self, operations: Iterable[str] | None = None) -> None:
        """Fail ``operations`` (default: all of them) from now on."""
        self._operations = _select(operations)
        self._failing = True

    def slow(self, operations: Iterable[str], seconds: float) -> None:
        """Delay ``operations`` by ``seconds`` (a blocking sleep before the real call, like a
        slow network) until :meth:`heal`."""
        for operation in _select(operations):
            self._delays[operation] = seconds

    def lose_answers(self, operations: Iterable[str], times: int = 1) -> None:
        """The next ``times`` calls of each of ``operations`` reach the store and take
        effect, then fail with ``StoreUnavailableError`` as if the answer was lost on
        the way back: an *unknown outcome*, which a retry must handle."""
        with self._lock:
            for operation in _select(operations):
                self._lost_answers[operation] += times

    def raise_next(self, operation: str, error: BaseException) -> None:
        """The next call of ``operation`` raises ``error`` (any exception: a store bug,
        a driver error the store failed to translate) without reaching the store."""
        (name,) = _select({operation})
        with self._lock:
            self._errors.setdefault(name, []).append(error)

    def heal(self) -> None:
        """Stop failing (the selection of operations is kept for the next ``failing = True``)."""
        self._delays.clear()
        with self._lock:
            self._lost_answers.clear()
            self._errors.clear()
        self._failing = False

    def restore(self) -> None:
        """Put the real backend back into the store (faults no longer apply)."""
        self._failing = False
        self._store._backend = self.backend

    def _guard(self, operation: str, fn: Callable[[], Any]) -> Any:
        with self._lock:
            self.calls[operation] += 1
            fail = self._failing and operation in self._operations
            lose_answer = not fail and self._lost_answers[operation] > 0
            if fail or lose_answer:
                self.failures[operation] += 1
            if lose_answer:
                self._lost_answers[operation] -= 1
            queued = self._errors.get(operation)
            error = queued.pop(0) if queued else None
        if error is not None:
            raise error
        if fail:
            raise _injected(operation, "failed")
        delay = self._delays.get(operation)
        if delay:
            time.sleep(delay)
        result = fn()
        if not lose_answer:
            return result
        if inspect.isawaitable(result):

            async def answer_lost() -> Any:
                await result
                raise _injected(operation, "took effect, but its answer was lost")

            return answer_lost()
        raise _injected(operation, "took effect, but its answer was lost")


def _injected(operation: str, what: str) -> StoreUnavailableError:
    error = StoreUnavailableError(f"injected fault: {operation} {what}")
    error.__cause__ = InjectedFault(f"injected fault in {operation}")
    return error


class _FaultyBackend:
    """Wraps a store backend (sync or asyncio): asks the controller before every operation.

    The check runs when the operation is *called*, before an asyncio backend creates its
    coroutine, so the same proxy serves both worlds. Plumbing passes through.
    """

    def __init__(self, backend: Any, controller: FaultController) -> None:
        self.backend = backend
        self._faults = controller

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.backend, name)
        if name not in OPERATIONS:
            return attribute

        def guarded(*args: Any, **kwargs: Any) -> Any:
            return self._faults._guard(name, lambda: attribute(*args, **kwargs))

        return guarded


def inject_faults(store: _HasBackend, operations: Iterable[str] | None = None) -> FaultController:
    """Wrap ``store``'s backend (sync or asyncio ``Store``) so that it can be made to fail.

    Nothing fails until :meth:`FaultController.fail` is called or ``failing`` is set;
    ``operations`` preselects which operations fail then (default: all).
    """
    backend = store._backend
    if isinstance(backend, _FaultyBackend):
        raise ValueError("faults are already injected into this store")
    controller = FaultController(store, backend)
    controller._operations = _select(operations)
    store._backend = _FaultyBackend(backend, controller)
    return controller
