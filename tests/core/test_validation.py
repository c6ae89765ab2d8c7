"""Validation and encoding of user input (names, durations, datetimes, props)."""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from clustersync._core.validation import (
    DEFAULT_MAX_PROPS_BYTES,
    MAX_NAME_LENGTH,
    datetime_to_micros,
    decode_props,
    encode_props,
    micros_to_datetime,
    require_aware,
    validate_name,
    validate_seconds,
    validate_timeout,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# -- names ----------------------------------------------------------------------------------


def test_name_limits() -> None:
    assert MAX_NAME_LENGTH == 255
    assert validate_name("x") == "x"
    assert validate_name("a" * 255) == "a" * 255
    with pytest.raises(ValueError, match="255"):
        validate_name("a" * 256)
    with pytest.raises(ValueError, match="empty"):
        validate_name("")


def test_name_length_counts_characters_not_bytes() -> None:
    assert validate_name("é" * 255) == "é" * 255
    assert validate_name("🔒" * 255) == "🔒" * 255
    with pytest.raises(ValueError):
        validate_name("🔒" * 256)


@pytest.mark.parametrize("value", [None, 5, b"name", ["name"], 1.5])
def test_name_must_be_a_string(value: object) -> None:
    with pytest.raises(TypeError, match="str"):
        validate_name(value)


@pytest.mark.parametrize("value", ["\x00", "a\x00b", "name\x00"])
def test_name_rejects_nul(value: str) -> None:
    with pytest.raises(ValueError, match="NUL"):
        validate_name(value)


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb", "ok\udc80"])
def test_name_rejects_lone_surrogates(value: str) -> None:
    with pytest.raises(ValueError, match="unicode"):
        validate_name(value)


def test_name_error_mentions_what() -> None:
    with pytest.raises(ValueError, match="job key"):
        validate_name("", "job key")


@given(st.text(min_size=1, max_size=255).filter(lambda s: "\x00" not in s))
def test_any_reasonable_text_is_a_valid_name(value: str) -> None:
    assert validate_name(value) == value


# -- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.001, 1, 15.0, 1e9, 2**40])
def test_seconds_accepts_positive_numbers(value: float) -> None:
    result = validate_seconds(value, "ttl")
    assert result == float(value)
    assert type(result) is float


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, -1, -0.001, 0, 0.0, 10**400, -(10**400)],
    ids=["nan", "inf", "-inf", "-1", "-0.001", "0", "0.0", "huge", "-huge"],
)
def test_seconds_rejects_bad_values(value: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        validate_seconds(value, "ttl")


def test_seconds_allow_zero() -> None:
    assert validate_seconds(0, "delay", allow_zero=True) == 0.0
    with pytest.raises(ValueError):
        validate_seconds(-0.5, "delay", allow_zero=True)
    with pytest.raises(ValueError):
        validate_seconds(math.nan, "delay", allow_zero=True)


@pytest.mark.parametrize("value", [True, False, None, "1", timedelta(seconds=1), [1]])
def test_seconds_rejects_non_numbers(value: object) -> None:
    with pytest.raises(TypeError):
        validate_seconds(value, "ttl")


def test_timeout_none_means_forever() -> None:
    assert validate_timeout(None) is None


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 3, 1e6])
def test_timeout_accepts_non_negative_numbers(value: float) -> None:
    assert validate_timeout(value) == float(value)


def test_timeout_infinity_waits_forever() -> None:
    # Like asyncio.wait_for: an infinite timeout is a valid way to say "no deadline".
    assert validate_timeout(math.inf) == math.inf


@pytest.mark.parametrize("value", [math.nan, -1, -0.001, -math.inf])
def test_timeout_rejects_bad_values(value: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        validate_timeout(value)


@pytest.mark.parametrize("value", [True, False, "1", timedelta(seconds=1)])
def test_timeout_rejects_non_numbers(value: object) -> None:
    with pytest.raises(TypeError, match="timeout"):
        validate_timeout(value)


def test_timeout_huge_int_means_forever() -> None:
    # float(10**400) overflows; no OverflowError escapes, it is as good as math.inf.
    assert validate_timeout(10**400) == math.inf
    with pytest.raises(ValueError, match="timeout"):
        validate_timeout(-(10**400))


# -- datetimes ------------------------------------------------------------------------------


class _NoOffset(tzinfo):
    """A tzinfo whose utcoffset() is None: the datetime counts as naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        require_aware(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        require_aware(datetime(2024, 1, 1, tzinfo=_NoOffset()))


@pytest.mark.parametrize("value", [None, "2024-01-01T00:00:00Z", 1_700_000_000, date(2024, 1, 1)])
def test_non_datetime_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="run_at"):
        require_aware(value)


def test_aware_datetimes_are_converted_to_utc() -> None:
    paris = datetime(2024, 7, 1, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    result = require_aware(paris)
    assert result == paris
    assert result.tzinfo is UTC
    assert result == datetime(2024, 7, 1, 7, 0, tzinfo=UTC)
    fixed = datetime(2024, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    assert require_aware(fixed) == datetime(2024, 1, 1, 5, 30, tzinfo=UTC)
    assert require_aware(fixed).utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_datetime_outside_the_utc_range_is_a_value_error(value: datetime) -> None:
    with pytest.raises(ValueError, match="range"):
        require_aware(value)


def test_micros_examples() -> None:
    assert datetime_to_micros(EPOCH) == 0
    assert datetime_to_micros(EPOCH + timedelta(microseconds=1)) == 1
    assert datetime_to_micros(EPOCH - timedelta(microseconds=1)) == -1
    assert (
        datetime_to_micros(datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)) == 1_700_000_000_000_000
    )
    assert micros_to_datetime(-1) == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert micros_to_datetime(0).tzinfo is UTC


fixed_offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59, seconds=-59, microseconds=-999999),
        max_value=timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
    ),
)
aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
    timezones=fixed_offsets,
)


@example(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))
@example(datetime(1, 1, 1, 5, tzinfo=timezone(timedelta(hours=5))))
@example(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=-5))))
@example(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-1))))
@example(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=1))))
@given(aware_datetimes)
def test_micros_round_trip_exactly(value: datetime) -> None:
    micros = datetime_to_micros(value)
    assert micros == (value - EPOCH) // timedelta(microseconds=1)
    try:
        utc = require_aware(value)
    except ValueError:
        # Its UTC time is before year 1 or after 9999: not representable, rejected up front.
        with pytest.raises(OverflowError):
            value.astimezone(UTC)
        return
    assert datetime_to_micros(utc) == micros
    back = micros_to_datetime(micros)
    assert back == value
    assert back == utc
    assert back.tzinfo is UTC
    assert back.replace(tzinfo=None) == utc.replace(tzinfo=None)


@given(
    st.integers(
        min_value=datetime_to_micros(datetime(1, 1, 1, tzinfo=UTC)),
        max_value=datetime_to_micros(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    )
)
def test_micros_to_datetime_round_trips(micros: int) -> None:
    assert datetime_to_micros(micros_to_datetime(micros)) == micros


@given(aware_datetimes, aware_datetimes)
def test_micros_preserve_order(a: datetime, b: datetime) -> None:
    assert (a < b) == (datetime_to_micros(a) < datetime_to_micros(b))
    assert (a == b) == (datetime_to_micros(a) == datetime_to_micros(b))


# -- props ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        [1.0, math.nan],
        {"a": math.inf},
        object(),
        {1, 2},
        b"bytes",
        {(1, 2): "tuple key"},
        datetime(2024, 1, 1, tzinfo=UTC),
        {"deep": [object()]},
    ],
)
def test_unencodable_props_are_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="JSON"):
        encode_props(value)


def test_lone_surrogate_in_props_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode_props({"text": "\ud800"})


def test_props_encoding_is_compact_utf8() -> None:
    assert encode_props(None) == "null"
    assert encode_props({"a": [1, 2], "b": "é"}) == '{"a":[1,2],"b":"é"}'


def test_props_size_limit_is_inclusive() -> None:
    assert DEFAULT_MAX_PROPS_BYTES == 65536
    # '"' + n * 'a' + '"' is n + 2 bytes
    assert len(encode_props("a" * 65534)) == 65536
    with pytest.raises(ValueError, match="65537 bytes"):
        encode_props("a" * 65535)


@pytest.mark.parametrize(("char", "width"), [("é", 2), ("€", 3), ("🔒", 4)])
def test_props_size_counts_utf8_bytes(char: str, width: int) -> None:
    fits = (100 - 2) // width
    encoded = encode_props(char * fits, max_bytes=100)
    assert len(encoded.encode("utf-8")) == fits * width + 2 <= 100
    with pytest.raises(ValueError, match="bytes"):
        encode_props(char * (fits + 1), max_bytes=100)
    # Counted in characters, the same text would fit: the limit is in bytes.
    assert len(json.dumps(char * (fits + 1), ensure_ascii=False)) <= 100


def test_go_props_too_large_example() -> None:
    # Go's "props to large": 10000 bytes that JSON-encode to ~13.3 k. Here the closest is a
    # 10000-character string against a 10000-byte limit.
    with pytest.raises(ValueError):
        encode_props("a" * 10_000, max_bytes=10_000)


@pytest.mark.parametrize("depth", [10, 500, 900, 1_000, 5_000, 100_000])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_deep_nesting_never_raises_recursion_error(depth: int, kind: str) -> None:
    value: Any = []
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    try:
        text = encode_props(value, max_bytes=10**7)
    except TypeError:
        assert depth > 100  # only genuinely deep values are refused
        return
    except RecursionError:  # pragma: no cover - the failure this test guards against
        pytest.fail("RecursionError escaped encode_props")
    assert decode_props(text) == value


def test_deep_nesting_near_the_recursion_limit() -> None:
    # Encoding at a deep stack must refuse cleanly, not crash.
    limit = sys.getrecursionlimit()
    value: Any = []
    for _ in range(limit - 50):
        value = [value]

    def recurse(n: int) -> str | None:
        if n:
            return recurse(n - 1)
        try:
            return encode_props(value)
        except TypeError:
            return None

    recurse(40)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(alphabet=st.characters(exclude_categories=["Cs"])), children, max_size=5
        )
    ),
    max_leaves=30,
)


@given(json_values)
def test_props_round_trip(value: Any) -> None:
    text = encode_props(value, max_bytes=10**7)
    assert decode_props(text) == value
    assert decode_props(encode_props(decode_props(text), max_bytes=10**7)) == value
    assert json.loads(text) == value


@given(json_values, st.integers(min_value=0, max_value=2_000))
def test_props_limit_is_exact(value: Any, limit: int) -> None:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size <= limit:
        assert decode_props(encode_props(value, max_bytes=limit)) == value
    else:
        with pytest.raises(ValueError):
            encode_props(value, max_bytes=limit)
