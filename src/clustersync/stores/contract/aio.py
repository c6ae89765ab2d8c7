"""The store contract as asyncio protocols: the source of truth.

``scripts/unasync.py`` generates :mod:`clustersync.stores.contract.sync` from this file
(the same protocols with plain methods). A store implements one of the two:

- a *blocking* store (memory, SQLite, or any store whose calls are plain functions)
  implements the sync :class:`~clustersync.stores.contract.sync.Backend`; the asyncio API
  runs its calls on a private worker thread;
- a store with an asyncio driver (Redis, PostgreSQL) implements :class:`Backend` below for
  the asyncio API and the sync one for the threading API.

Every operation is atomic in the store (one round trip on a server), acts on one
namespace (given when the backend was opened), judges time by the store's own clock, and
raises :class:`~clustersync.StoreUnavailableError` (with the driver error as
``__cause__``) for any failure of the store, :class:`~clustersync.DuplicateJobError` for a
duplicate key, and nothing else. A ``StoreUnavailableError`` on a write means "outcome
unknown": the write may have happened.

The operation lists (:data:`clustersync.stores.contract.OPERATIONS`), fault injection
and the asyncio adapter of blocking stores are derived from these classes: adding an
operation means adding it here and implementing it in each store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .records import (
    AcquireResult,
    ChangeListener,
    ClaimedJob,
    FailedJobRecord,
    GrantResult,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    RecurringJobRecord,
    RunRecord,
    StoredJob,
)


class Backend(Protocol):
    """The operations every store provides on one namespace."""

    #: The optional capabilities this backend offers, as opened (names of
    #: :data:`clustersync.stores.contract.CAPABILITIES`, e.g. ``{"grant"}``).
    capabilities: frozenset[str]

    async def now_us(self) -> int:
        """The store's clock, in microseconds since the epoch."""
        ...

    # -- leases (Mutex, Election, recurring jobs) -----------------------------------------

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult:
        """Take the lease ``name`` for ``owner`` for ``ttl`` seconds if it is free or
        expired, minting the next fencing token of the name (strictly greater than every
        token the name had, across restarts of a durable store). If a live lease exists,
        ``retry_after`` is how long it still lives. An ``owner`` that already holds the
        live lease gets it again, with its token and a fresh ``ttl``: a retry after an
        unknown outcome never orphans the lease the first attempt took."""
        ...

    async def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool:
        """Extend the live lease to ``ttl`` seconds from now, only if ``owner`` and
        ``token`` hold it; False otherwise (expired, released or taken over)."""
        ...

    async def release_lease(self, name: str, owner: str, token: int) -> bool:
        """End the live lease only if ``owner`` and ``token`` hold it, keeping the fencing
        counter, and wake the waiters of the name; False otherwise."""
        ...

    async def break_lease(self, name: str) -> bool:
        """End the live lease ``name`` whoever holds it (an operator's override),
        keeping the fencing counter so that the next acquisition gets a higher token, and
        wake the waiters of the name as a release does. Its holder learns it at its next
        renewal. True if a live lease was ended."""
        ...

    async def list_leases(self) -> list[LeaseInfo]:
        """The live leases of the namespace, sorted by name."""
        ...

    async def read_lease(self, name: str) -> LeaseInfo | None:
        """The live lease ``name`` (who holds it, its token, how long it still lives), or
        None if it is free or expired: one read, whatever the size of the namespace."""
        ...

    # -- slots (Semaphore): up to ``limit`` fenced leases on one name ---------------------

    async def acquire_slot(
        self, name: str, owner: str, limit: int, ttl: float, wait: float
    ) -> AcquireResult:
        """Take a slot of ``name`` for ``owner`` for ``ttl`` seconds, minting the next
        token of the name's one counter (strictly greater than every token any slot of
        the name had, across restarts of a durable store), if the live slots plus the
        live waiters ahead of ``owner`` in the name's line are fewer than ``limit``.

        The line keeps waiters in order of arrival: a refused ``owner`` with ``wait > 0``
        takes its place at the end (or keeps its place: the first arrival counts) for
        ``wait`` seconds, renewed by its next attempts; ``wait = 0`` never queues (a
        non-blocking attempt), and then every waiter is ahead. Taking a slot leaves the
        line. When refused, ``retry_after`` is how long until the earliest of the live
        slots and of the waiters ahead expires. A store may renew a place only once less
        than half of ``wait`` is left (so that waiting writes little). An ``owner`` that
        already holds a live slot of the name gets it again, with its token and a fresh
        ``ttl``, whatever ``limit`` says (a retry after an unknown outcome). Slot names
        are apart from lease names: ``acquire_lease(name)`` never counts them, nor they
        it."""
        ...

    async def leave_slot_queue(self, name: str, owner: str) -> bool:
        """Take ``owner`` out of the line of ``name`` (a waiter that gives up) and, if it
        was in it, wake the waiters of the name (``lease_channel(name)``): those behind
        it may go. True if it was in the line."""
        ...

    async def renew_slot(self, name: str, owner: str, token: int, ttl: float) -> bool:
        """Extend the live slot of ``owner`` with ``token`` to ``ttl`` seconds from now;
        False if there is none (expired, released or broken)."""
        ...

    async def release_slot(self, name: str, owner: str, token: int) -> bool:
        """End the live slot of ``owner`` with ``token`` (the counter is kept) and wake
        the waiters of the name (``lease_channel(name)``); False if there is none."""
        ...

    async def break_slots(self, name: str, token: int | None) -> int:
        """End the live slot of ``name`` with ``token`` whoever holds it, or every live
        slot of the name when ``token`` is None (an operator's override), and wake the
        waiters as a release does. Their holders learn it at their next renewal. Returns
        how many live slots were ended."""
        ...

    async def list_slots(self, name: str) -> list[LeaseInfo]:
        """The live slots of ``name`` (as :class:`LeaseInfo` with ``name``), sorted by
        token."""
        ...

    # -- recurring job metadata -----------------------------------------------------------

    async def get_job_metadata(self, key: str) -> JobMetadataRecord:
        """``last_finished`` of recurring job ``key`` (None if it never ran), whether it
        is paused or triggered, and the store's clock."""
        ...

    async def register_recurring_job(
        self, key: str, instance: str, schedule: str, next_run_us: int | None, ttl: float
    ) -> None:
        """Record for ``ttl`` seconds that ``instance`` schedules recurring job ``key``,
        described by ``schedule``, and plans its next run at ``next_run_us``: the
        instance's heartbeat. Creates the job's record (not paused) if it has none."""
        ...

    async def unregister_recurring_job(self, key: str, instance: str) -> None:
        """``instance`` no longer schedules ``key`` (its job was closed)."""
        ...

    async def start_job_run(self, key: str, lease_name: str, owner: str, token: int) -> bool:
        """Record that a run of ``key`` starts now and consume a pending trigger, only
        while ``owner`` and ``token`` hold the live lease ``lease_name`` and the job is
        not paused (or is triggered); False otherwise: the run must not start."""
        ...

    async def set_job_finished(
        self,
        key: str,
        lease_name: str,
        owner: str,
        token: int,
        outcome: str,
        error: str | None,
    ) -> bool:
        """Set ``last_finished`` of ``key`` to the store's clock with the run's
        ``outcome`` (``"ok"`` or ``"error"``) and ``error``, only while ``owner`` and
        ``token`` hold the live lease ``lease_name``; False otherwise."""
        ...

    async def control_recurring_job(self, key: str, action: str) -> bool:
        """``"pause"``, ``"resume"`` or ``"trigger"`` recurring job ``key`` for every
        instance, persistently, and wake its instances (``job_channel(key)``). False if
        no instance ever registered the key."""
        ...

    async def list_recurring_jobs(self) -> list[RecurringJobRecord]:
        """Every recurring job registered in the namespace, sorted by key."""
        ...

    # -- one-shot jobs --------------------------------------------------------------------

    async def put_jobs(self, jobs: Sequence[NewJob]) -> None:
        """Store ``jobs``, all or nothing: a key repeated in ``jobs``, or already stored
        with another run time or props, raises ``DuplicateJobError`` (naming the first
        such key) and stores none. A job already stored identically is left as it is (a
        retry after an unknown outcome; see ``conflicting_job``). Wakes the schedulers
        of the namespace."""
        ...

    async def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]:
        """Claim up to ``limit`` jobs whose due time has come (``run_at`` while pending,
        claim expiry while claimed), earliest first then by key: each gets ``owner`` and
        a new claim number, and is due again ``claim_ttl`` seconds from now unless
        completed or renewed. A job is claimed by at most one call at a time."""
        ...

    async def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]:
        """Extend the live claims ``(key, claim)`` of ``owner`` to ``claim_ttl`` seconds
        from now; return the keys renewed (the others were lost)."""
        ...

    async def complete_job(
        self, key: str, owner: str, claim: int, outcome: str, error: str | None
    ) -> bool:
        """Delete job ``key`` (its run is done: ``outcome`` ``"ok"``, or ``"error"`` with
        no retry), only if ``owner`` holds claim ``claim`` of it; remember the run."""
        ...

    async def retry_job(
        self,
        key: str,
        owner: str,
        claim: int,
        delay: float,
        error: str | None,
        count_attempt: bool,
    ) -> bool:
        """Make job ``key`` pending again, due ``delay`` seconds from now, only if
        ``owner`` holds claim ``claim`` of it: a failed attempt to run again
        (``count_attempt``; remembered as a run with outcome ``"retry"``), or a claim
        given back without running (no handler here: the attempt does not count)."""
        ...

    async def fail_job(self, key: str, owner: str, claim: int, error: str) -> bool:
        """Keep job ``key`` as failed (its attempts are used up), only if ``owner`` holds
        claim ``claim`` of it: it never fires by itself again, and is no longer pending.
        Remembers the run (outcome ``"error"``)."""
        ...

    async def list_failed_jobs(self) -> list[FailedJobRecord]:
        """The failed jobs, sorted by key."""
        ...

    async def retry_failed_job(self, key: str) -> bool:
        """Make the failed job ``key`` pending again, due now, with a fresh attempt
        count; False if there is no failed job with that key. Wakes the schedulers."""
        ...

    async def recent_runs(self, limit: int) -> list[RunRecord]:
        """The last ``limit`` runs remembered (at most ``RECENT_RUNS_KEPT``), newest
        first: one-shot runs completed, retried or failed, and recurring runs finished."""
        ...

    async def cancel_job(self, key: str) -> bool:
        """Delete job ``key``; True if it was pending (not under a live claim) or failed.
        Wakes the schedulers of the namespace."""
        ...

    async def list_jobs(self) -> list[StoredJob]:
        """The pending jobs (not under a live claim), sorted by ``run_at`` then key."""
        ...

    async def list_jobs_page(
        self, prefix: str, after: str | None, limit: int
    ) -> tuple[list[StoredJob], str | None]:
        """Up to ``limit`` pending jobs whose key starts with ``prefix``, in key order,
        after the key ``after`` (None: from the first), from an index (a page of a
        million jobs costs what a page of ten does); and the cursor of the next page
        (None when there is none). A page may hold fewer than ``limit`` jobs while more
        follow (jobs under a live claim are skipped)."""
        ...

    async def count_jobs(self) -> int:
        """How many one-shot jobs are stored (pending or running), cheaply."""
        ...

    async def next_job_delay(self) -> float | None:
        """Seconds until the earliest job is due (0 if one is due now), None if none."""
        ...

    # -- plumbing (never failed by fault injection) ---------------------------------------

    def set_listener(self, listener: ChangeListener | None) -> None:
        """Call ``listener(channel)`` (from any thread) whenever a lease of the namespace
        is released (``lease_channel(name)``) or its jobs change (``JOBS_CHANNEL``, or
        ``jobs@<µs>`` for a job added that is due in that many microseconds); ``"*"``
        when changes may have been missed. Notifications only make waiting fast: a store
        that cannot push them may stay silent, since every waiter also has a deadline."""
        ...

    def set_watch_interval(self, seconds: float | None) -> None:
        """How quickly the waiters want to hear of changes made by other processes
        (None: nobody waits). A store that polls polls at that interval."""
        ...

    async def close(self) -> None:
        """Release every resource; later operations raise ``StoreUnavailableError``."""
        ...


class GrantHandoff(Protocol):
    """Capability ``"grant"``: a release hands the lease to the first queued waiter.

    A waiter that queues and blocks in :meth:`wait_for_grant` holds the lease when it
    returns a token: no acquire round trip after the wake-up. A granted lease first lives
    ``min(ttl, GRANT_LEASE_MS)``, so that a waiter that died while queued blocks the name
    for at most that long; its holder's renewer extends it to the ttl.
    """

    #: How many waiters of this store may block in :meth:`wait_for_grant` at once (each
    #: may hold a connection while it blocks); the others wait to be notified.
    max_blocked_waiters: int

    def grant_wait(self, ttl: float) -> float:
        """The longest single wait to ask :meth:`wait_for_grant` for, for a lease of
        ``ttl`` seconds (a waiter then calls again: it keeps its place in the queue, and
        a lease broken or expired meanwhile is noticed)."""
        ...

    async def wait_for_grant(self, name: str, owner: str, ttl: float, wait: float) -> GrantResult:
        """Take the lease if it is free, else queue up ``owner`` (or refresh its place)
        and block for up to ``wait`` seconds until a release grants the lease to it. The
        token returned is valid for ``valid_for`` seconds counted from before this call
        was sent."""
        ...

    async def withdraw_waiter(self, name: str, owner: str) -> bool:
        """Leave the queue of ``name``; a grant ``owner`` never saw is passed on as if
        released. True if there was one."""
        ...
