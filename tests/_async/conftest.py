"""Fixtures of the conformance suite (asyncio source; the sync copy is generated)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clustersync import aio as cs
from clustersync.testing import ManualClock


@pytest.fixture
async def store(store_url: str, namespace: str) -> AsyncIterator[cs.Store]:
    """A store on the backend under test, in a namespace of its own."""
    opened = await cs.open_store(store_url, namespace=namespace)
    yield opened
    await opened.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def clocked_store(
    backend: str, store_url: str, namespace: str, clock: ManualClock
) -> AsyncIterator[cs.Store]:
    """A store whose lease expiry and job due times follow ``clock`` (memory and SQLite;
    server stores judge time by their own clock, so tests using this skip them)."""
    if backend not in ("memory", "sqlite"):
        pytest.skip("server stores use their own clock")
    opened = await cs.open_store(store_url, namespace=namespace, clock=clock)
    yield opened
    await opened.close()
