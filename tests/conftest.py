"""Shared fixtures: which stores the suites run against.

The stores come from the registry (:func:`clustersync.stores.store_kinds`): one *target*
per registered kind, plus one per mode worth testing on its own (``redis-notify``: Redis
with ``handoff="notify"``, its default being ``"grant"``; ``postgres-advisory``:
PostgreSQL with the opt-in ``handoff="advisory"``).
``CLUSTERSYNC_TEST_BACKENDS`` (comma-separated targets) selects some; the default is
every target, except that the targets served by a deployment of several servers run only
the store suites (``tests/conformance``, ``tests/contract``) by default (name them in
``CLUSTERSYNC_TEST_BACKENDS`` to run everything on them):

- the kinds of :data:`TOPOLOGY_KINDS` (Redis Sentinel, Redis Cluster), without their
  modes;
- the *topology targets* of :data:`TOPOLOGY_TARGETS`, which run a kind through a
  deployment of its own: ``postgres-multihost`` (the multi-host URL of a primary and a
  streaming standby) and ``postgres-pgbouncer`` (a transaction-pooling PgBouncer, with
  ``wakeups=poll``).

Each test gets its own namespace.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from clustersync.stores import StoreKind, store_kinds
from tests.servers import postgres_server, private_server, redis_server
from tests.topologies import (
    RedisClusterTopology,
    RedisSentinel,
    pgbouncer,
    postgres_replicated,
    postgres_sync_replicated,
    private_topology,
    redis_cluster,
    redis_sentinel,
)

__all__ = [
    "pgbouncer",
    "postgres_replicated",
    "postgres_server",
    "postgres_sync_replicated",
    "private_server",
    "private_topology",
    "redis_cluster",
    "redis_sentinel",
    "redis_server",
]

pytest.register_assert_rewrite("clustersync.testing.contract")

T = TypeVar("T")

#: A test URL per built-in kind: fresh for memory and SQLite; the session's server for
#: Redis and PostgreSQL (tests are isolated there by their own namespace).
UrlFactory = Callable[[Path, pytest.FixtureRequest], str]
TEST_URLS: dict[str, UrlFactory] = {
    "memory": lambda tmp, request: f"memory://test-{uuid.uuid4().hex}",
    "sqlite": lambda tmp, request: f"sqlite:///{tmp / 'cluster.db'}",
    "redis": lambda tmp, request: str(request.getfixturevalue("redis_server").url),
    "postgres": lambda tmp, request: str(request.getfixturevalue("postgres_server").url),
    "redis-sentinel": lambda tmp, request: _topology(request, "redis_sentinel", RedisSentinel).url,
    "redis-cluster": lambda tmp, request: (
        _topology(request, "redis_cluster", RedisClusterTopology).url
    ),
}
#: Kinds served by a topology of several servers (session fixtures of tests/topologies.py):
#: by default only the store suites run on them, without their modes (see the docstring).
TOPOLOGY_KINDS = frozenset({"redis-sentinel", "redis-cluster"})
#: Modes tested as targets of their own: kind -> [(suffix, URL query)]. Redis grants by
#: default (its ``notify`` mode is a target); PostgreSQL notifies by default (its opt-in
#: advisory queue is a target).
MODES = {
    "redis": [("-notify", "handoff=notify")],
    "postgres": [("-advisory", "handoff=advisory")],
}
#: Topology targets: name -> (kind name, URL of the session's deployment).
TOPOLOGY_TARGETS: dict[str, tuple[str, UrlFactory]] = {
    # A primary and an asynchronous streaming standby: the libpq multi-host URL with
    # target_session_attrs=read-write (the store must find the primary itself).
    "postgres-multihost": (
        "postgres",
        lambda tmp, request: str(request.getfixturevalue("postgres_replicated").url),
    ),
    # PgBouncer 1.18 in transaction-pooling mode: no LISTEN (wake-ups polled), and no
    # protocol-level prepared statements (PgBouncer < 1.21 cannot route them).
    "postgres-pgbouncer": (
        "postgres",
        lambda tmp, request: (
            str(request.getfixturevalue("pgbouncer").url)
            + "?wakeups=poll&prepared_statements=false"
        ),
    ),
}


def _targets() -> dict[str, tuple[StoreKind, str | None]]:
    """Target name -> (kind, URL query of its mode or None)."""
    targets: dict[str, tuple[StoreKind, str | None]] = {}
    for kind in store_kinds():
        targets[kind.name] = (kind, None)
        for suffix, query in MODES.get(kind.name, []):
            targets[kind.name + suffix] = (kind, query)
    kinds = {kind.name: kind for kind in store_kinds()}
    for name, (kind_name, _) in TOPOLOGY_TARGETS.items():
        if kind_name in kinds:
            targets[name] = (kinds[kind_name], None)
    return targets


TARGETS = _targets()
ALL_BACKENDS = tuple(TARGETS)


def kind_of(target: str) -> StoreKind:
    """The store kind of a target (``"redis-notify"`` -> the Redis kind)."""
    return TARGETS[target][0]


def _topology(request: pytest.FixtureRequest, fixture: str, kind: type[T]) -> T:
    topology = request.getfixturevalue(fixture)
    assert isinstance(topology, kind)
    return topology


def _named_backends() -> list[str] | None:
    """The targets ``CLUSTERSYNC_TEST_BACKENDS`` names, or None if it is not set."""
    raw = os.environ.get("CLUSTERSYNC_TEST_BACKENDS", "")
    chosen = [b.strip() for b in raw.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(ALL_BACKENDS))
    if unknown:
        raise pytest.UsageError(f"unknown backends in CLUSTERSYNC_TEST_BACKENDS: {unknown}")
    return chosen or None


def selected_backends() -> list[str]:
    """The targets of the whole suite: those named, else every target but those that
    only the store suites run on by default (see the module docstring)."""
    named = _named_backends()
    if named is not None:
        return named
    return [
        b
        for b in ALL_BACKENDS
        if b not in TOPOLOGY_TARGETS and kind_of(b).name not in TOPOLOGY_KINDS
    ]


def store_suite_backends() -> list[str]:
    """The targets of the store suites (tests/conformance, tests/contract): those named,
    else every target but the modes of the kinds of :data:`TOPOLOGY_KINDS`."""
    named = _named_backends()
    if named is not None:
        return named
    return [b for b in ALL_BACKENDS if kind_of(b).name not in TOPOLOGY_KINDS or b in TOPOLOGY_KINDS]


def shared_backends() -> list[str]:
    """The selected targets that processes can share (not in-process stores)."""
    return [b for b in selected_backends() if kind_of(b).reach != "process"]


def make_store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A store URL for the target ``backend``."""
    kind, query = TARGETS[backend]
    if backend in TOPOLOGY_TARGETS:
        return TOPOLOGY_TARGETS[backend][1](tmp_path, request)
    factory = TEST_URLS.get(kind.name)
    if factory is None:
        raise pytest.UsageError(
            f"no test URL for the store kind {kind.name!r}: add one to TEST_URLS in"
            " tests/conftest.py"
        )
    url = factory(tmp_path, request)
    if query is not None:
        url += ("&" if "?" in url else "?") + query
    return url


@pytest.fixture(params=selected_backends())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return make_store_url(backend, tmp_path, request)


@pytest.fixture
def namespace() -> str:
    return f"ns-{uuid.uuid4().hex[:12]}"
