"""Fixtures of the multi-process tests.

The tests run on every selected backend that processes can share
(``CLUSTERSYNC_TEST_BACKENDS``; the registry says which): SQLite (a fresh file per test)
and the session's Redis and PostgreSQL servers (a fresh namespace per test). The memory
store cannot be shared between processes, so it is left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import shared_backends

from .harness import Cluster


@pytest.fixture(params=shared_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """The durable backend under test (overrides the suite-wide ``backend``)."""
    name: str = request.param
    return name


@pytest.fixture
def cluster(backend: str, store_url: str, namespace: str, tmp_path: Path) -> Iterator[Cluster]:
    """Workers on the store ``store_url``, in a namespace of their own; every one of them
    is killed when the test ends."""
    group = Cluster(tmp_path, store_url, namespace, backend)
    try:
        yield group
    finally:
        group.kill_all()
