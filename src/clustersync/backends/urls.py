"""Store URL handling: defaults, scheme dispatch and redaction."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.validation import MAX_TTL_SECONDS, validate_seconds
from ..exceptions import ConfigurationError
from .base import BlockingEngine

DEFAULT_URL = "sqlite:///clustersync.db"
URL_ENV_VAR = "CLUSTERSYNC_URL"
SUPPORTED = (
    "memory://[NAME]",
    "sqlite:///relative/path.db",
    "sqlite:////absolute/path.db",
    "redis://[:password@]host:port/db",
    "rediss://…",
    "unix:///path.sock",
    "postgresql://user:pass@host:port/db",
)
_SCHEMES = {
    "memory": "memory",
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
}


def resolve_url(url: str | None) -> str:
    """``url``, else ``$CLUSTERSYNC_URL``, else the embedded default."""
    if url is None:
        url = os.environ.get(URL_ENV_VAR) or DEFAULT_URL
    if not isinstance(url, str):
        raise ConfigurationError(f"store URL must be a str, not {type(url).__name__}")
    if "\x00" in url:
        raise ConfigurationError("store URL must not contain NUL characters")
    try:
        url.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: no driver can use them
        raise ConfigurationError(f"store URL must be valid unicode text: {exc.reason}") from None
    return url


def backend_kind(url: str) -> str:
    """``memory``, ``sqlite``, ``redis`` or ``postgres``; ConfigurationError otherwise."""
    scheme, sep, _ = url.partition("://")
    kind = _SCHEMES.get(scheme.lower()) if sep else None
    if kind is None:
        raise ConfigurationError(
            f"unsupported store URL {redact(url)!r}; supported: " + ", ".join(SUPPORTED)
        )
    return kind


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for logs and errors)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        netloc = f"{user}:***@{host}{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unparseable URL>"


def open_engine(url: str, namespace: str, options: dict[str, Any]) -> BlockingEngine:
    """Open a memory or SQLite engine (blocking; may touch the file system)."""
    kind = backend_kind(url)
    options = dict(options)
    clock: Clock = options.pop("clock", None) or SYSTEM_CLOCK
    if kind == "memory":
        from .memory import MemoryEngine, named_state

        _reject_unknown(options, kind)
        name = url.split("://", 1)[1].strip("/")
        return MemoryEngine(named_state(name), namespace, clock)
    if kind == "sqlite":
        from .sqlite import SQLiteEngine, sqlite_path_from_url

        busy_timeout = options.pop("busy_timeout", 10.0)
        synchronous = options.pop("synchronous", "NORMAL")
        _reject_unknown(options, kind)
        return SQLiteEngine(
            sqlite_path_from_url(url),
            namespace,
            clock=clock,
            busy_timeout=_option_seconds(busy_timeout, "busy_timeout"),
            synchronous=str(synchronous),
        )
    raise AssertionError(f"{kind} stores are opened by their own backend")


def _option_seconds(value: Any, name: str) -> float:
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


def _reject_unknown(options: dict[str, Any], kind: str) -> None:
    if options:
        raise ConfigurationError(
            f"unknown option(s) for the {kind} store: {', '.join(sorted(options))}"
        )
