"""In-process store (``memory://`` and ``memory://NAME``): the reference implementation.

Reach: the threads and event loops of one process. ``memory://NAME`` opened twice in one
process shares the same data; plain ``memory://`` is private to the store object. Every
operation is atomic under one lock and never blocks on I/O, so it is also the model the
other backends are tested against. Leases are judged by the store's clock (the system
clock, or a :class:`~clustersync.testing.ManualClock` passed as ``clock=``).
"""

from __future__ import annotations

import heapq
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._core.clock import SYSTEM_CLOCK, Clock
from ..exceptions import DuplicateJobError
from .contract import (
    ANY_CHANNEL,
    JOBS_CHANNEL,
    AcquireResult,
    ChangeListener,
    ClaimedJob,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    RecurringJobRecord,
    StoredJob,
    conflicting_job,
    job_channel,
    lease_channel,
)
from .options import reject_unknown
from .registry import StoreKind

_US = 1_000_000

KIND = StoreKind(
    name="memory",
    schemes=("memory",),
    backend="clustersync.stores.memory:open_backend",
    url_forms=("memory://[NAME]",),
    reach="process",
    durable=False,
    accepts_clock=True,
    blocking=False,
)


@dataclass(slots=True)
class _Lease:
    owner: str | None
    token: int
    expires_us: int


@dataclass(slots=True)
class _Job:
    run_at_us: int
    props_json: str
    due_us: int  # run_at while pending; claim expiry while claimed
    owner: str | None = None
    claim: int = 0


@dataclass(slots=True)
class _Recurring:
    schedule: str = ""
    paused: bool = False
    triggered: bool = False
    last_started_us: int | None = None
    last_finished_us: int | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    #: instance -> (planned next run µs or None, registration expiry µs)
    instances: dict[str, tuple[int | None, int]] = field(default_factory=dict)


@dataclass(slots=True)
class _Namespace:
    leases: dict[str, _Lease] = field(default_factory=dict)
    recurring: dict[str, _Recurring] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)
    # (due_us, key) with lazy deletion: an entry is valid only if it matches the row.
    due_heap: list[tuple[int, str]] = field(default_factory=list)
    listeners: list[ChangeListener] = field(default_factory=list)

    def push_due(self, key: str, job: _Job) -> None:
        heapq.heappush(self.due_heap, (job.due_us, key))

    def peek_due(self) -> tuple[int, str] | None:
        heap = self.due_heap
        while heap:
            due_us, key = heap[0]
            job = self.jobs.get(key)
            if job is not None and job.due_us == due_us:
                return heap[0]
            heapq.heappop(heap)
        return None


class MemoryState:
    """The shared data behind one ``memory://NAME``: namespaces under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.namespaces: dict[str, _Namespace] = {}

    def namespace(self, name: str) -> _Namespace:
        ns = self.namespaces.get(name)
        if ns is None:
            ns = self.namespaces[name] = _Namespace()
        return ns


_NAMED_STATES: dict[str, MemoryState] = {}
_NAMED_LOCK = threading.Lock()


def _new_named_lock_after_fork() -> None:
    global _NAMED_LOCK  # noqa: PLW0603 - a forked child needs a lock nobody holds
    _NAMED_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_named_lock_after_fork)


def named_state(name: str | None) -> MemoryState:
    """The process-wide state for ``memory://NAME``; a fresh one for ``memory://``."""
    if not name:
        return MemoryState()
    with _NAMED_LOCK:
        state = _NAMED_STATES.get(name)
        if state is None:
            state = _NAMED_STATES[name] = MemoryState()
        return state


def open_backend(url: str, namespace: str, options: dict[str, Any]) -> MemoryBackend:
    """``memory://NAME`` (shared by every store of this process opened with that NAME)
    or ``memory://`` (private). Option: ``clock`` (a test clock)."""
    clock: Clock = options.pop("clock", None) or SYSTEM_CLOCK
    reject_unknown(options, "memory")
    name = url.split("://", 1)[1].strip("/")
    return MemoryBackend(named_state(name), namespace, clock)


class MemoryBackend:
    """Operations on one namespace of a :class:`MemoryState`."""

    capabilities: frozenset[str] = frozenset()

    def __init__(self, state: MemoryState, namespace: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self._state = state
        self._ns_name = namespace
        self._clock = clock
        self._listener: ChangeListener | None = None
        with state.lock:
            self._ns = state.namespace(namespace)

    # -- helpers -------------------------------------------------------------------------

    def now_us(self) -> int:
        return int(self._clock.time() * _US)

    def _notify(self, channel: str) -> None:
        """Tell every store on this namespace (call without holding the state lock)."""
        with self._state.lock:
            listeners = list(self._ns.listeners)
        for listener in listeners:
            listener(channel)

    def set_listener(self, listener: ChangeListener | None) -> None:
        with self._state.lock:
            if self._listener is not None:
                self._ns.listeners.remove(self._listener)
            self._listener = listener
            if listener is not None:
                self._ns.listeners.append(listener)
        add = getattr(self._clock, "add_listener", None)
        remove = getattr(self._clock, "remove_listener", None)
        if listener is not None and add is not None:
            add(self._on_clock_moved)
        elif listener is None and remove is not None:
            remove(self._on_clock_moved)

    def _on_clock_moved(self) -> None:
        listener = self._listener
        if listener is not None:
            listener(ANY_CHANNEL)

    def set_watch_interval(self, seconds: float | None) -> None:
        """Nothing to watch: every change is announced in-process as it happens."""

    def close(self) -> None:
        self.set_listener(None)

    def after_fork(self) -> bool:
        """In a forked child: the data is the child's own copy now (in-process store);
        the lock may have been held by a thread that does not exist here."""
        self._state.lock = threading.Lock()
        if self._listener in self._ns.listeners:  # the parent's hub; the store sets anew
            self._ns.listeners.remove(self._listener)
        self._listener = None
        return True

    # -- leases --------------------------------------------------------------------------

    def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult:
        now = self.now_us()
        with self._state.lock:
            lease = self._ns.leases.get(name)
            if lease is not None and lease.owner is not None and lease.expires_us > now:
                if lease.owner == owner:  # a retry of this acquisition
                    lease.expires_us = now + int(ttl * _US)
                    return AcquireResult(True, token=lease.token)
                return AcquireResult(False, retry_after=(lease.expires_us - now) / _US)
            token = (lease.token if lease is not None else 0) + 1
            self._ns.leases[name] = _Lease(owner, token, now + int(ttl * _US))
        return AcquireResult(True, token=token)

    def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool:
        now = self.now_us()
        with self._state.lock:
            lease = self._ns.leases.get(name)
            if not _owns(lease, owner, token, now):
                return False
            assert lease is not None
            lease.expires_us = now + int(ttl * _US)
            return True

    def release_lease(self, name: str, owner: str, token: int) -> bool:
        now = self.now_us()
        with self._state.lock:
            lease = self._ns.leases.get(name)
            if not _owns(lease, owner, token, now):
                return False
            assert lease is not None
            lease.owner = None  # keep the row: it carries the fencing counter
            lease.expires_us = 0
        self._notify(lease_channel(name))
        return True

    def break_lease(self, name: str) -> bool:
        now = self.now_us()
        with self._state.lock:
            lease = self._ns.leases.get(name)
            if lease is None or lease.owner is None or lease.expires_us <= now:
                return False
            lease.owner = None
            lease.expires_us = 0
        self._notify(lease_channel(name))
        return True

    def list_leases(self) -> list[LeaseInfo]:
        now = self.now_us()
        with self._state.lock:
            return sorted(
                (
                    LeaseInfo(name, lease.owner, lease.token, (lease.expires_us - now) / _US)
                    for name, lease in self._ns.leases.items()
                    if lease.owner is not None and lease.expires_us > now
                ),
                key=lambda info: info.name,
            )

    # -- recurring job metadata ----------------------------------------------------------

    def get_job_metadata(self, key: str) -> JobMetadataRecord:
        now = self.now_us()
        with self._state.lock:
            job = self._ns.recurring.get(key)
            if job is None:
                return JobMetadataRecord(None, now)
            return JobMetadataRecord(job.last_finished_us, now, job.paused, job.triggered)

    def register_recurring_job(
        self, key: str, instance: str, schedule: str, next_run_us: int | None, ttl: float
    ) -> None:
        now = self.now_us()
        with self._state.lock:
            job = self._ns.recurring.setdefault(key, _Recurring())
            job.schedule = schedule
            job.instances[instance] = (next_run_us, now + int(ttl * _US))

    def unregister_recurring_job(self, key: str, instance: str) -> None:
        with self._state.lock:
            job = self._ns.recurring.get(key)
            if job is not None:
                job.instances.pop(instance, None)

    def start_job_run(self, key: str, lease_name: str, owner: str, token: int) -> bool:
        now = self.now_us()
        with self._state.lock:
            if not _owns(self._ns.leases.get(lease_name), owner, token, now):
                return False
            job = self._ns.recurring.setdefault(key, _Recurring())
            if job.paused and not job.triggered:
                return False
            job.triggered = False
            job.last_started_us = now
            return True

    def set_job_finished(
        self,
        key: str,
        lease_name: str,
        owner: str,
        token: int,
        outcome: str,
        error: str | None,
    ) -> bool:
        now = self.now_us()
        with self._state.lock:
            if not _owns(self._ns.leases.get(lease_name), owner, token, now):
                return False
            job = self._ns.recurring.setdefault(key, _Recurring())
            job.last_finished_us = now
            job.last_outcome = outcome
            job.last_error = error
            return True

    def control_recurring_job(self, key: str, action: str) -> bool:
        with self._state.lock:
            job = self._ns.recurring.get(key)
            if job is None:
                return False
            if action == "trigger":
                job.triggered = True
            else:
                job.paused = action == "pause"
        self._notify(job_channel(key))
        return True

    def list_recurring_jobs(self) -> list[RecurringJobRecord]:
        now = self.now_us()
        with self._state.lock:
            records = []
            for key, job in sorted(self._ns.recurring.items()):
                live = [run for run, expires in job.instances.values() if expires > now]
                planned = [run for run in live if run is not None]
                records.append(
                    RecurringJobRecord(
                        key,
                        job.schedule,
                        job.paused,
                        job.triggered,
                        job.last_started_us,
                        job.last_finished_us,
                        job.last_outcome,
                        job.last_error,
                        min(planned) if planned else None,
                        len(live),
                    )
                )
            return records

    # -- one-shot jobs -------------------------------------------------------------------

    def put_jobs(self, jobs: Sequence[NewJob]) -> None:
        with self._state.lock:
            stored = {
                job.key: (row.run_at_us, row.props_json)
                for job in jobs
                if (row := self._ns.jobs.get(job.key)) is not None
            }
            duplicate = conflicting_job(jobs, stored)
            if duplicate is not None:
                raise DuplicateJobError(duplicate)
            for job in jobs:
                if job.key in stored:
                    continue  # stored identically already
                row = _Job(job.run_at_us, job.props_json, job.run_at_us)
                self._ns.jobs[job.key] = row
                self._ns.push_due(job.key, row)
        if jobs:
            self._notify(JOBS_CHANNEL)

    def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]:
        now = self.now_us()
        claimed: list[ClaimedJob] = []
        with self._state.lock:
            rows: list[tuple[str, _Job]] = []
            picked: set[str] = set()
            while len(rows) < limit:
                top = self._ns.peek_due()
                if top is None or top[0] > now:
                    break
                heapq.heappop(self._ns.due_heap)
                key = top[1]
                if key in picked:
                    continue  # a second heap entry of a row claimed by this call
                picked.add(key)
                rows.append((key, self._ns.jobs[key]))
            # Re-index only after selecting, so that a claim that is due again at once
            # (claim_ttl under 1 µs) is not claimed a second time by this same call.
            for key, row in rows:
                row.owner = owner
                row.claim += 1
                row.due_us = now + int(claim_ttl * _US)
                self._ns.push_due(key, row)
                claimed.append(ClaimedJob(key, row.run_at_us, row.props_json, row.claim))
        return claimed

    def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]:
        now = self.now_us()
        renewed: list[str] = []
        with self._state.lock:
            for key, claim in claims:
                row = self._ns.jobs.get(key)
                if row is None or row.owner != owner or row.claim != claim or row.due_us <= now:
                    continue
                row.due_us = now + int(claim_ttl * _US)
                self._ns.push_due(key, row)
                renewed.append(key)
        return renewed

    def complete_job(self, key: str, owner: str, claim: int) -> bool:
        with self._state.lock:
            row = self._ns.jobs.get(key)
            if row is None or row.owner != owner or row.claim != claim:
                return False
            del self._ns.jobs[key]
            return True

    def cancel_job(self, key: str) -> bool:
        now = self.now_us()
        with self._state.lock:
            row = self._ns.jobs.pop(key, None)
        if row is None:
            return False
        self._notify(JOBS_CHANNEL)
        # A job whose callback is running (live claim) was no longer pending.
        return row.owner is None or row.due_us <= now

    def list_jobs(self) -> list[StoredJob]:
        now = self.now_us()
        with self._state.lock:
            pending = [
                StoredJob(key, row.run_at_us, row.props_json)
                for key, row in self._ns.jobs.items()
                if row.owner is None or row.due_us <= now
            ]
        pending.sort(key=lambda job: (job.run_at_us, job.key))
        return pending

    def list_jobs_page(
        self, prefix: str, after: str | None, limit: int
    ) -> tuple[list[StoredJob], str | None]:
        now = self.now_us()
        with self._state.lock:
            keys = sorted(
                key
                for key in self._ns.jobs
                if key.startswith(prefix) and (after is None or key > after)
            )[:limit]
            page = [
                StoredJob(key, row.run_at_us, row.props_json)
                for key in keys
                if (row := self._ns.jobs[key]).owner is None or row.due_us <= now
            ]
        return page, (keys[-1] if len(keys) == limit else None)

    def count_jobs(self) -> int:
        with self._state.lock:
            return len(self._ns.jobs)

    def next_job_delay(self) -> float | None:
        now = self.now_us()
        with self._state.lock:
            top = self._ns.peek_due()
        if top is None:
            return None
        return max(0.0, (top[0] - now) / _US)


def _owns(lease: _Lease | None, owner: str, token: int, now_us: int) -> bool:
    return (
        lease is not None
        and lease.owner == owner
        and lease.token == token
        and lease.expires_us > now_us
    )
