"""Shared fixtures: which stores the conformance suite runs against.

``CLUSTERSYNC_TEST_BACKENDS`` (comma-separated) selects backends; the default is every
backend this checkout supports. Each test gets its own namespace.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.servers import postgres_server, private_server, redis_server
from tests.topologies import (
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

ALL_BACKENDS = ("memory", "sqlite", "redis", "postgres", "redis-grant")
#: Backends whose stores live in a server process (started once per test session).
SERVER_BACKENDS = ("redis", "postgres")


def selected_backends() -> list[str]:
    raw = os.environ.get("CLUSTERSYNC_TEST_BACKENDS", "")
    chosen = [b.strip() for b in raw.split(",") if b.strip()] or list(ALL_BACKENDS)
    unknown = sorted(set(chosen) - set(ALL_BACKENDS))
    if unknown:
        raise pytest.UsageError(f"unknown backends in CLUSTERSYNC_TEST_BACKENDS: {unknown}")
    return chosen


def make_store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A store URL for ``backend``: fresh for memory and SQLite; the session's server for
    Redis and PostgreSQL (tests are isolated there by their own namespace)."""
    if backend == "memory":
        return f"memory://test-{uuid.uuid4().hex}"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'cluster.db'}"
    if backend == "redis":
        url: str = request.getfixturevalue("redis_server").url
        return url
    if backend == "redis-grant":  # the same server; blocked acquires wait for a grant
        url = request.getfixturevalue("redis_server").url
        return url + ("&" if "?" in url else "?") + "handoff=grant"
    if backend == "postgres":
        url = request.getfixturevalue("postgres_server").url
        return url
    raise AssertionError(backend)


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
