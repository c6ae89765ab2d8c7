"""Smoke test of the fixtures: a mutex can be taken and released on every store."""

from __future__ import annotations

from clustersync import aio as cs


async def test_mutex_round_trip(store: cs.Store) -> None:
    mutex = cs.Mutex(store, "smoke")
    async with mutex:
        assert mutex.locked()
        first = mutex.token
        assert first is not None
        assert first > 0
    assert not mutex.locked()
    assert mutex.token is None
    async with mutex:
        assert mutex.token is not None
        assert mutex.token > first
