"""Fixtures of the examples' tests: the store kinds they run on."""

from __future__ import annotations

import pytest

from tests.conftest import kind_of, shared_backends


def example_backends() -> list[str]:
    """One selected target per store kind that processes share (SQLite, Redis,
    PostgreSQL): the examples do not depend on modes such as ``redis-grant``."""
    return [b for b in shared_backends() if kind_of(b).name == b]


@pytest.fixture(params=example_backends())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
