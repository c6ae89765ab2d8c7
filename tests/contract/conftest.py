"""The contract suite runs on every target, topology targets included (see
``tests/conftest.py``)."""

from __future__ import annotations

import pytest

from tests.conftest import suite_backends


@pytest.fixture(params=suite_backends())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
