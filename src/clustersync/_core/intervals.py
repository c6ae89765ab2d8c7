"""When a recurring job runs next: interval, UTC-rounded interval and cron helpers.

A ``NextWaitInterval`` is ``Callable[[datetime, JobMetadata], timedelta]``: given the
current (aware, UTC) time and the shared job metadata it returns how long to wait before
the next run; ``timedelta(0)`` (or negative) means "run now". A job that never ran runs
immediately. All helpers are pure and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .info import format_interval

_ZERO = timedelta(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class JobMetadata:
    """State of a recurring job shared by every instance that schedules its key.

    ``last_finished`` is when the last run finished (aware UTC, judged by the store's
    clock), or ``None`` if the job never ran.
    """

    last_finished: datetime | None = None


NextWaitInterval = Callable[[datetime, JobMetadata], timedelta]
"""``next_wait(now, metadata) -> timedelta``: how long to wait before the next run of a
recurring job (``timedelta(0)`` or less: run now). See :func:`wait_for_interval`,
:func:`wait_for_rounded_interval`, :func:`wait_for_cron`, or write your own."""

#: Where the helpers keep their readable description (see :func:`describe_schedule`).
_SCHEDULE_ATTRIBUTE = "clustersync_schedule"


def _described(next_wait: NextWaitInterval, description: str) -> NextWaitInterval:
    setattr(next_wait, _SCHEDULE_ATTRIBUTE, description)
    return next_wait


def describe_schedule(next_wait: NextWaitInterval) -> str:
    """A readable description of a ``next_wait``: ``"every 5m"``, ``"every 1h, rounded"``,
    ``"cron 0 2 * * * Europe/Paris"``, or the name of a function of your own."""
    described = getattr(next_wait, _SCHEDULE_ATTRIBUTE, None)
    if isinstance(described, str):
        return described
    name = getattr(next_wait, "__qualname__", None) or type(next_wait).__name__
    return str(name)


def _positive_interval(interval: object) -> timedelta:
    if not isinstance(interval, timedelta):
        raise TypeError(f"interval must be a timedelta, not {type(interval).__name__}")
    if interval <= _ZERO:
        raise ValueError(f"interval must be positive, got {interval}")
    return interval


def wait_for_interval(interval: timedelta) -> NextWaitInterval:
    """Run about once per ``interval``, measured from the end of the previous run.

    Go: ``MakeWaitForInterval``. Returns ``max(0, interval - (now - last_finished))``.
    Raises ``ValueError`` for a non-positive interval.
    """
    step = _positive_interval(interval)

    def next_wait(now: datetime, metadata: JobMetadata) -> timedelta:
        if metadata.last_finished is None:
            return _ZERO
        try:
            return max(_ZERO, step - (now - metadata.last_finished))
        except OverflowError:  # beyond timedelta's range: not in this era
            return timedelta.max

    return _described(next_wait, f"every {format_interval(step)}")


def _floor_to_multiple(moment: datetime, step: timedelta) -> datetime:
    return _EPOCH + ((moment - _EPOCH) // step) * step


def wait_for_rounded_interval(interval: timedelta) -> NextWaitInterval:
    """Run at UTC-aligned multiples of ``interval`` (e.g. every 5 minutes on the 5s).

    Go: ``MakeWaitForRoundedInterval``. The target is ``last_finished + interval``
    truncated down to a multiple of ``interval`` since the Unix epoch (so a 24 h
    interval means UTC midnight); the wait is ``max(0, target - now)``.
    """
    step = _positive_interval(interval)

    def next_wait(now: datetime, metadata: JobMetadata) -> timedelta:
        if metadata.last_finished is None:
            return _ZERO
        try:
            target = _floor_to_multiple(metadata.last_finished + step, step)
        except OverflowError:  # after the year 9999: never, as far as datetime can tell
            return timedelta.max
        return max(_ZERO, target - now)

    return _described(next_wait, f"every {format_interval(step)}, rounded")


def wait_for_cron(expression: str, tz: str = "UTC") -> NextWaitInterval:
    """Run at the times of a cron ``expression`` evaluated in time zone ``tz``.

    The next run is the first cron time strictly after ``last_finished``; a job that
    never ran runs immediately, and a job that missed several cron times runs once.
    Needs the ``cron`` extra (``pip install "clustersync[cron]"``); raises
    ``ConfigurationError`` when croniter is missing and ``ValueError`` for an invalid
    expression or unknown time zone.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from ..exceptions import ConfigurationError

    try:
        from croniter import CroniterBadDateError, croniter
    except ImportError:  # pragma: no cover - exercised by a test that hides croniter
        raise ConfigurationError(
            'wait_for_cron needs croniter: pip install "clustersync[cron]"'
        ) from None
    if not isinstance(expression, str):
        raise TypeError(f"cron expression must be a str, not {type(expression).__name__}")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc
    if not croniter.is_valid(expression):
        raise ValueError(f"invalid cron expression {expression!r}")
    try:  # e.g. "0 0 30 2 *" is well-formed but never matches
        croniter(expression, datetime.now(zone)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron expression {expression!r} never matches") from None

    def next_wait(now: datetime, metadata: JobMetadata) -> timedelta:
        if metadata.last_finished is None:
            return _ZERO
        start = metadata.last_finished.astimezone(zone)
        nxt: datetime = croniter(expression, start).get_next(datetime)
        wait: timedelta = nxt.astimezone(UTC) - now
        return max(_ZERO, wait)

    return _described(next_wait, f"cron {expression} {tz}")
