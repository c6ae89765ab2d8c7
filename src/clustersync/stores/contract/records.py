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
GRANT_LEASE_MS = 1000


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
    ``handed_over``: the token came from a release while this call waited (not from a
    free lease).
    """

    token: int | None
    valid_for: float = 0.0
    retry_after: float = 0.0
    handed_over: bool = False


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A live lease, for listing (``clustersync locks``)."""

    name: str
    owner: str
    token: int
    expires_in: float


@dataclass(frozen=True, slots=True)
class NewJob:
    """A one-shot job to store: key, run time (µs since the epoch) and JSON props, with
    the identity of the instance that scheduled it and its trace context (a W3C
    ``traceparent``, or ``""``)."""

    key: str
    run_at_us: int
    props_json: str
    scheduled_by: str = ""
    trace: str = ""


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A pending one-shot job as stored."""

    key: str
    run_at_us: int
    props_json: str


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A due job leased to one scheduler; ``claim`` identifies this claim for completion.

    ``attempt`` counts the claims of the job since it was stored (or retried from the
    failed jobs), this one included: a run cut short by a crash counts. ``due_us`` is when
    this attempt was due (``run_at_us`` for the first, the retry time after), and
    ``claimed_us`` the store's clock when it was claimed."""

    key: str
    run_at_us: int
    props_json: str
    claim: int
    attempt: int = 1
    due_us: int = 0
    claimed_us: int = 0
    scheduled_by: str = ""
    trace: str = ""


@dataclass(frozen=True, slots=True)
class FailedJobRecord:
    """A one-shot job that used up its attempts: kept, never fired again by itself."""

    key: str
    run_at_us: int
    props_json: str
    attempts: int
    last_error: str
    failed_at_us: int


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run, as the store remembers the most recent ones (``recent_runs``).

    ``kind`` is ``"once"`` or ``"recurring"``; ``outcome`` ``"ok"``, ``"error"`` (done,
    or failed for good) or ``"retry"`` (a retry is scheduled); ``owner`` the owner id of
    the claim or lease it ran under. Times are µs since the epoch (store clock); ``due_us``
    is None for a recurring job."""

    kind: str
    key: str
    due_us: int | None
    started_us: int | None
    finished_us: int
    outcome: str
    error: str | None
    owner: str
    attempt: int


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


#: How many runs ``recent_runs`` remembers per namespace.
RECENT_RUNS_KEPT = 100


def conflicting_job(
    jobs: Sequence[NewJob], stored: Mapping[str, tuple[int, str] | None]
) -> str | None:
    """The first key of ``jobs`` that makes storing them a duplicate, or None.

    ``stored`` maps the keys of ``jobs`` already in the store to their ``(run_at_us,
    props_json)`` (None for a failed job, which is never identical). A key repeated within
    ``jobs`` is a duplicate; a stored key is one unless the stored job is identical (same
    run time and props): storing an identical job again is a retry of the same call, and
    succeeds without storing anything.
    """
    seen: set[str] = set()
    for job in jobs:
        if job.key in seen:
            return job.key
        seen.add(job.key)
        if job.key in stored and stored[job.key] != (job.run_at_us, job.props_json):
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
