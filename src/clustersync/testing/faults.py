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

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from ..backends.base import (
    AcquireResult,
    BlockingEngine,
    ChangeListener,
    ClaimedJob,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    StoredJob,
)
from ..exceptions import StoreUnavailableError

__all__ = ["OPERATIONS", "FaultController", "InjectedFault", "inject_faults"]

_T = TypeVar("_T")

#: The store operations that can be made to fail.
OPERATIONS = frozenset(
    {
        "now_us",
        "acquire_lease",
        "renew_lease",
        "release_lease",
        "list_leases",
        "get_job_metadata",
        "set_job_finished",
        "put_jobs",
        "claim_due_jobs",
        "renew_job_claims",
        "complete_job",
        "cancel_job",
        "list_jobs",
        "next_job_delay",
    }
)


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


class _HasEngine(Protocol):
    _engine: BlockingEngine


class FaultController:
    """Switches injected faults on and off and counts operation calls (thread-safe)."""

    def __init__(self, store: _HasEngine, engine: BlockingEngine) -> None:
        self._store = store
        self.engine = engine  # the real engine
        self._lock = threading.Lock()
        self._failing = False
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

    def heal(self) -> None:
        """Stop failing (the selection of operations is kept for the next ``failing = True``)."""
        self._failing = False

    def restore(self) -> None:
        """Put the real engine back into the store (faults no longer apply)."""
        self._failing = False
        self._store._engine = self.engine

    def _guard(self, operation: str, fn: Callable[[], _T]) -> _T:
        with self._lock:
            self.calls[operation] += 1
            fail = self._failing and operation in self._operations
            if fail:
                self.failures[operation] += 1
        if fail:
            cause = InjectedFault(f"injected fault in {operation}")
            raise StoreUnavailableError(f"injected fault: {operation} failed") from cause
        return fn()


class _FaultyEngine:
    """A :class:`BlockingEngine` that asks its controller before every operation."""

    def __init__(self, engine: BlockingEngine, controller: FaultController) -> None:
        self._engine = engine
        self._faults = controller
        self.blocking_io = engine.blocking_io

    def now_us(self) -> int:
        return self._faults._guard("now_us", self._engine.now_us)

    def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult:
        return self._faults._guard(
            "acquire_lease", lambda: self._engine.acquire_lease(name, owner, ttl)
        )

    def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool:
        return self._faults._guard(
            "renew_lease", lambda: self._engine.renew_lease(name, owner, token, ttl)
        )

    def release_lease(self, name: str, owner: str, token: int) -> bool:
        return self._faults._guard(
            "release_lease", lambda: self._engine.release_lease(name, owner, token)
        )

    def list_leases(self) -> list[LeaseInfo]:
        return self._faults._guard("list_leases", self._engine.list_leases)

    def get_job_metadata(self, key: str) -> JobMetadataRecord:
        return self._faults._guard("get_job_metadata", lambda: self._engine.get_job_metadata(key))

    def set_job_finished(self, key: str, lease_name: str, owner: str, token: int) -> bool:
        return self._faults._guard(
            "set_job_finished",
            lambda: self._engine.set_job_finished(key, lease_name, owner, token),
        )

    def put_jobs(self, jobs: Sequence[NewJob]) -> None:
        self._faults._guard("put_jobs", lambda: self._engine.put_jobs(jobs))

    def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]:
        return self._faults._guard(
            "claim_due_jobs", lambda: self._engine.claim_due_jobs(owner, limit, claim_ttl)
        )

    def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]:
        return self._faults._guard(
            "renew_job_claims", lambda: self._engine.renew_job_claims(owner, claims, claim_ttl)
        )

    def complete_job(self, key: str, owner: str, claim: int) -> bool:
        return self._faults._guard(
            "complete_job", lambda: self._engine.complete_job(key, owner, claim)
        )

    def cancel_job(self, key: str) -> bool:
        return self._faults._guard("cancel_job", lambda: self._engine.cancel_job(key))

    def list_jobs(self) -> list[StoredJob]:
        return self._faults._guard("list_jobs", self._engine.list_jobs)

    def next_job_delay(self) -> float | None:
        return self._faults._guard("next_job_delay", self._engine.next_job_delay)

    # -- plumbing: passed through, never failed ------------------------------------------

    def set_listener(self, listener: ChangeListener | None) -> None:
        self._engine.set_listener(listener)

    def set_watch_interval(self, seconds: float | None) -> None:
        self._engine.set_watch_interval(seconds)

    def close(self) -> None:
        self._engine.close()


def inject_faults(store: _HasEngine, operations: Iterable[str] | None = None) -> FaultController:
    """Wrap ``store``'s engine (sync or asyncio ``Store``) so that it can be made to fail.

    Nothing fails until :meth:`FaultController.fail` is called or ``failing`` is set;
    ``operations`` preselects which operations fail then (default: all).
    """
    engine = store._engine
    if isinstance(engine, _FaultyEngine):
        raise ValueError("faults are already injected into this store")
    controller = FaultController(store, engine)
    controller._operations = _select(operations)
    store._engine = _FaultyEngine(engine, controller)
    return controller
