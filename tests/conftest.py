"""Shared fixtures: which stores the conformance suite runs against.

``CLUSTERSYNC_TEST_BACKENDS`` (comma-separated) selects backends; the default is every
backend this checkout supports. Each test gets its own namespace.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

ALL_BACKENDS = ("memory", "sqlite")


def selected_backends() -> list[str]:
    raw = os.environ.get("CLUSTERSYNC_TEST_BACKENDS", "")
    chosen = [b.strip() for b in raw.split(",") if b.strip()] or list(ALL_BACKENDS)
    unknown = sorted(set(chosen) - set(ALL_BACKENDS))
    if unknown:
        raise pytest.UsageError(f"unknown backends in CLUSTERSYNC_TEST_BACKENDS: {unknown}")
    return chosen


def make_store_url(backend: str, tmp_path: Path) -> str:
    """A fresh store URL for ``backend`` (private to one test)."""
    if backend == "memory":
        return f"memory://test-{uuid.uuid4().hex}"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'cluster.db'}"
    raise AssertionError(backend)


@pytest.fixture(params=selected_backends())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def store_url(backend: str, tmp_path: Path) -> str:
    return make_store_url(backend, tmp_path)


@pytest.fixture
def namespace() -> str:
    return f"ns-{uuid.uuid4().hex[:12]}"
