"""The recurring-job wait helpers: Go's job_test.go tables, then properties.

Go's ``TestMakeWaitForInterval`` / ``TestMakeWaitForRoundedInterval`` (Mattermost's plugin
``cluster`` package) fix ``now`` and express ``LastFinished`` relative to it; "never run"
is the zero time there and ``JobMetadata(None)`` here.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersync._core.intervals import (
    JobMetadata,
    wait_for_cron,
    wait_for_interval,
    wait_for_rounded_interval,
)
from clustersync.exceptions import ConfigurationError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NEVER = JobMetadata(None)
ZERO = timedelta(0)

# Several fixed "now"s stand in for Go's time.Now(): mid-hour, just after midnight, just
# before midnight, a leap day and a moment before the Unix epoch.
NOWS = [
    datetime(2024, 3, 5, 14, 37, 12, 345678, tzinfo=UTC),
    datetime(2023, 12, 31, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2025, 6, 30, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 2, 29, 12, 0, tzinfo=UTC),
    datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC),
]


def _floor(moment: datetime, step: timedelta) -> datetime:
    return EPOCH + ((moment - EPOCH) // step) * step


def _ago(now: datetime, delta: timedelta | None) -> JobMetadata:
    return NEVER if delta is None else JobMetadata(now - delta)


# -- Go TestMakeWaitForInterval -----------------------------------------------------------

INTERVAL_TABLE = [
    # (interval, last finished this long ago (None: never), expected wait)
    (timedelta(minutes=5), None, ZERO),
    (timedelta(minutes=5), timedelta(minutes=1), timedelta(minutes=4)),
    (timedelta(minutes=5), timedelta(minutes=2), timedelta(minutes=3)),
    (timedelta(minutes=5), timedelta(minutes=4, seconds=30), timedelta(seconds=30)),
    (timedelta(minutes=5), timedelta(minutes=4, seconds=59), timedelta(seconds=1)),
    (timedelta(hours=1), None, ZERO),
    (timedelta(hours=1), timedelta(minutes=1), timedelta(minutes=59)),
    (timedelta(hours=1), timedelta(minutes=20), timedelta(minutes=40)),
    (timedelta(hours=1), timedelta(minutes=55, seconds=30), timedelta(minutes=4, seconds=30)),
    (timedelta(hours=1), timedelta(minutes=59, seconds=59), timedelta(seconds=1)),
]


@pytest.mark.parametrize("now", NOWS)
@pytest.mark.parametrize(("interval", "ago", "expected"), INTERVAL_TABLE)
def test_wait_for_interval_go_table(
    now: datetime, interval: timedelta, ago: timedelta | None, expected: timedelta
) -> None:
    assert wait_for_interval(interval)(now, _ago(now, ago)) == expected


def test_wait_for_interval_overdue_runs_now() -> None:
    now = NOWS[0]
    next_wait = wait_for_interval(timedelta(minutes=5))
    assert next_wait(now, _ago(now, timedelta(minutes=5))) == ZERO
    assert next_wait(now, _ago(now, timedelta(days=400))) == ZERO


def test_wait_for_interval_future_last_finished_adds_the_skew() -> None:
    # Go: a LastFinished in the future (fast clock) makes the wait interval + skew.
    now = NOWS[0]
    metadata = JobMetadata(now + timedelta(seconds=10))
    assert wait_for_interval(timedelta(minutes=5))(now, metadata) == timedelta(
        minutes=5, seconds=10
    )


# -- Go TestMakeWaitForRoundedInterval ----------------------------------------------------

# (now relative to the boundary, last finished relative to it (None: never)) — the six
# situations of the Go table, with the expected waits per interval.
ROUNDED_SITUATIONS = [
    (ZERO, None),
    (-timedelta(minutes=1), None),
    (-timedelta(minutes=1), -timedelta(minutes=2)),
    (timedelta(minutes=1), -timedelta(minutes=1)),
    (timedelta(minutes=1), timedelta(seconds=30)),
    (timedelta(minutes=7), timedelta(minutes=6, seconds=30)),
]
ROUNDED_EXPECTED = {
    timedelta(minutes=5): [
        ZERO,
        ZERO,
        timedelta(minutes=1),
        ZERO,
        timedelta(minutes=4),
        timedelta(minutes=3),
    ],
    timedelta(minutes=30): [
        ZERO,
        ZERO,
        timedelta(minutes=1),
        ZERO,
        timedelta(minutes=29),
        timedelta(minutes=23),
    ],
    timedelta(hours=24): [
        ZERO,
        ZERO,
        timedelta(minutes=1),
        ZERO,
        timedelta(hours=23, minutes=59),
        timedelta(hours=23, minutes=53),
    ],
}
ROUNDED_TABLE = [
    (interval, now_offset, last_offset, expected)
    for interval, waits in ROUNDED_EXPECTED.items()
    for (now_offset, last_offset), expected in zip(ROUNDED_SITUATIONS, waits, strict=True)
]


@pytest.mark.parametrize("base_now", NOWS)
@pytest.mark.parametrize(("interval", "now_offset", "last_offset", "expected"), ROUNDED_TABLE)
def test_wait_for_rounded_interval_go_table(
    base_now: datetime,
    interval: timedelta,
    now_offset: timedelta,
    last_offset: timedelta | None,
    expected: timedelta,
) -> None:
    # TOH (top of the hour) for the sub-day intervals, TOD (UTC midnight) for 24 h.
    unit = timedelta(hours=24) if interval == timedelta(hours=24) else timedelta(hours=1)
    boundary = _floor(base_now, unit)
    now = boundary + now_offset
    metadata = NEVER if last_offset is None else JobMetadata(boundary + last_offset)
    assert wait_for_rounded_interval(interval)(now, metadata) == expected


def test_wait_for_rounded_interval_24h_is_utc_midnight_whatever_the_offset() -> None:
    paris = ZoneInfo("Europe/Paris")
    last = datetime(2024, 7, 1, 1, 30, tzinfo=paris)  # 2024-06-30 23:30 UTC
    now = last
    wait = wait_for_rounded_interval(timedelta(hours=24))(now, JobMetadata(last))
    assert now + wait == datetime(2024, 7, 1, 0, 0, tzinfo=UTC)
    assert wait == timedelta(minutes=30)


def test_wait_for_rounded_interval_has_no_minimum_gap() -> None:
    # Go: finished at 12:04:59 with a 5-minute interval -> next run at 12:05:00.
    last = datetime(2024, 1, 1, 12, 4, 59, tzinfo=UTC)
    wait = wait_for_rounded_interval(timedelta(minutes=5))(last, JobMetadata(last))
    assert wait == timedelta(seconds=1)


# -- invalid intervals --------------------------------------------------------------------

HELPERS = [wait_for_interval, wait_for_rounded_interval]


@pytest.mark.parametrize("helper", HELPERS)
@pytest.mark.parametrize(
    "interval", [ZERO, -timedelta(microseconds=1), -timedelta(hours=1), timedelta.min]
)
def test_non_positive_interval_is_rejected(helper: object, interval: timedelta) -> None:
    assert callable(helper)
    with pytest.raises(ValueError, match="positive"):
        helper(interval)


@pytest.mark.parametrize("helper", HELPERS)
@pytest.mark.parametrize("interval", [5, 5.0, 300, None, "5m", True])
def test_non_timedelta_interval_is_a_type_error(helper: object, interval: object) -> None:
    assert callable(helper)
    with pytest.raises(TypeError, match="timedelta"):
        helper(interval)


def test_smallest_interval_is_accepted() -> None:
    tick = timedelta(microseconds=1)
    now = NOWS[0]
    assert wait_for_interval(tick)(now, JobMetadata(now)) == tick
    assert wait_for_rounded_interval(tick)(now, JobMetadata(now)) == tick


# -- properties ---------------------------------------------------------------------------

moments = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
intervals = st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=400))
offset_zones = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)


@given(interval=intervals, last=moments, now=moments)
def test_wait_for_interval_is_interval_minus_elapsed(
    interval: timedelta, last: datetime, now: datetime
) -> None:
    wait = wait_for_interval(interval)(now, JobMetadata(last))
    assert wait == max(ZERO, interval - (now - last))
    assert wait >= ZERO
    if now >= last:
        assert wait <= interval


@given(
    interval=intervals,
    last=moments,
    elapsed=st.timedeltas(min_value=ZERO, max_value=timedelta(days=1000)),
)
def test_wait_for_interval_is_within_zero_and_interval(
    interval: timedelta, last: datetime, elapsed: timedelta
) -> None:
    wait = wait_for_interval(interval)(last + elapsed, JobMetadata(last))
    assert ZERO <= wait <= interval


@given(interval=intervals, now=moments)
def test_never_run_runs_immediately(interval: timedelta, now: datetime) -> None:
    assert wait_for_interval(interval)(now, NEVER) == ZERO
    assert wait_for_rounded_interval(interval)(now, NEVER) == ZERO


@given(
    interval=intervals,
    last=moments,
    elapsed=st.timedeltas(min_value=ZERO, max_value=timedelta(days=1000)),
    zone=offset_zones,
)
def test_wait_for_rounded_interval_lands_on_epoch_multiples(
    interval: timedelta, last: datetime, elapsed: timedelta, zone: timezone
) -> None:
    now = last + elapsed
    # The answer does not depend on the time zone the caller's datetimes are in.
    wait = wait_for_rounded_interval(interval)(now.astimezone(zone), JobMetadata(last))
    assert wait == wait_for_rounded_interval(interval)(now, JobMetadata(last.astimezone(zone)))
    assert ZERO <= wait <= interval
    if wait > ZERO:
        assert (now + wait - EPOCH) % interval == ZERO
        # ... and it is the first multiple after last_finished (never a later one).
        assert now + wait > last
        assert now + wait - interval <= last


@given(interval=intervals, last=moments, now=moments)
def test_wait_for_rounded_interval_is_never_negative(
    interval: timedelta, last: datetime, now: datetime
) -> None:
    assert wait_for_rounded_interval(interval)(now, JobMetadata(last)) >= ZERO


# -- cron ---------------------------------------------------------------------------------

CRON_EXPRESSIONS = [
    "* * * * *",
    "*/15 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "0 9 * * 1-5",
    "0 0 1 * *",
    "0 0 29 2 *",
    "@daily",
    "@hourly",
]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]


@pytest.mark.parametrize(
    "expression",
    ["not a cron", "61 * * * *", "* * * *", "", "* * 32 * *", "* * * 13 *", "@sometimes"],
)
def test_cron_invalid_expression_is_a_value_error(expression: str) -> None:
    with pytest.raises(ValueError, match="cron expression"):
        wait_for_cron(expression)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd", "Europe/Pariss"])
def test_cron_unknown_time_zone_is_a_value_error(tz: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        wait_for_cron("* * * * *", tz)


def test_cron_expression_must_be_a_string() -> None:
    with pytest.raises(TypeError):
        wait_for_cron(5)  # type: ignore[arg-type]


def test_cron_never_run_runs_immediately() -> None:
    for now in NOWS:
        assert wait_for_cron("0 9 * * *", "Europe/Paris")(now, NEVER) == ZERO


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        # winter (CET, UTC+1): 09:00 Paris is 08:00 UTC
        (datetime(2024, 1, 15, 10, 0, tzinfo=UTC), datetime(2024, 1, 16, 8, 0, tzinfo=UTC)),
        (datetime(2024, 1, 15, 7, 0, tzinfo=UTC), datetime(2024, 1, 15, 8, 0, tzinfo=UTC)),
        # summer (CEST, UTC+2): 07:00 UTC
        (datetime(2024, 7, 15, 10, 0, tzinfo=UTC), datetime(2024, 7, 16, 7, 0, tzinfo=UTC)),
        # across the spring-forward night (2024-03-31)
        (datetime(2024, 3, 30, 10, 0, tzinfo=UTC), datetime(2024, 3, 31, 7, 0, tzinfo=UTC)),
        # across the fall-back night (2024-10-27)
        (datetime(2024, 10, 26, 10, 0, tzinfo=UTC), datetime(2024, 10, 27, 8, 0, tzinfo=UTC)),
        # exactly at a fire time: the next one is strictly after
        (datetime(2024, 1, 15, 8, 0, tzinfo=UTC), datetime(2024, 1, 16, 8, 0, tzinfo=UTC)),
    ],
)
def test_cron_time_zone_example(last: datetime, expected: datetime) -> None:
    next_wait = wait_for_cron("0 9 * * *", "Europe/Paris")
    assert last + next_wait(last, JobMetadata(last)) == expected
    # last_finished given in another zone means the same instant
    paris_last = last.astimezone(ZoneInfo("Europe/Paris"))
    assert last + next_wait(last, JobMetadata(paris_last)) == expected


def test_cron_default_time_zone_is_utc() -> None:
    last = datetime(2024, 7, 15, 10, 0, tzinfo=UTC)
    wait = wait_for_cron("0 9 * * *")(last, JobMetadata(last))
    assert last + wait == datetime(2024, 7, 16, 9, 0, tzinfo=UTC)


def test_cron_missed_fire_times_run_once_now() -> None:
    last = datetime(2024, 1, 1, tzinfo=UTC)
    now = last + timedelta(days=3)
    assert wait_for_cron("*/15 * * * *")(now, JobMetadata(last)) == ZERO


@settings(deadline=None)
@given(
    expression=st.sampled_from(CRON_EXPRESSIONS),
    tz=st.sampled_from(ZONES),
    last=moments,
    now=moments,
)
def test_cron_wait_is_never_negative(
    expression: str, tz: str, last: datetime, now: datetime
) -> None:
    assert wait_for_cron(expression, tz)(now, JobMetadata(last)) >= ZERO


@settings(deadline=None)
@given(expression=st.sampled_from(CRON_EXPRESSIONS), tz=st.sampled_from(ZONES), last=moments)
def test_cron_next_fire_time_matches_croniter(expression: str, tz: str, last: datetime) -> None:
    zone = ZoneInfo(tz)
    expected: datetime = croniter(expression, last.astimezone(zone)).get_next(datetime)
    wait = wait_for_cron(expression, tz)(last, JobMetadata(last))
    assert last + wait == expected.astimezone(UTC)
    assert wait > ZERO


@given(last=moments, step_minutes=st.sampled_from([1, 15, 60]))
def test_cron_next_fire_time_in_utc_is_the_next_multiple(last: datetime, step_minutes: int) -> None:
    expression = {1: "* * * * *", 15: "*/15 * * * *", 60: "0 * * * *"}[step_minutes]
    step = timedelta(minutes=step_minutes)
    wait = wait_for_cron(expression)(last, JobMetadata(last))
    assert last + wait == _floor(last, step) + step


def test_cron_without_croniter_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "croniter", None)
    with pytest.raises(ConfigurationError, match=r"clustersync\[cron\]"):
        wait_for_cron("* * * * *")
    # ConfigurationError is a ValueError, so careless callers still catch it.
    with pytest.raises(ValueError):
        wait_for_cron("* * * * *")
