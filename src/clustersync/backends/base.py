"""The operations every backend provides, and the records they return.

Leases (used by Mutex and recurring jobs):
    ``acquire_lease`` — take the lease if it is free or expired, minting the next fencing
    token; ``renew_lease`` / ``release_lease`` — only if the caller still owns the live
    lease (owner id and token both match). Redis with ``handoff="grant"`` adds
    ``wait_for_grant`` / ``withdraw_waiter``: a queue of waiters to which a release hands
    the lease directly (see :mod:`clustersync.backends.redis_lua`).
One-shot jobs:
    ``put_jobs`` (all or nothing, duplicate keys rejected), ``claim_due_jobs`` (atomically
    lease due jobs to one owner), ``renew_job_claims``, ``complete_job`` (owner-checked
    delete), ``cancel_job``, ``list_jobs``, and ``next_job_delay``.
Recurring-job metadata:
    ``get_job_metadata`` and ``set_job_finished`` (written only by the lease holder).

All times inside a store are judged by the store's own clock; operations return relative
durations (seconds) rather than absolute times so that clients never compare clocks.
Backends raise :class:`~clustersync.exceptions.StoreUnavailableError` for any driver
failure and ``DuplicateJobError`` for duplicates; nothing else escapes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

#: Called with the name of the channel that changed, from any thread.
#: ``ANY_CHANNEL`` means "something changed, recheck everything".
ChangeListener = Callable[[str], None]
ANY_CHANNEL = "*"
JOBS_CHANNEL = "jobs"
#: ``"jobs@<µs>"``: a job due in that many microseconds (store clock, when the message
#: was sent) was added. Schedulers that already plan to wake up before it need not
#: reread the store; any other change of jobs is a plain ``JOBS_CHANNEL``.
JOBS_DUE_PREFIX = JOBS_CHANNEL + "@"


#: Life of a lease that a release hands to a queued waiter (``handoff="grant"``), until
#: the new holder's renewer extends it to its ttl: a waiter that died while queued keeps
#: the lock for no longer than this, not for its whole ttl.
GRANT_LEASE_MS = 2000


def parse_jobs_due(message: str) -> float | None:
    """Seconds until the job announced by a ``jobs@<µs>`` message is due, else None."""
    if not message.startswith(JOBS_DUE_PREFIX):
        return None
    try:
        return int(message[len(JOBS_DUE_PREFIX) :]) / 1_000_000
    except ValueError:
        return None


def lease_channel(lease_name: str) -> str:
    """The notification channel of one lease (released or taken over)."""
    return "lease:" + lease_name


@dataclass(frozen=True, slots=True)
class AcquireResult:
    """Outcome of one acquisition attempt.

    ``token`` is set when acquired; otherwise ``retry_after`` is how long (store clock) the
    current lease still has to live, so a waiter knows when expiry would free it.
    """

    acquired: bool
    token: int | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class GrantResult:
    """Outcome of one wait in a grant queue (``handoff="grant"``).

    ``token`` is set when the lease is ours, either taken or handed over by a release;
    it then lives for at least ``valid_for`` seconds counted from *before* the wait was
    sent. Otherwise ``retry_after`` is how long the current lease still has to live.
    """

    token: int | None
    valid_for: float = 0.0
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A live lease, for listing (``clustersync locks``)."""

    name: str
    owner: str
    token: int
    expires_in: float


@dataclass(frozen=True, slots=True)
class NewJob:
    """A one-shot job to store: key, run time (µs since the epoch) and JSON props."""

    key: str
    run_at_us: int
    props_json: str


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A pending one-shot job as stored."""

    key: str
    run_at_us: int
    props_json: str


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A due job leased to one scheduler; ``claim`` identifies this claim for completion."""

    key: str
    run_at_us: int
    props_json: str
    claim: int


@dataclass(frozen=True, slots=True)
class JobMetadataRecord:
    """Recurring job metadata plus the store's current time (both µs since the epoch)."""

    last_finished_us: int | None
    store_now_us: int


class BlockingEngine(Protocol):
    """A backend whose operations are plain (blocking or instant) function calls.

    Memory and SQLite implement this; the asyncio world runs blocking ones in a thread.
    """

    #: True when calls may block on I/O (run them off the event loop).
    blocking_io: bool

    def now_us(self) -> int: ...

    def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult: ...

    def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool: ...

    def release_lease(self, name: str, owner: str, token: int) -> bool: ...

    def list_leases(self) -> list[LeaseInfo]: ...

    def get_job_metadata(self, key: str) -> JobMetadataRecord: ...

    def set_job_finished(self, key: str, lease_name: str, owner: str, token: int) -> bool: ...

    def put_jobs(self, jobs: Sequence[NewJob]) -> None: ...

    def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]: ...

    def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]: ...

    def complete_job(self, key: str, owner: str, claim: int) -> bool: ...

    def cancel_job(self, key: str) -> bool: ...

    def list_jobs(self) -> list[StoredJob]: ...

    def next_job_delay(self) -> float | None: ...

    def set_listener(self, listener: ChangeListener | None) -> None: ...

    def set_watch_interval(self, seconds: float | None) -> None: ...

    def close(self) -> None: ...
