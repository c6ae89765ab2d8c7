"""Fixtures of the conformance suite (asyncio source; the sync copy is generated)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clustersync import aio as cs
from clustersync._concurrency import aio as shim
from clustersync.testing import ManualClock
from tests.conftest import kind_of, store_suite_backends

#: How long a watch for something that must not happen lasts while a manual clock
#: stands still (real time only reveals bugs that do not need the store's time to move).
QUIET = 0.25
#: How often a watched condition is checked.
POLL = 0.005

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


@pytest.fixture(params=store_suite_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """The store under test (overrides the suite-wide ``backend``: the store suites also
    run on the topologies of several servers, see ``tests/conftest.py``)."""
    name: str = request.param
    return name


@pytest.fixture
async def store(store_url: str, namespace: str) -> AsyncIterator[cs.Store]:
    """A store on the backend under test, in a namespace of its own."""
    opened = await cs.open_store(store_url, namespace=namespace)
    yield opened
    await opened.close()


async def eventually(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = shim.monotonic() + timeout
    while not predicate():
        if shim.monotonic() > deadline:
            return False
        await shim.sleep(0.005)
    return True


class TimeControl:
    """The store under test and the means to move the store's time, so that one test
    drives lease expiry and due times on every backend.

    - Memory and SQLite: a :class:`ManualClock` is the store's clock. Time moves only
      when the test says so, at once: deterministic, and a watch for something that must
      not happen lasts :data:`QUIET` seconds while the clock stands still.
    - Redis and PostgreSQL: the server's own clock. Moving time means waiting for it, so
      scenarios use short times (fractions of a second); a watch ends when the server's
      clock reaches the moment it is about.

    Times are always the *store's* (:meth:`now`, :meth:`at`), never the host's. Binary
    fractions of a second keep a manual clock exact.
    """

    def __init__(
        self,
        store: cs.Store,
        *,
        url: str,
        namespace: str,
        clock: ManualClock | None,
        offset: float = 0.0,
    ) -> None:
        self.store = store
        #: The manual clock driving the store, or None for a server store.
        self.clock = clock
        self._url = url
        self._namespace = namespace
        self._offset = offset

    @property
    def manual(self) -> bool:
        """Whether a manual clock drives the store (else real time passes)."""
        return self.clock is not None

    async def open_store(self) -> cs.Store:
        """Another instance: a second store on the same backend and namespace (and, with
        a manual clock, the same clock). Close it (``async with``)."""
        options: dict[str, Any] = {} if self.clock is None else {"clock": self.clock}
        return await cs.open_store(self._url, namespace=self._namespace, **options)

    def time(self) -> float:
        """The store's time in seconds since the epoch, for code that cannot wait on the
        store (callbacks): the manual clock, or the host's clock corrected by the offset
        measured when the fixture started. The estimate is never earlier than the
        server's time (it errs late by at most that one round trip), so checks that
        something did not happen early stay sound."""
        if self.clock is not None:
            return self.clock.time()
        return time.time() + self._offset

    async def now(self) -> datetime:
        """The store's own time (microsecond precision, aware UTC)."""
        return _moment(await self.store._ops.now_us())

    async def at(self, seconds: float) -> datetime:
        """The moment ``seconds`` from now by the store's clock."""
        return await self.now() + timedelta(seconds=seconds)

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the store's clock (at once with a manual clock)."""
        await self.advance_to(await self.at(seconds))

    async def advance_to(
        self,
        moment: datetime,
        unchanged: Callable[[], bool] | None = None,
        what: str = "nothing changed",
    ) -> None:
        """Bring the store's clock to ``moment`` (nothing to do if it is already there).

        With ``unchanged``, first assert that it holds while the store's time is before
        ``moment``: for :data:`QUIET` seconds before a manual clock jumps, or throughout
        the wait for a server's clock.
        """
        target = _micros(moment)
        if self.clock is None:
            if unchanged is not None:
                await self._watch(unchanged, what, None, target)
            while (now := await self.store._ops.now_us()) < target:
                await shim.sleep((target - now) / 1e6)
            return
        if unchanged is not None:
            await self._watch(unchanged, what, QUIET, None)
        now = await self.store._ops.now_us()
        if now < target:
            self.clock.advance((target - now) / 1e6)
            while await self.store._ops.now_us() < target:  # float rounding fell short
                self.clock.advance(1e-6)

    async def quiet(
        self, condition: Callable[[], bool], what: str, *, until: datetime | None = None
    ) -> None:
        """Assert that ``condition`` keeps holding for :data:`QUIET` seconds of real time,
        while the store's time is before ``until``: a manual clock stands still; on a
        server the watch ends early if the server's clock reaches ``until``."""
        await self._watch(condition, what, QUIET, None if until is None else _micros(until))

    async def _watch(
        self,
        condition: Callable[[], bool],
        what: str,
        seconds: float | None,
        until_us: int | None,
    ) -> None:
        """Check ``condition`` every :data:`POLL` seconds, for ``seconds`` (None: until
        ``until_us``). A check counts only if the store's time read *after* it is still
        before ``until_us``: whatever the check saw had then happened before that."""
        end = None if seconds is None else shim.monotonic() + seconds
        while True:
            holds = condition()
            if until_us is not None and await self.store._ops.now_us() >= until_us:
                return
            if not holds:
                pytest.fail(f"{what}: no longer true before the store's clock moved on")
            if end is not None and shim.monotonic() >= end:
                return
            await shim.sleep(POLL)


@pytest.fixture
async def timed(backend: str, store_url: str, namespace: str) -> AsyncIterator[TimeControl]:
    """The store under test with control over its time (see :class:`TimeControl`): a
    manual clock for memory and SQLite, the server's real clock for Redis and PostgreSQL."""
    # Stores that take an injected clock (memory, SQLite) run on a manual one; the server
    # stores (Redis, PostgreSQL) judge time by the server's own clock.
    clock = ManualClock() if kind_of(backend).accepts_clock else None
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    opened = await cs.open_store(store_url, namespace=namespace, **options)
    try:
        offset = 0.0
        if clock is None:
            # Read after ``sent``, the server's time overestimates the offset by at
            # most the round trip; one more microsecond covers its truncation.
            sent = time.time()
            offset = (await opened._ops.now_us() + 1) / 1e6 - sent
        yield TimeControl(opened, url=store_url, namespace=namespace, clock=clock, offset=offset)
    finally:
        await opened.close()
