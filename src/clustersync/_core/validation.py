"""Validation and encoding of user input: names, keys, timeouts, datetimes and props.

Every check raises before anything is sent to a store, so bad input changes nothing.
"""

from __future__ import annotations

import json
import math
import re
import threading
from datetime import UTC, datetime
from typing import Any

MAX_NAME_LENGTH = 255
DEFAULT_MAX_PROPS_BYTES = 65536
#: Deepest nesting of lists and objects accepted in props. Decoding JSON recurses once
#: per level, so deeper props could be stored and then fail to decode (RecursionError)
#: on a deeper call stack: in the scheduler, in another process, in ``jobs list``.
MAX_PROPS_DEPTH = 100
#: JSON strings (skipped whole) and the brackets that open and close nesting levels.
_JSON_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def validate_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a usable mutex name, job key or namespace.

    Names are non-empty strings of at most 255 characters without NUL characters
    (NUL cannot be stored by PostgreSQL and truncates C strings elsewhere).
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} must be at most {MAX_NAME_LENGTH} characters, got {len(value)}")
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates cannot be stored anywhere
        raise ValueError(f"{what} must be valid unicode text: {exc.reason}") from None
    return value


#: Longest lease or claim ttl accepted (30 days): longer values are surely mistakes, and
#: stores keep expiry times in 64-bit microseconds.
MAX_TTL_SECONDS = 30 * 86_400.0


def validate_ttl(value: object, what: str = "ttl") -> float:
    """A lease duration: positive, finite and at most :data:`MAX_TTL_SECONDS`."""
    seconds = validate_seconds(value, what)
    if seconds > MAX_TTL_SECONDS:
        raise ValueError(f"{what} must be at most {MAX_TTL_SECONDS:.0f} seconds, got {value!r}")
    return seconds


def validate_seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    """Return a positive (or non-negative) finite duration in seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"{what} must be finite, got a number too large") from None
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be {bound}, got {value!r}")
    return seconds


def validate_timeout(timeout: object) -> float | None:
    """``None`` (wait forever) or a non-negative number of seconds, like threading."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    try:
        seconds = float(timeout)
    except OverflowError:  # an int too large for a float: no deadline, like math.inf
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}") from None
        return math.inf
    if math.isnan(seconds):
        raise ValueError("timeout must not be NaN")
    if seconds < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
    return seconds


def validate_join_timeout(timeout: object) -> float | None:
    """A timeout for waiting on a background task (``Job.close``, ``stop``): like
    :func:`validate_timeout`, with timeouts too long for the threading primitives
    (``threading.TIMEOUT_MAX``, about 292 years, or infinite) meaning "wait forever"."""
    seconds = validate_timeout(timeout)
    if seconds is not None and seconds >= threading.TIMEOUT_MAX:
        return None
    return seconds


def require_aware(value: object, what: str = "run_at") -> datetime:
    """Return ``value`` converted to UTC; naive datetimes are rejected."""
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(
            f"{what} must be timezone-aware (e.g. datetime.now(UTC)); naive datetimes are ambiguous"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{what} is out of range once converted to UTC: {value}") from None


def datetime_to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime, exactly."""
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def micros_to_datetime(micros: int) -> datetime:
    """Inverse of :func:`datetime_to_micros`, as an aware UTC datetime."""
    from datetime import timedelta

    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def encode_props(props: Any, max_bytes: int = DEFAULT_MAX_PROPS_BYTES) -> str:
    """Encode one-shot job props as compact JSON text.

    Raises ``TypeError`` for values JSON cannot represent (objects, NaN, infinities,
    tuple keys) and ``ValueError`` when the encoding is larger than ``max_bytes``.
    """
    try:
        text = json.dumps(props, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"props must be JSON-serializable: {exc}") from None
    except RecursionError:
        raise TypeError("props must be JSON-serializable: nested too deeply") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise TypeError(f"props must be JSON-serializable: {exc.reason}") from None
    if size > max_bytes:
        raise ValueError(f"props are {size} bytes once encoded as JSON; the limit is {max_bytes}")
    if _nesting_depth(text) > MAX_PROPS_DEPTH:
        raise TypeError(
            f"props must be JSON-serializable: nested deeper than {MAX_PROPS_DEPTH} levels"
        )
    return text


def _nesting_depth(text: str) -> int:
    """How deeply lists and objects nest in the JSON ``text``."""
    if text.count("[") + text.count("{") <= MAX_PROPS_DEPTH:
        return 0  # cannot be deeper than the limit (the common case, without a scan)
    depth = deepest = 0
    for match in _JSON_NESTING.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def decode_props(text: str) -> Any:
    """Decode props stored by :func:`encode_props`."""
    return json.loads(text)
