"""Redis URL forms (docs/guide/stores.md) beyond redis://host:port/db (which the whole
suite uses): unix sockets, Sentinel and Cluster URLs, and the store's own options given in
the URL or as keywords (``handoff``, ``min_replicas``, ``min_replicas_timeout``,
``failover_timeout``, ``sentinel_password``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import clustersync as cs
from clustersync.stores.redis.urls import (
    DEFAULT_FAILOVER_TIMEOUT,
    Settings,
    Target,
    parse_target,
    read_settings,
)
from tests.servers import RedisServer, ServerStarter


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "redis.sock"


def test_unix_socket_url(private_server: ServerStarter, socket_path: Path) -> None:
    """unix:///path.sock reaches Redis through its Unix socket: locks and jobs work."""
    private_server(RedisServer(extra_args=["--unixsocket", str(socket_path)]))
    with cs.open_store(f"unix://{socket_path}", namespace="unix") as store:
        assert store.url == f"unix://{socket_path}"
        mutex = cs.Mutex(store, "over-a-socket")
        with mutex:
            first = mutex.token
            assert first is not None
        with mutex:
            assert mutex.token is not None
            assert mutex.token > first
        fired: list[str] = []
        scheduler = cs.get_job_once_scheduler(store)
        scheduler.set_callback(lambda key, props: fired.append(key))
        scheduler.start()
        scheduler.schedule_once("now", datetime.now(UTC))
        deadline = time.monotonic() + 5
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fired == ["now"]


def test_unix_socket_that_does_not_exist(socket_path: Path) -> None:
    """A missing socket file is an unreachable store, not a raw driver error."""
    with pytest.raises(cs.StoreUnavailableError) as info:
        cs.open_store(f"unix://{socket_path}")
    assert info.value.__cause__ is not None


# -- Sentinel and Cluster URLs, the store's own options ----------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster",
            Target(
                "sentinel",
                "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster",
                (("127.0.0.1", 26379), ("127.0.0.1", 26380)),
                "mymaster",
            ),
        ),
        (
            "redis+sentinel://:p%40ss@h1:1,h2/svc/3/",
            Target(
                "sentinel",
                "redis+sentinel://:p%40ss@h1:1,h2/svc/3/",
                (("h1", 1), ("h2", 26379)),
                "svc",
                3,
                None,
                "p@ss",
            ),
        ),
        (
            "REDIS+SENTINEL://user:pw@[::1]:5000/svc",
            Target(
                "sentinel",
                "REDIS+SENTINEL://user:pw@[::1]:5000/svc",
                (("::1", 5000),),
                "svc",
                0,
                "user",
                "pw",
            ),
        ),
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2",
            Target(
                "cluster",
                "redis+cluster://10.0.0.1:7000,10.0.0.2",
                (("10.0.0.1", 7000), ("10.0.0.2", 6379)),
            ),
        ),
        (
            "redis+cluster://:s3cret@h:7000/0",
            Target(
                "cluster", "redis+cluster://:s3cret@h:7000/0", (("h", 7000),), password="s3cret"
            ),
        ),
        ("redis://h:1/0", Target("server", "redis://h:1/0")),
    ],
)
def test_topology_urls_are_parsed(url: str, expected: Target) -> None:
    assert parse_target(url) == expected


BAD_TOPOLOGY_URLS = [
    "redis+sentinel://h:1",  # no service
    "redis+sentinel://h:1/",
    "redis+sentinel://h:1/svc/x",  # db not a number
    "redis+sentinel://h:1/svc/1/2",
    "redis+sentinel://h:notaport/svc",
    "redis+sentinel://h:70000/svc",
    "redis+sentinel://h:0/svc",
    "redis+sentinel://,h:1/svc",  # an empty address
    "redis+sentinel://::1:1/svc",  # IPv6 without brackets
    "redis+sentinel://[::1/svc",
    "redis+sentinel://h:1/svc?socket_timeout=1",  # redis-py options are keyword options
    "redis+sentinel://h:1/svc#frag",
    "redis+cluster://h:1/1",  # Redis Cluster has only db 0
    "redis+cluster://h:1?foo=bar",
    "redis+cluster://:secret@:1",  # no host
]


@pytest.mark.parametrize("url", BAD_TOPOLOGY_URLS)
def test_malformed_topology_urls_are_configuration_errors(url: str) -> None:
    """Rejected before anything is connected, without the password in the message."""
    with pytest.raises(cs.ConfigurationError) as info:
        cs.open_store(url).close()
    assert "secret" not in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "options", "expected"),
    [
        ("redis://h/0", {}, Settings(min_replicas_timeout=1.0, failover_timeout=0.0)),
        ("redis+cluster://h", {}, Settings(failover_timeout=DEFAULT_FAILOVER_TIMEOUT)),
        (
            "redis://h/0?min_replicas=1&handoff=grant",
            {},
            Settings(handoff="grant", min_replicas=1),
        ),
        ("redis://h/0", {"min_replicas": 2, "min_replicas_timeout": 0.25}, None),
        ("redis://h/0?min_replicas=2", {"min_replicas": 2}, Settings(min_replicas=2)),
        ("redis+sentinel://h/s?failover_timeout=0", {}, Settings(failover_timeout=0.0)),
        ("redis://h/0?failover_timeout=2.5", {}, Settings(failover_timeout=2.5)),
    ],
)
def test_store_options_from_the_url_and_the_keywords(
    url: str, options: dict[str, Any], expected: Settings | None
) -> None:
    left = dict(options)
    rest, settings = read_settings(url, left, socket_timeout=5.0)
    assert left == {}, "the store's options are taken out"
    assert "min_replicas" not in rest
    assert "failover_timeout" not in rest
    if expected is None:
        expected = Settings(min_replicas=2, min_replicas_timeout=0.25)
    assert settings == expected


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("redis://127.0.0.1:1/0?min_replicas=-1", {}),
        ("redis://127.0.0.1:1/0?min_replicas=x", {}),
        ("redis://127.0.0.1:1/0?min_replicas=1.5", {}),
        ("redis://127.0.0.1:1/0?min_replicas=101", {}),
        ("redis://127.0.0.1:1/0?min_replicas=1", {"min_replicas": 2}),  # conflicting
        ("redis://127.0.0.1:1/0", {"min_replicas": True}),
        ("redis://127.0.0.1:1/0", {"min_replicas": 1.0}),
        ("redis://127.0.0.1:1/0", {"min_replicas": "1"}),
        ("redis://127.0.0.1:1/0", {"min_replicas": None}),
        ("redis://127.0.0.1:1/0", {"min_replicas": 1, "min_replicas_timeout": 0}),
        ("redis://127.0.0.1:1/0", {"min_replicas": 1, "min_replicas_timeout": float("nan")}),
        # WAIT's answer comes after its timeout: the socket must wait longer than that.
        ("redis://127.0.0.1:1/0", {"min_replicas_timeout": 5.0, "socket_timeout": 5.0}),
        ("redis://127.0.0.1:1/0?min_replicas_timeout=abc", {}),
        ("redis://127.0.0.1:1/0?failover_timeout=-1", {}),
        ("redis://127.0.0.1:1/0", {"failover_timeout": float("inf")}),
        ("redis://127.0.0.1:1/0", {"sentinel_password": "pw"}),  # not a Sentinel URL
        ("redis+sentinel://127.0.0.1:1/s", {"sentinel_password": 42}),
        ("redis://127.0.0.1:1/0", {"handoff": "bogus"}),
    ],
)
def test_bad_store_options_are_configuration_errors(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(cs.ConfigurationError) as info:
        cs.open_store(url, **options).close()
    assert isinstance(info.value, ValueError)


def test_min_replicas_is_the_string_of_an_int_only_in_the_url() -> None:
    """``min_replicas="1"`` as a keyword is a mistake; in the URL every value is text."""
    with pytest.raises(cs.ConfigurationError, match="min_replicas"):
        read_settings("redis://h/0", {"min_replicas": "1"}, socket_timeout=5.0)
    _, settings = read_settings("redis://h/0?min_replicas=1", {}, socket_timeout=5.0)
    assert settings.min_replicas == 1
