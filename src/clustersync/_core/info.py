"""What operators see: records of the cluster's state and how their fields read.

Pure values and formatting, shared by the threading and asyncio APIs, the CLI and the
dashboard.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "FailedJob",
    "HolderInfo",
    "JobContext",
    "LeaderInfo",
    "LockInfo",
    "RecurringJobInfo",
    "RunInfo",
    "format_duration",
    "format_interval",
    "identity_of",
    "one_line_error",
]

#: Longest ``last_error`` kept (the first line of the exception, then cut).
MAX_ERROR_CHARS = 500

# An owner id is "<identity>:<12 hex>" (a lease) or "<identity>:<12 hex>:<n>" (the
# claims of a one-shot scheduler): the identity is what comes before.
_OWNER_SUFFIX = re.compile(r":[0-9a-f]{12}(?::\d+)?$")


def identity_of(owner: str) -> str:
    """The identity of the instance behind an owner id of a lease or claim."""
    return _OWNER_SUFFIX.sub("", owner)


def one_line_error(error: BaseException) -> str:
    """``"ValueError: bad input"``: the exception's type and first line, bounded."""
    text = str(error).strip().splitlines()
    line = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def format_duration(seconds: float, *, spaced: bool = False) -> str:
    """A short measured duration: ``850ms``, ``12.3s``, ``5m03s``, ``2h05m``, ``3d04h``
    (the CLI); ``spaced``: ``1.2 ms``, ``850 ms``, ``12.3 s``, ``5m 03s`` (the dashboard,
    with a decimal under 10 ms)."""
    if math.isinf(seconds) or math.isnan(seconds):
        return "?"
    gap = " " if spaced else ""
    if spaced and seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}{gap}ms"
    if seconds < 59.95:
        return f"{seconds:.1f}{gap}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{gap}{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{gap}{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{gap}{whole % 86400 // 3600:02d}h"


def format_interval(interval: timedelta) -> str:
    """``timedelta(minutes=90)`` -> ``"1h30m"``; ``timedelta(seconds=0.5)`` -> ``"0.5s"``."""
    seconds = interval.total_seconds()
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    parts = []
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts) or "0s"


@dataclass(frozen=True, slots=True)
class RecurringJobInfo:
    """A recurring job as the cluster sees it (``list_recurring_jobs``).

    - ``schedule``: a readable description (``"every 5m"``, ``"every 1h, rounded"``,
      ``"cron 0 2 * * * Europe/Paris"``, or the name of a custom ``next_wait``);
    - ``paused``: no instance starts a run (``trigger`` still runs it once);
    - ``running_on``: the identity of the instance running it now, or None;
    - ``last_started`` / ``last_finished``: aware UTC datetimes, or None;
    - ``last_outcome``: ``"ok"``, ``"error"`` or None (never finished);
    - ``last_error``: the one-line error of the last run, if it failed;
    - ``next_run``: when the instances that schedule it plan to run it next;
    - ``instances``: how many live instances schedule it.
    """

    key: str
    schedule: str
    paused: bool
    running_on: str | None
    last_started: datetime | None
    last_finished: datetime | None
    last_outcome: str | None
    last_error: str | None
    next_run: datetime | None
    instances: int


@dataclass(frozen=True, slots=True)
class LockInfo:
    """A live lease, as ``clustersync locks`` and the dashboard show it.

    ``kind`` is ``"mutex"``, ``"election"`` (its leader's lease) or ``"job"`` (a
    recurring job's lease); ``name`` the user's name; ``holder`` the identity of the
    holding instance; ``expires_in`` seconds.
    """

    kind: str
    name: str
    holder: str
    token: int
    expires_in: float


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a one-shot callback that takes a third parameter receives:
    ``callback(key, props, context)``.

    - ``attempt`` counts from 1 (a run cut short by a crash counts);
    - ``run_at``: when this attempt was due (the job's ``run_at`` for the first, the
      retry time after), aware UTC;
    - ``scheduled_by``: the identity of the instance that called ``schedule_once``.
    """

    attempt: int
    run_at: datetime
    scheduled_by: str


@dataclass(frozen=True, slots=True)
class FailedJob:
    """A one-shot job that used up its attempts (``Retry``): kept, never fired by itself,
    not in ``list_scheduled_jobs()``. ``run_at`` is as originally scheduled;
    ``last_error`` the one-line error of the last attempt; ``failed_at`` aware UTC."""

    key: str
    run_at: datetime
    props: object
    attempts: int
    last_error: str
    failed_at: datetime


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One recent run (``recent_runs``): ``kind`` ``"once"`` or ``"recurring"``,
    ``outcome`` ``"ok"``, ``"error"`` or ``"retry"``, ``identity`` of the instance it
    ran on, ``lateness_s`` how late it started after it was due (one-shot only)."""

    kind: str
    key: str
    due: datetime | None
    started: datetime | None
    finished: datetime
    outcome: str
    error: str | None
    identity: str
    attempt: int
    lateness_s: float | None


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """The leader of an election now (``Election.leader()``): ``identity`` of its
    instance, ``term`` (the fencing token of its leadership) and ``expires_in``: seconds
    until its lease ends unless renewed (judged by the store's clock)."""

    identity: str
    term: int
    expires_in: float


@dataclass(frozen=True, slots=True)
class HolderInfo:
    """One live hold of a semaphore (``Semaphore.holders()``): ``identity`` of the
    holding instance, its fencing ``token`` and ``expires_in`` seconds until its slot
    ends unless renewed."""

    identity: str
    token: int
    expires_in: float
