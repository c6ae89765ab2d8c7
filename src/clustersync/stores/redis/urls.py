"""Redis URL forms and the options of the Redis store (no I/O).

- ``redis://``, ``rediss://``, ``unix://``: one server (redis-py's ``from_url`` reads them);
- ``redis+sentinel://[[user]:password@]host:port[,host:port…]/SERVICE[/DB]``: the
  addresses are sentinels; the master of ``SERVICE`` is found through them;
- ``redis+cluster://[[user]:password@]host:port[,host:port…]``: seed nodes of a Redis
  Cluster.

The store's own options may also be given in the query of any of them (so that
``CLUSTERSYNC_URL`` can carry them): ``handoff``, ``grant_waiters``, ``min_replicas``,
``min_replicas_timeout``, ``failover_timeout``. Every malformed URL or option is a
:class:`~clustersync.ConfigurationError` whose message names the URL without its
password.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ...exceptions import ConfigurationError
from ..options import (
    DEFAULT_GRANT_WAITERS,
    option_grant_waiters,
    option_grant_waiters_text,
    option_timeout,
)
from ..registry import redact

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
#: Ports assumed when an address of a Sentinel or Cluster URL has none.
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_REDIS_PORT = 6379
#: ``handoff`` values: notify waiters of a release, or grant the lease to the first one.
HANDOFFS = ("notify", "grant")
#: The default ``handoff``: a release grants the lease to the first queued waiter.
DEFAULT_HANDOFF = "grant"
#: Most replicas ``min_replicas`` may ask for (a typo guard: nobody runs more).
MAX_MIN_REPLICAS = 100
#: How long a call retries errors that prove it was not executed, by default: long enough
#: for a failover of a few seconds (the master is found again, the cluster is up again),
#: and none for a single server (there is nothing to fail over to).
DEFAULT_FAILOVER_TIMEOUT = 5.0
#: Longest ``WAIT`` for the replicas by default (capped at half the socket timeout).
DEFAULT_MIN_REPLICAS_TIMEOUT = 1.0

Address = tuple[str, int]
Mode = Literal["server", "sentinel", "cluster"]


@dataclass(frozen=True)
class Target:
    """Where a Redis URL points: one server, a Sentinel service or a Cluster."""

    mode: Mode
    #: The URL without the store's own query options (for ``from_url`` on one server).
    url: str
    #: Sentinels (``sentinel``) or seed nodes (``cluster``).
    addresses: tuple[Address, ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Settings:
    """The store's own options, from the keyword options and the URL's query."""

    handoff: str = DEFAULT_HANDOFF
    grant_waiters: int = DEFAULT_GRANT_WAITERS
    min_replicas: int = 0
    min_replicas_timeout: float = DEFAULT_MIN_REPLICAS_TIMEOUT
    failover_timeout: float = 0.0


def _bad(url: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"invalid Redis URL {redact(url)!r}: {why}")


def _handoff(value: Any) -> str:
    if value not in HANDOFFS:
        raise ConfigurationError(
            f"invalid store option: handoff must be 'notify' or 'grant', got {value!r}"
        )
    return str(value)


def _replicas(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MIN_REPLICAS:
        raise ConfigurationError(
            f"invalid store option: min_replicas must be an int from 0 to {MAX_MIN_REPLICAS},"
            f" got {value!r}"
        )
    return value


def _replicas_text(text: str) -> int:
    return _replicas(int(text) if text.strip().isdigit() else text)


def _seconds(name: str, *, allow_zero: bool) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        return option_timeout(value, name, allow_zero=allow_zero)

    return parse


def _seconds_text(name: str, *, allow_zero: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigurationError(
                f"invalid store option: {name} must be a number of seconds, got {text!r}"
            ) from None
        return option_timeout(value, name, allow_zero=allow_zero)

    return parse


#: The store's options that the URL's query may carry: how a keyword option is read, and
#: how the URL's text is.
QUERY_OPTIONS: dict[str, tuple[Callable[[Any], Any], Callable[[str], Any]]] = {
    "handoff": (_handoff, _handoff),
    "grant_waiters": (option_grant_waiters, option_grant_waiters_text),
    "min_replicas": (_replicas, _replicas_text),
    "min_replicas_timeout": (
        _seconds("min_replicas_timeout", allow_zero=False),
        _seconds_text("min_replicas_timeout", allow_zero=False),
    ),
    "failover_timeout": (
        _seconds("failover_timeout", allow_zero=True),
        _seconds_text("failover_timeout", allow_zero=True),
    ),
}


def read_settings(url: str, options: dict[str, Any], socket_timeout: float) -> tuple[str, Settings]:
    """Pop the store's own options from ``options`` and from the URL's query (the same
    option in both must agree); return the URL without them and the settings."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _bad(url, str(exc)) from exc
    query = parse_qsl(parts.query, keep_blank_values=True)
    found: dict[str, Any] = {}
    for name, (parse, parse_text) in QUERY_OPTIONS.items():
        values = [parse_text(value) for key, value in query if key == name]
        if name in options:
            values.append(parse(options.pop(name)))
        if len(set(values)) > 1:
            raise ConfigurationError(f"conflicting {name} settings in the URL and the options")
        if values:
            found[name] = values[0]
    if any(key in QUERY_OPTIONS for key, _ in query):
        rest = urlencode([item for item in query if item[0] not in QUERY_OPTIONS])
        url = urlunsplit(parts._replace(query=rest))
    mode = mode_of(url)
    found.setdefault("failover_timeout", 0.0 if mode == "server" else DEFAULT_FAILOVER_TIMEOUT)
    wait = found.setdefault(
        "min_replicas_timeout", min(DEFAULT_MIN_REPLICAS_TIMEOUT, socket_timeout / 2)
    )
    if wait >= socket_timeout:
        raise ConfigurationError(
            f"invalid store option: min_replicas_timeout ({wait:g} s) must be shorter than"
            f" socket_timeout ({socket_timeout:g} s): the answer to WAIT comes after it"
        )
    return url, Settings(**found)


def mode_of(url: str) -> Mode:
    scheme = url.partition("://")[0].lower()
    if scheme == SENTINEL_SCHEME:
        return "sentinel"
    if scheme == CLUSTER_SCHEME:
        return "cluster"
    return "server"


def parse_target(url: str) -> Target:
    """The topology ``url`` points to (the store's own options already removed)."""
    mode = mode_of(url)
    if mode == "server":
        return Target("server", url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _bad(url, str(exc)) from exc
    if parts.query:
        names = sorted({key for key, _ in parse_qsl(parts.query, keep_blank_values=True)})
        raise _bad(
            url,
            f"unknown query option(s) {', '.join(names) or parts.query!r}; a {mode} URL takes"
            f" only {', '.join(QUERY_OPTIONS)} (pass redis-py options as keyword options)",
        )
    if parts.fragment:
        raise _bad(url, "a fragment (#…) has no meaning here")
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    default_port = DEFAULT_SENTINEL_PORT if mode == "sentinel" else DEFAULT_REDIS_PORT
    addresses = tuple(_address(url, item, default_port) for item in hostlist.split(","))
    segments = [unquote(segment) for segment in parts.path.split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash
    service, db = "", 0
    if mode == "sentinel":
        if not segments or not segments[0]:
            raise _bad(url, "the service name is missing (redis+sentinel://HOST:PORT/SERVICE)")
        service = segments[0]
        if len(segments) > 2:
            raise _bad(url, "the path is /SERVICE or /SERVICE/DB")
        if len(segments) == 2:
            db = _db(url, segments[1])
    elif segments and (len(segments) > 1 or _db(url, segments[0]) != 0):
        raise _bad(url, "Redis Cluster has only database 0 (no path, or /0)")
    return Target(mode, url, addresses, service, db, username, password)


def _address(url: str, item: str, default_port: int) -> Address:
    item = item.strip()
    if not item:
        raise _bad(url, "an empty address in the host list")
    if item.startswith("["):  # [IPv6]:port
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _bad(url, f"malformed address {item!r}")
        port_text = rest[1:]
    else:
        host, _, port_text = item.partition(":")
        if ":" in port_text:
            raise _bad(url, f"write IPv6 addresses in brackets: {item!r}")
    if not host:
        raise _bad(url, f"no host in {item!r}")
    if not port_text:
        return (host, default_port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad(url, f"invalid port in {item!r}")
    return (host, int(port_text))


def _db(url: str, text: str) -> int:
    if not text.isdigit():
        raise _bad(url, f"the database must be a number, got {text!r}")
    return int(text)
