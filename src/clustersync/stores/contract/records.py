"""The values the store operations take and return, and the change channels.

Times inside a store are judged by the store's own clock; operations return relative
durations (seconds) rather than absolute times, so that clients never compare clocks.
Absolute times that must be stored (a one-shot job's ``run_at``) are microseconds since
the epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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


#: Actions of ``control_recurring_job``.
RECURRING_JOB_ACTIONS = ("pause", "resume", "trigger")


def job_channel(key: str) -> str:
    """The notification channel of one recurring job (paused, resumed or triggered)."""
    return "job:" + key


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
    """Recurring job metadata plus the store's current time (both µs since the epoch):
    what an instance needs to decide whether to run the job now."""

    last_finished_us: int | None
    store_now_us: int
    #: Paused cluster-wide: no run starts, except a triggered one.
    paused: bool = False
    #: An extra run was asked for (``trigger``) and has not started yet.
    triggered: bool = False


@dataclass(frozen=True, slots=True)
class RecurringJobRecord:
    """A recurring job as registered in the store (times: µs since the epoch)."""

    key: str
    #: A readable description of its schedule ("every 5m"), as its instances gave it.
    schedule: str
    paused: bool
    triggered: bool
    last_started_us: int | None
    last_finished_us: int | None
    #: ``"ok"`` or ``"error"`` for the last run that finished, else None.
    last_outcome: str | None
    #: The one-line error of the last run, if it failed.
    last_error: str | None
    #: The earliest next run the live instances plan (None: none plans one).
    next_run_us: int | None
    #: How many live instances schedule it (registrations not expired).
    instances: int


def conflicting_job(jobs: Sequence[NewJob], stored: Mapping[str, tuple[int, str]]) -> str | None:
    """The first key of ``jobs`` that makes storing them a duplicate, or None.

    ``stored`` maps the keys of ``jobs`` already in the store to their ``(run_at_us,
    props_json)``. A key repeated within ``jobs`` is a duplicate; a stored key is one
    unless the stored job is identical (same run time and props): storing an identical
    job again is a retry of the same call, and succeeds without storing anything.
    """
    seen: set[str] = set()
    for job in jobs:
        if job.key in seen:
            return job.key
        seen.add(job.key)
        existing = stored.get(job.key)
        if existing is not None and existing != (job.run_at_us, job.props_json):
            return job.key
    return None


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix`` (None:
    there is none, e.g. for ``""``): keys starting with ``prefix`` are exactly those with
    ``prefix <= key < prefix_end(prefix)``, in code point (UTF-8 byte) order."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            step = 0xE000 if last + 1 == 0xD800 else last + 1  # no lone surrogates
            return "".join(chars) + chr(step)
    return None
