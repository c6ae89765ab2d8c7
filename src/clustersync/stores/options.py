"""Validation of store options, shared by the stores (and useful to store plugins).

Every bad option value is a :class:`~clustersync.ConfigurationError` naming the option;
an option a store does not know is one too (:func:`reject_unknown`).
"""

from __future__ import annotations

from typing import Any

from .._core.validation import MAX_TTL_SECONDS, validate_seconds
from ..exceptions import ConfigurationError

__all__ = [
    "DEFAULT_GRANT_WAITERS",
    "option_count",
    "option_grant_waiters",
    "option_grant_waiters_text",
    "option_seconds",
    "option_timeout",
    "reject_unknown",
]

#: Acquisitions of one store that may block in a handoff queue at once by default (each
#: on a connection of its own while it blocks); the others wait to be notified.
DEFAULT_GRANT_WAITERS = 16
#: Most ``grant_waiters`` (a typo guard, below Redis's default ``maxclients``).
MAX_GRANT_WAITERS = 10_000


def option_seconds(value: Any, name: str) -> float:
    """A non-negative duration option; bad values are ConfigurationErrors."""
    try:
        return validate_seconds(value, name, allow_zero=True)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"invalid store option: {exc}") from None


def option_timeout(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """A timeout option of a server store: a finite number of seconds, positive (or
    zero if allowed) and at most 30 days; anything else is a ConfigurationError."""
    try:
        seconds = validate_seconds(value, name, allow_zero=allow_zero)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"invalid store option: {exc}") from None
    if seconds > MAX_TTL_SECONDS:
        raise ConfigurationError(
            f"invalid store option: {name} must be at most {MAX_TTL_SECONDS:.0f} seconds"
        )
    return seconds


def option_count(value: Any, name: str) -> int:
    """A positive int option (e.g. ``max_connections``); else a ConfigurationError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"invalid store option: {name} must be an int >= 1, got {value!r}")
    return value


def option_grant_waiters(value: Any) -> int:
    """The ``grant_waiters`` option: an int from 0 to 10,000."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_GRANT_WAITERS:
        raise ConfigurationError(
            f"invalid store option: grant_waiters must be an int from 0 to {MAX_GRANT_WAITERS},"
            f" got {value!r}"
        )
    return value


def option_grant_waiters_text(text: str) -> int:
    """The ``grant_waiters`` option given in a URL's query."""
    return option_grant_waiters(int(text) if text.strip().isdigit() else text)


def reject_unknown(options: dict[str, Any], kind: str) -> None:
    """ConfigurationError if ``options`` (what an opener did not pop) is not empty."""
    if options:
        raise ConfigurationError(
            f"unknown option(s) for the {kind} store: {', '.join(sorted(options))}"
        )
