"""Fixtures of the store contract suite: it runs on every target of the store suites,
the topologies of several servers included (see ``tests/conftest.py``)."""

from __future__ import annotations

import pytest

from tests.conftest import store_suite_backends


@pytest.fixture(params=store_suite_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """The store under test (overrides the suite-wide ``backend``)."""
    name: str = request.param
    return name
