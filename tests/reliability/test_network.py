"""Network faults between clients and Redis / PostgreSQL, injected by a loopback TCP proxy
(:mod:`tests.reliability.proxy`): latency, dropped connections and partitions.

Clients whose store URL points at the proxy suffer the faults; a client connected to the
server directly plays "the rest of the cluster". Every hold is logged with its token and
its start and end on ``time.monotonic()``, every write to the fenced resource is recorded,
and :mod:`clustersync.testing.checker` checks them: no overlapping holds (except a holder
told it lost), tokens strictly increasing, zero stale writes accepted, every one-shot job
fired (exactly once when nothing crashed).

Two regression tests need no server: a store whose renewals hang (as behind a partition,
until the driver's socket timeout) must still tell the holder at its deadline.

The session's servers are shared (each test has its own namespace); a proxy only ever
hurts the connections that go through it. Bounds are generous (a loaded 2-core machine).
``CLUSTERSYNC_SOAK=1`` runs more rounds under latency and more jobs through the drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import clustersync as cs
from clustersync import aio
from clustersync.testing.checker import (
    FencedResource,
    Firing,
    HoldLog,
    check,
    check_holds,
    check_one_shot,
)
from tests.conftest import TARGETS as TARGETS_BY_NAME
from tests.conftest import kind_of, selected_backends
from tests.servers import PostgresServer, RedisServer

from .conftest import soak_mode
from .proxy import TcpProxy

pytestmark = pytest.mark.slow

#: The server targets, with their modes (Redis notify, PostgreSQL's advisory queue): every
#: store of a test on a mode's target is opened in that mode.
TARGETS = [
    target
    for target in ("redis", "redis-notify", "postgres", "postgres-advisory")
    if target in selected_backends()
]
#: Options of stores that talk through the proxy: a socket timeout above the ttls used
#: here, so that timely loss detection cannot come from the socket timeout.
PROXIED: dict[str, Any] = {"socket_timeout": 5.0}
#: How late ``on_lost`` may come after the lease's local deadline (timer granularity and
#: a loaded machine).
LOST_SLACK = 1.0
#: Soak mode (``CLUSTERSYNC_SOAK=1``): more rounds under latency, more jobs under drops.
SOAK = soak_mode()
LATENCY_ROUNDS = 60 if SOAK else 5
DROPPED_JOBS, DROPPED_SPREAD = (400, 20.0) if SOAK else (40, 2.0)


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def kind(target: str) -> str:
    return kind_of(target).name


@pytest.fixture
def server(kind: str, target: str, request: pytest.FixtureRequest) -> RedisServer | PostgresServer:
    """The session's server of ``kind`` (never stopped here); its ``url`` carries the
    target's mode."""
    found: RedisServer | PostgresServer = request.getfixturevalue(f"{kind}_server")
    return with_mode(found, TARGETS_BY_NAME[target][1])


def with_mode(
    server: RedisServer | PostgresServer, query: str | None
) -> RedisServer | PostgresServer:
    """A view of ``server`` whose ``url`` ends with a store mode's ``query``
    (``handoff=…``); the same server otherwise."""
    if query is None:
        return server
    base = type(server)
    plain = server.url
    moded_url = plain + ("&" if "?" in plain else "?") + query
    moded = copy.copy(server)
    moded.__class__ = type(
        f"{base.__name__}WithMode", (base,), {"url": property(lambda self: moded_url)}
    )
    return moded


@pytest.fixture
def proxy(server: RedisServer | PostgresServer, kind: str) -> Iterator[TcpProxy]:
    with TcpProxy(server.port) as started:
        yield started
    print(f"proxy ({kind}): {started.stats}")  # the faults injected (pytest -s)


@pytest.fixture
def namespace() -> str:
    return f"net-{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Callable[[], bool], what: str, timeout: float) -> float:
    """Poll until ``predicate()``; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.005)
    return time.monotonic()


class Dropper:
    """Drops the proxy's connections every ``every`` seconds from a thread, until stopped."""

    def __init__(self, proxy: TcpProxy, every: float) -> None:
        self._proxy = proxy
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dropper", daemon=True)
        self.drops = 0

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.drops += self._proxy.drop_connections()

    def __enter__(self) -> Dropper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class Clients:
    """What the client threads of one test record: holds, fenced writes, errors."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holds: list[HoldLog] = []
        self.resource = FencedResource()
        self.errors: list[BaseException] = []
        self.store_errors = 0

    def run(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> threading.Thread:
        def body() -> None:
            try:
                fn(*args, **kwargs)
            except BaseException as exc:
                with self.lock:
                    self.errors.append(exc)

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        return thread

    def contend(
        self,
        store: cs.Store,
        who: str,
        rounds: int,
        *,
        ttl: float,
        hold: float = 0.005,
        long_hold: float = 0.0,
    ) -> None:
        """Take the mutex ``shared`` ``rounds`` times (the second hold lasts ``long_hold``
        if given), writing to the fenced resource at both ends of every hold."""
        for round_ in range(rounds):
            told = threading.Event()
            mutex = cs.Mutex(store, "shared", ttl=ttl, on_lost=told.set)
            while True:
                try:
                    mutex.acquire()
                    break
                except cs.StoreUnavailableError:  # only with a timeout, but count it anyway
                    with self.lock:
                        self.store_errors += 1
            start = time.monotonic()
            token = mutex.token
            assert token is not None
            self.resource.write(token, name="shared", holder=who)
            time.sleep(long_hold if round_ == 1 and long_hold else hold)
            self.resource.write(token, name="shared", holder=who)
            end = time.monotonic()
            try:
                mutex.release()
                lost = False
            except cs.LockLostError:
                lost = True
            with self.lock:
                self.holds.append(HoldLog("shared", token, start, end, who, lost or told.is_set()))

    def assert_clean(self) -> None:
        assert not self.errors, self.errors


# -- latency -------------------------------------------------------------------------------


@pytest.mark.timeout(600 if SOAK else 60)
def test_latency_keeps_holds_apart_and_tokens_increasing(
    server: RedisServer | PostgresServer, proxy: TcpProxy, namespace: str
) -> None:
    """20-30 ms each way (plus jitter) for three clients, none for a fourth: holds never
    overlap, tokens increase, and a hold longer than the ttl is renewed through the
    latency (nobody is told it lost)."""
    ttl, rounds = 1.0, LATENCY_ROUNDS
    proxy.set_latency(up=0.02, down=0.02, jitter=0.01)
    url = proxy.url(server.url)
    clients = Clients()
    with contextlib.ExitStack() as stack:
        slow = [stack.enter_context(cs.open_store(url, namespace=namespace, **PROXIED))]
        slow += [stack.enter_context(cs.open_store(url, namespace=namespace)) for _ in range(2)]
        direct = stack.enter_context(cs.open_store(server.url, namespace=namespace))
        began = time.monotonic()
        threads = [
            clients.run(clients.contend, store, f"slow{i}", rounds, ttl=ttl)
            for i, store in enumerate(slow[1:], start=1)
        ]
        # One slow client holds longer than the ttl once: renewed with 40+ ms round trips.
        threads.append(
            clients.run(clients.contend, slow[0], "slow0", rounds, ttl=ttl, long_hold=1.6 * ttl)
        )
        threads.append(clients.run(clients.contend, direct, "direct", rounds, ttl=ttl))
        for thread in threads:
            thread.join(500 if SOAK else 50)
        elapsed = time.monotonic() - began
    clients.assert_clean()
    assert all(not thread.is_alive() for thread in threads)

    report = check(holds=clients.holds, writes=clients.resource.writes)
    assert report.holds is not None
    assert report.holds.holds == 4 * rounds
    assert report.holds.lost == 0, [h for h in clients.holds if h.lost]
    assert clients.resource.rejected == 0
    tokens = [h.token for h in sorted(clients.holds, key=lambda h: h.start)]
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == len(tokens)
    assert proxy.stats.bytes_up > 0
    assert proxy.stats.bytes_down > 0
    # Each slow acquisition costs at least one 40 ms round trip.
    assert elapsed > 3 * rounds * 0.04


# -- dropped connections ------------------------------------------------------------------


def test_dropped_connections_mid_hold_and_mid_wait(
    server: RedisServer | PostgresServer, proxy: TcpProxy, namespace: str
) -> None:
    """Every connection through the proxy is reset every 150 ms for longer than the ttl,
    while one client holds the lock and another waits for it: the holder's renewals
    recover after each reconnect (it is never told it lost), the waiter does not get in
    while the lock is held and gets it after the release, and every other call either
    works or raises StoreUnavailableError."""
    ttl = 2.0
    url = proxy.url(server.url)
    clients = Clients()
    acquired: list[tuple[float, int]] = []
    with (
        cs.open_store(url, namespace=namespace, **PROXIED) as holder_store,
        cs.open_store(url, namespace=namespace, **PROXIED) as waiter_store,
        cs.open_store(url, namespace=namespace, **PROXIED) as busy_store,
    ):
        holder_told = threading.Event()
        holder = cs.Mutex(holder_store, "shared", ttl=ttl, on_lost=holder_told.set)
        assert holder.acquire(timeout=10)
        held_at, holder_token = time.monotonic(), holder.token
        assert holder_token is not None
        clients.resource.write(holder_token, name="shared", holder="holder")

        def wait_for_lock() -> None:
            told = threading.Event()
            waiter = cs.Mutex(waiter_store, "shared", ttl=ttl, on_lost=told.set)
            waiter.acquire()  # errors while waiting are retried inside acquire
            start = time.monotonic()
            token = waiter.token
            assert token is not None
            acquired.append((start, token))
            clients.resource.write(token, name="shared", holder="waiter")
            end = time.monotonic()
            waiter.release()
            with clients.lock:
                clients.holds.append(HoldLog("shared", token, start, end, "waiter", told.is_set()))

        waiter_thread = clients.run(wait_for_lock)
        outcomes: Counter[str] = Counter()
        with Dropper(proxy, every=0.15) as dropper:
            until = time.monotonic() + 1.5 * ttl
            while time.monotonic() < until:
                try:
                    busy_store._ops.list_leases()
                    outcomes["ok"] += 1
                except cs.StoreUnavailableError:
                    outcomes["StoreUnavailableError"] += 1
                time.sleep(0.01)
            assert holder.locked(), "the holder lost the lock to dropped connections"
            assert acquired == [], "the waiter got a held lock"
            clients.resource.write(holder_token, name="shared", holder="holder")
            released_at = time.monotonic()
            holder.release()  # retried through the drops (or left to expire, logged)
            clients.holds.append(
                HoldLog("shared", holder_token, held_at, released_at, "holder", False)
            )
            wait_until(lambda: bool(acquired), "the waiter acquires", 2 * ttl + 5)
        waiter_thread.join(10)
    clients.assert_clean()
    assert dropper.drops > 0
    assert proxy.stats.dropped > 0
    assert not holder_told.is_set()
    assert set(outcomes) <= {"ok", "StoreUnavailableError"}
    assert outcomes["ok"] > 0, outcomes
    assert acquired[0][1] > holder_token
    check(holds=clients.holds, writes=clients.resource.writes)
    assert clients.resource.rejected == 0


@pytest.mark.timeout(300 if SOAK else 60)
def test_one_shot_jobs_fire_exactly_once_through_dropped_connections(
    server: RedisServer | PostgresServer, proxy: TcpProxy, namespace: str
) -> None:
    """Two schedulers behind the proxy, connections reset every 200 ms while 40 jobs
    become due, half of them scheduled through the proxy too: no job is lost and none
    fires twice (no process crashed)."""
    claim_ttl = 1.5
    url = proxy.url(server.url)
    firings: list[Firing] = []
    lock = threading.Lock()
    keys = [f"job-{i:03d}" for i in range(DROPPED_JOBS)]
    now = datetime.now(UTC)
    spread = [timedelta(seconds=0.3 + DROPPED_SPREAD * i / len(keys)) for i in range(len(keys))]
    run_at = {key: now + delay for key, delay in zip(keys, spread, strict=True)}

    def callback_of(who: str) -> Callable[[str, Any], None]:
        def callback(key: str, props: Any) -> None:
            start = time.monotonic()
            assert props == {"key": key}
            time.sleep(0.05)
            with lock:
                firings.append(Firing(key, who, start, time.monotonic()))

        return callback

    with contextlib.ExitStack() as stack:
        direct = stack.enter_context(cs.open_store(server.url, namespace=namespace))
        stores = [
            stack.enter_context(cs.open_store(url, namespace=namespace, **PROXIED))
            for _ in range(2)
        ]
        for i, store in enumerate(stores):
            scheduler = cs.get_job_once_scheduler(store, claim_ttl=claim_ttl)
            scheduler.set_callback(callback_of(f"s{i}"))
            scheduler.start()
        direct_keys, proxied_keys = keys[::2], keys[1::2]
        cs.get_job_once_scheduler(direct).schedule_many(
            [(key, run_at[key], {"key": key}) for key in direct_keys]
        )
        proxied = cs.get_job_once_scheduler(stores[0])
        ambiguous = 0
        with Dropper(proxy, every=0.2) as dropper:
            for key in proxied_keys:
                # A reset may hit the call after the server stored the job: the retry
                # then finds it (DuplicateJobError), which means it was stored.
                for _ in range(100):
                    try:
                        proxied.schedule_once(key, run_at[key], {"key": key})
                        break
                    except cs.StoreUnavailableError:
                        time.sleep(0.02)
                    except cs.DuplicateJobError:
                        ambiguous += 1
                        break
                else:
                    pytest.fail(f"could not schedule {key} through the drops")
            wait_until(
                lambda: len({f.key for f in firings}) == len(keys),
                "all jobs fire",
                DROPPED_SPREAD + 30,
            )
        time.sleep(claim_ttl + 1.0)  # a second firing after a claim expired would show now
        pending = cs.get_job_once_scheduler(direct).list_scheduled_jobs()
    report = check_one_shot(keys, firings)
    assert report.fired == len(keys)
    assert report.run_twice == 0
    assert pending == []
    assert dropper.drops > 0


# -- a store that stops answering ---------------------------------------------------------


class HangingRenewals:
    """Wraps a store backend: while ``hang`` is set, ``renew_lease`` blocks (for up to
    ``seconds``) like a call to a server that stopped answering, then fails."""

    def __init__(self, backend: Any, seconds: float) -> None:
        self.backend = backend
        self.seconds = seconds
        self.hang = threading.Event()
        self.hung = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def _stall(self) -> None:
        self.hung += 1
        time.sleep(self.seconds)
        raise cs.StoreUnavailableError("no answer (simulated socket timeout)")

    def renew_lease(self, *args: Any) -> Any:
        if self.hang.is_set():
            self._stall()
        return self.backend.renew_lease(*args)


class AsyncHangingRenewals(HangingRenewals):
    async def renew_lease(self, *args: Any) -> Any:
        if self.hang.is_set():
            self.hung += 1
            await asyncio.sleep(self.seconds)
            raise cs.StoreUnavailableError("no answer (simulated socket timeout)")
        return await self.backend.renew_lease(*args)


def test_on_lost_at_the_deadline_while_a_renewal_hangs() -> None:
    """Regression: the renewal worker stuck in a call (until the driver's socket timeout,
    here 2.5 s) delayed ``on_lost`` far past the lease's deadline. Now it comes at the
    deadline, for the hold stuck in the call and for another hold queued behind it."""
    ttl, stall = 0.6, 2.5
    with cs.open_store(f"memory://hang-{uuid.uuid4().hex}", namespace="n") as store:
        hanging = HangingRenewals(store._backend, stall)
        store._backend = hanging
        lost: dict[str, float] = {}
        calls: Counter[str] = Counter()

        def told(name: str) -> None:
            calls[name] += 1
            lost[name] = time.monotonic()

        mutexes = [
            cs.Mutex(store, name, ttl=ttl, on_lost=functools.partial(told, name))
            for name in ("a", "b")
        ]
        for mutex in mutexes:
            assert mutex.acquire(timeout=5)
        hanging.hang.set()
        cut_at = time.monotonic()
        wait_until(lambda: len(lost) == 2, "on_lost of both holds", 10)
        assert hanging.hung >= 1
        for name, at in lost.items():
            assert at - cut_at <= ttl + LOST_SLACK, f"{name}: told {at - cut_at:.2f}s later"
        hanging.hang.clear()
        for mutex in mutexes:
            assert not mutex.locked()
            with pytest.raises(cs.LockLostError):
                mutex.release()
        time.sleep(max(0.0, cut_at + stall + 0.2 - time.monotonic()))  # the stuck call ends
    assert calls == {"a": 1, "b": 1}


async def test_aio_on_lost_at_the_deadline_while_a_renewal_hangs() -> None:
    ttl, stall = 0.6, 2.5
    async with await aio.open_store(f"memory://hang-{uuid.uuid4().hex}", namespace="n") as store:
        hanging = AsyncHangingRenewals(store._backend, stall)
        store._backend = hanging
        lost: list[float] = []
        mutex = aio.Mutex(store, "a", ttl=ttl, on_lost=lambda: lost.append(time.monotonic()))
        assert await mutex.acquire(timeout=5)
        hanging.hang.set()
        cut_at = time.monotonic()
        while not lost and time.monotonic() < cut_at + 10:
            await asyncio.sleep(0.01)
        assert hanging.hung >= 1  # (each attempt bounded: a second one may hang too)
        assert len(lost) == 1
        assert lost[0] - cut_at <= ttl + LOST_SLACK
        assert not mutex.locked()
        hanging.hang.clear()
        await asyncio.sleep(stall - (time.monotonic() - cut_at) + 0.2)  # the stuck call ends
        assert len(lost) == 1
        with pytest.raises(cs.LockLostError):
            await mutex.release()


# -- partitions ---------------------------------------------------------------------------


def test_partition_longer_than_ttl_fences_the_stale_holder(
    server: RedisServer | PostgresServer, proxy: TcpProxy, namespace: str
) -> None:
    """The holder is cut off (black hole, longer than the ttl) while it keeps writing with
    ``check()`` before each write: it is told it lost (``on_lost``, about at its deadline,
    not after the 5 s socket timeout), stops writing, a client connected directly takes
    over with a higher token, the stale holder's late write is rejected by the fenced
    resource and its ``release()`` raises LockLostError without freeing the new lease. A
    call made during the partition fails within its socket timeout."""
    ttl = 1.0
    url = proxy.url(server.url)
    resource = FencedResource()
    lost_at: list[float] = []
    holds: list[HoldLog] = []
    with (
        cs.open_store(url, namespace=namespace, **PROXIED) as cut_off,
        cs.open_store(url, namespace=namespace, socket_timeout=1.0) as impatient,
        cs.open_store(server.url, namespace=namespace) as direct,
    ):
        holder = cs.Mutex(
            cut_off, "shared", ttl=ttl, on_lost=lambda: lost_at.append(time.monotonic())
        )
        assert holder.acquire(timeout=10)
        held_at, stale = time.monotonic(), holder.token
        assert stale is not None
        last_write = [held_at]
        stop = threading.Event()

        def keep_writing() -> None:
            while not stop.is_set():
                try:
                    holder.check()
                except cs.LockLostError:
                    return
                resource.write(stale, name="shared", holder="holder")
                last_write[0] = time.monotonic()
                time.sleep(0.01)

        writer = threading.Thread(target=keep_writing, daemon=True)
        writer.start()
        time.sleep(0.5)  # renewed at least once through the proxy
        proxy.partition()
        cut_at = time.monotonic()
        try:
            taker = cs.Mutex(direct, "shared", ttl=30.0)
            assert taker.acquire(timeout=ttl + 10)
            taken_at, token = time.monotonic(), taker.token
            assert token is not None
            assert not holder.locked(), "the cut-off holder still believes it holds"
            assert resource.write(token, name="shared", holder="taker")

            # A call during the partition fails within its socket timeout, not never.
            began = time.monotonic()
            with pytest.raises(cs.StoreUnavailableError):
                impatient._ops.list_leases()
            assert time.monotonic() - began < 1.0 + 3.0

            wait_until(lambda: bool(lost_at), "on_lost of the cut-off holder", 10)
            writer.join(5)
            assert not writer.is_alive(), "the cut-off holder kept writing"
            # The stale holder acts with its old token anyway: the resource says no.
            assert not resource.write(stale, name="shared", holder="holder")
            time.sleep(max(0.0, cut_at + ttl + 1.5 - time.monotonic()))
        finally:
            stop.set()
            proxy.heal()
        with pytest.raises(cs.LockLostError):
            holder.release()
        # The stale release freed nothing: the new holder keeps its lease.
        assert taker.locked()
        assert [lease.token for lease in direct._ops.list_leases()] == [token]
        taker.release()

    assert len(lost_at) == 1
    # Told about at the local deadline (at most ttl after the last renewal before the cut).
    assert cut_at < lost_at[0] <= cut_at + ttl + LOST_SLACK
    holds.append(HoldLog("shared", stale, held_at, min(lost_at[0], last_write[0]), "holder", True))
    holds.append(HoldLog("shared", token, taken_at, time.monotonic(), "taker", False))
    report = check(holds=holds, writes=resource.writes)
    assert report.writes is not None
    assert report.writes.rejected >= 1
    assert token > stale
    check_holds(holds)


async def test_aio_partition_holder_told_and_release_raises(
    server: RedisServer | PostgresServer, proxy: TcpProxy, namespace: str
) -> None:
    """The asyncio drivers: a holder behind a partition gets ``on_lost`` at its deadline
    while its renewal hangs, the direct client takes over with a higher token, calls made
    during the partition fail within the socket timeout, and after the partition heals
    with reset connections ``release()`` raises LockLostError."""
    ttl = 1.0
    url = proxy.url(server.url)
    lost_at: list[float] = []
    async with (
        await aio.open_store(url, namespace=namespace, **PROXIED) as cut_off,
        await aio.open_store(url, namespace=namespace, socket_timeout=1.0) as impatient,
        await aio.open_store(server.url, namespace=namespace) as direct,
    ):
        holder = aio.Mutex(
            cut_off, "shared", ttl=ttl, on_lost=lambda: lost_at.append(time.monotonic())
        )
        assert await holder.acquire(timeout=10)
        stale = holder.token
        assert stale is not None
        await asyncio.sleep(0.5)
        proxy.partition()
        cut_at = time.monotonic()
        try:
            taker = aio.Mutex(direct, "shared", ttl=30.0)
            assert await taker.acquire(timeout=ttl + 10)
            assert taker.token is not None
            assert taker.token > stale
            assert not holder.locked()
            began = time.monotonic()
            with pytest.raises(cs.StoreUnavailableError):
                await impatient._ops.list_leases()
            assert time.monotonic() - began < 1.0 + 3.0
            for _ in range(1000):
                if lost_at:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(max(0.0, cut_at + ttl + 1.0 - time.monotonic()))
        finally:
            proxy.heal(drop=True)
        with pytest.raises(cs.LockLostError):
            await holder.release()
        assert taker.locked()
        await taker.release()
    assert len(lost_at) == 1
    assert cut_at < lost_at[0] <= cut_at + ttl + LOST_SLACK


@pytest.mark.parametrize("longer_than_claim", [False, True], ids=["short", "long"])
def test_partition_of_a_scheduler_mid_callback(
    server: RedisServer | PostgresServer,
    proxy: TcpProxy,
    namespace: str,
    longer_than_claim: bool,
) -> None:
    """A scheduler is cut off while a job's callback runs on it. Shorter than the claim
    ttl: the claim survives (renewals retried) and the job fires exactly once. Longer:
    to the store the scheduler looks dead, so a scheduler connected directly runs the job
    again (at least once, as after a crash); the job is never lost and ends done."""
    claim_ttl = 1.0 if longer_than_claim else 3.0
    cut = 2.5 if longer_than_claim else 1.2
    url = proxy.url(server.url)
    firings: list[Firing] = []
    lock = threading.Lock()
    release_callback = threading.Event()

    def callback_of(who: str) -> Callable[[str, Any], None]:
        def callback(key: str, props: Any) -> None:
            start = time.monotonic()
            with lock:
                firings.append(Firing(key, who, start))
            release_callback.wait(30)

        return callback

    with (
        cs.open_store(url, namespace=namespace, **PROXIED) as cut_off,
        cs.open_store(server.url, namespace=namespace) as direct,
    ):
        first = cs.get_job_once_scheduler(cut_off, claim_ttl=claim_ttl)
        first.set_callback(callback_of("cut-off"))
        first.start()
        first.schedule_once("job", datetime.now(UTC), {"n": 1})
        wait_until(lambda: bool(firings), "the job fires on the first scheduler", 10)
        other = cs.get_job_once_scheduler(direct, claim_ttl=claim_ttl)
        other.set_callback(callback_of("direct"))
        other.start()
        proxy.partition()
        cut_at = time.monotonic()
        try:
            time.sleep(cut)
        finally:
            proxy.heal()
        release_callback.set()
        if longer_than_claim:
            wait_until(lambda: len(firings) >= 2, "the job runs again elsewhere", 10)
        wait_until(lambda: not other.list_scheduled_jobs(), "the job is done", 10)
        # A claim that expired during the partition was re-claimed by the other scheduler
        # during the partition already; a little more time shows any late extra run.
        time.sleep(0.5)
        pending = other.list_scheduled_jobs()
        assert first.stop(timeout=10)
        assert other.stop(timeout=10)
    assert pending == []
    crashes = {"cut-off": [cut_at]} if longer_than_claim else {}
    report = check_one_shot(["job"], firings, crashes)
    if longer_than_claim:
        assert [f.holder for f in sorted(firings, key=lambda f: f.start)] == [
            "cut-off",
            "direct",
        ]
        assert report.run_twice == 1
    else:
        assert [f.holder for f in firings] == ["cut-off"]
        assert report.run_twice == 0


@pytest.mark.timeout(120)
def test_silently_dead_connections_cost_nothing_with_the_default_timeouts(
    kind: str, server: RedisServer | PostgresServer, proxy: TcpProxy, namespace: str
) -> None:
    """Regression: with the default options, a connection that silently stops
    answering (the proxy black-holes every connection open at t = 1 s; new ones work)
    cost instance A its leases and claims at 15 s: renewals ran every 5 s and one call
    could hang for the 10 s socket timeout, serially for every lease. B then ran the
    one-shot job and the recurring job again while A was still running them.

    Now every renewal and claim renewal is bounded by the lease's remaining life and
    retried on a new connection, each lease on its own, with a 5 s socket timeout: A
    keeps everything, B runs nothing twice. Default options only (no socket_timeout)."""
    direct_url = server.url
    run_for = 18.0  # past the default ttl and claim_ttl (15 s)
    events: list[tuple[str, str, float]] = []  # (instance, what, monotonic)
    lost: list[float] = []
    release = threading.Event()

    def long_run(instance: str, what: str) -> Callable[..., None]:
        def run(*_: Any) -> None:
            events.append((instance, f"start {what}", time.monotonic()))
            release.wait(run_for + 10)
            events.append((instance, f"end {what}", time.monotonic()))

        return run

    with (
        cs.open_store(proxy.url(direct_url), namespace=namespace) as a,
        cs.open_store(direct_url, namespace=namespace) as b,
    ):
        mutex = cs.Mutex(a, "held", on_lost=lambda: lost.append(time.monotonic()))
        assert mutex.acquire(timeout=5)
        scheduler_a = cs.get_job_once_scheduler(a)
        scheduler_a.set_callback(long_run("A", "invoice-42"))
        scheduler_a.start()
        scheduler_a.schedule_once("invoice-42", datetime.now(UTC))
        job_a = cs.schedule(
            a, "report", cs.wait_for_interval(timedelta(hours=1)), long_run("A", "report")
        )
        wait_until(lambda: len(events) == 2, "A started both runs", 10)
        frozen = proxy.freeze_connections()
        assert frozen >= 2, f"only {frozen} connections of A went through the proxy"
        began = time.monotonic()
        scheduler_b = cs.get_job_once_scheduler(b)
        scheduler_b.set_callback(long_run("B", "invoice-42"))
        scheduler_b.start()
        job_b = cs.schedule(
            b, "report", cs.wait_for_interval(timedelta(hours=1)), long_run("B", "report")
        )
        try:
            while time.monotonic() - began < run_for:
                assert not lost, f"A lost its mutex {lost[0] - began:.1f}s after the freeze"
                assert not [e for e in events if e[0] == "B"], f"B ran again: {events}"
                time.sleep(0.1)
            mutex.check()
        finally:
            release.set()
            job_b.close(timeout=10)
            scheduler_b.stop(timeout=10)
            job_a.close(timeout=10)
            scheduler_a.stop(timeout=10)
        mutex.release()
        assert not [e for e in events if e[0] == "B"], events


@pytest.mark.timeout(120)
def test_a_silently_dead_change_feed_is_replaced(
    kind: str, server: RedisServer | PostgresServer, proxy: TcpProxy, namespace: str
) -> None:
    """Regression: a pub/sub (Redis) or LISTEN (PostgreSQL) connection that silently
    stopped answering was never noticed: wake-ups fell back for good on the waiters'
    2 s caps (PostgreSQL: until TCP keepalive, hours). The feed now pings a quiet
    connection and replaces it when no answer comes, so handoffs are prompt again."""
    with (
        cs.open_store(proxy.url(server.url), namespace=namespace) as waiting,
        cs.open_store(server.url, namespace=namespace) as holding,
    ):
        assert proxy.freeze_connections() >= 1  # the feed's connection among them
        began = time.monotonic()
        latencies: list[float] = []
        while time.monotonic() - began < 30 and (len(latencies) < 3 or max(latencies[-3:]) > 0.5):
            holder = cs.Mutex(holding, "handoff", ttl=30)
            assert holder.acquire(timeout=5)
            got: list[float] = []

            def wait_for_it(got: list[float] = got) -> None:
                mutex = cs.Mutex(waiting, "handoff")
                acquired = mutex.acquire(timeout=20)
                got.append(time.monotonic() if acquired else -1.0)
                if acquired:
                    mutex.release()

            waiter = threading.Thread(target=wait_for_it, daemon=True)
            waiter.start()
            time.sleep(0.3)  # the waiter is blocked in acquire by now
            released = time.monotonic()
            holder.release()
            waiter.join(25)
            assert got, "the waiter never finished"
            assert got[0] > 0, "the waiter never got the lock"
            latencies.append(got[0] - released)
        recovered = time.monotonic() - began
        print(f"{kind}: handoffs after the freeze {[f'{x:.2f}' for x in latencies]}")
        assert max(latencies[-3:]) <= 0.5, f"wake-ups never came back: {latencies}"
        assert recovered < 25, f"recovered only after {recovered:.0f}s"
