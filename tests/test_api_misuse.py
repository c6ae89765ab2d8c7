"""Misuse that used to give riddles now says what is wrong and what to do: a store of
the other API, a forgotten ``await``, a scheduler asked for with other options."""

from __future__ import annotations

import uuid
import warnings
from datetime import timedelta

import pytest

import clustersync as cs
from clustersync import aio


def _url() -> str:
    return f"memory://misuse-{uuid.uuid4().hex}"


async def test_a_threading_store_given_to_the_asyncio_api() -> None:
    with cs.open_store(_url()) as store:
        for build in (
            lambda: aio.Mutex(store, "m"),  # type: ignore[arg-type]
            lambda: aio.schedule(store, "j", aio.wait_for_interval(timedelta(1)), print),  # type: ignore[arg-type]
            lambda: aio.get_job_once_scheduler(store),  # type: ignore[arg-type]
        ):
            with pytest.raises(TypeError) as raised:
                build()
            message = str(raised.value)
            assert "clustersync.open_store()" in message
            assert "clustersync.aio.open_store()" in message
            assert "not Store" not in message


async def test_an_asyncio_store_given_to_the_threading_api() -> None:
    async with await aio.open_store(_url()) as store:
        with pytest.raises(TypeError, match=r"threading API .* clustersync\.aio\.open_store\(\)"):
            cs.Mutex(store, "m")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="threading API"):
            cs.get_job_once_scheduler(store)  # type: ignore[arg-type]


async def test_a_forgotten_await() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" must not follow
        coroutine = aio.open_store(_url())
        with pytest.raises(TypeError, match=r"forget `await`"):
            aio.Mutex(coroutine, "m")  # type: ignore[arg-type]


def test_not_a_store_at_all() -> None:
    with pytest.raises(TypeError, match="store must be a Store from open_store"):
        cs.Mutex("sqlite:///x.db", "m")  # type: ignore[arg-type]


def test_a_second_scheduler_with_other_options_is_refused() -> None:
    with cs.open_store(_url()) as store:
        first = cs.get_job_once_scheduler(store, claim_ttl=20)
        assert cs.get_job_once_scheduler(store) is first
        assert cs.get_job_once_scheduler(store, claim_ttl=20.0) is first
        with pytest.raises(cs.SchedulerError, match=r"claim_ttl=99\.0 \(it has 20\.0\)"):
            cs.get_job_once_scheduler(store, claim_ttl=99)
        with pytest.raises(ValueError, match="max_running"):
            cs.get_job_once_scheduler(store, max_running=0)
        assert first.claim_ttl == 20.0


def test_the_renewer_is_created_once_under_concurrent_first_use() -> None:
    """(Suspected in review: ``Store.renewer()`` was created lazily without a lock, so two
    threads acquiring at once could each start a renewer.) One renewer per store."""
    import threading

    with cs.open_store(_url()) as store:
        start = threading.Barrier(16)
        seen: list[object] = []

        def first_use() -> None:
            start.wait()
            seen.append(store._renewer())

        threads = [threading.Thread(target=first_use) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({id(renewer) for renewer in seen}) == 1
