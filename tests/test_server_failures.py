"""Redis and PostgreSQL going away and coming back: outages while a mutex is held and
waited for, restarts and crashes with pending one-shot jobs, fencing tokens across data
loss, wake-ups after reconnection, and configuration / credential errors.

Every test takes a private server (``private_server``) when it stops one; the session
servers are only used read-only. Bounds are generous (a loaded 2-core machine): what is
asserted is "promptly" (seconds), never milliseconds, except where the difference
between a notification and the 2 s polling fallback is the point.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import pairwise
from typing import Any, TypeVar

import psycopg
import pytest
import redis.exceptions

import clustersync as cs
from clustersync import aio
from tests.servers import (
    ManagedServer,
    PostgresServer,
    PostgresStopMode,
    RedisServer,
    ServerStarter,
    free_port,
    start_or_skip,
)

T = TypeVar("T")

KINDS = ("redis", "postgres")
#: A call that cannot complete must fail within this (connection refused is immediate).
PROMPT = 5.0
#: A waiter must get the lock within this after the server is back.
RECOVERY = 6.0
#: Release-to-wake latency that only a notification explains: the waiter's fallback poll
#: comes 2 s after its last attempt and the release is sent 0.7 s after that attempt.
HANDOFF_DELAY = 0.7
WOKEN_BY_NOTIFICATION = 1.0
HOUR = timedelta(hours=1)


def new_namespace() -> str:
    return f"fail-{uuid.uuid4().hex[:10]}"


def server_for(kind: str, *, persistence: bool = True) -> RedisServer | PostgresServer:
    return RedisServer(persistence=persistence) if kind == "redis" else PostgresServer()


def stop(server: ManagedServer) -> None:
    """A clean shutdown (PostgreSQL ``fast``: clients are disconnected)."""
    if isinstance(server, PostgresServer):
        server.stop("fast")
    else:
        server.stop()


def driver_errors(kind: str) -> tuple[type[BaseException], ...]:
    if kind == "redis":
        return (redis.exceptions.RedisError, OSError)
    return (psycopg.Error,)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float) -> float:
    """Poll until ``predicate()``; return how long it took (fail with ``what``)."""
    began = time.monotonic()
    deadline = began + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.01)
    return time.monotonic() - began


def when_available(call: Callable[[], T], timeout: float = 15.0) -> T:
    """``call()``, retried while the store is still unavailable (just after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except cs.StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def assert_unavailable(kind: str, call: Callable[[], object]) -> cs.StoreUnavailableError:
    """``call()`` raises StoreUnavailableError promptly, with the driver error as cause."""
    began = time.monotonic()
    with pytest.raises(cs.StoreUnavailableError) as info:
        call()
    elapsed = time.monotonic() - began
    error = info.value
    assert isinstance(error, ConnectionError)
    assert isinstance(error.__cause__, driver_errors(kind)), repr(error.__cause__)
    assert elapsed < PROMPT, f"took {elapsed:.1f} s to fail"
    return error


@dataclass
class Background:
    """``fn()`` in a thread; its result or exception and when it finished."""

    fn: Callable[[], Any]
    result: Any = None
    error: BaseException | None = None
    started_at: float = 0.0
    finished_at: float | None = None
    _thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        wait_until(lambda: self.started_at > 0, "background thread started", 10)

    def _run(self) -> None:
        self.started_at = time.monotonic()
        try:
            self.result = self.fn()
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def join(self, timeout: float) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still running after {timeout:.0f} s"
        if self.error is not None:
            raise self.error
        return self.result


def handoff_latency(holder_store: cs.Store, waiter_store: cs.Store, name: str) -> float:
    """Seconds from a release in ``holder_store`` until a waiter blocked in
    ``waiter_store`` (another store object: woken through the server) holds the lock."""
    holder = cs.Mutex(holder_store, name, ttl=30.0)
    assert when_available(lambda: holder.acquire(timeout=10))
    waiter = cs.Mutex(waiter_store, name, ttl=30.0)
    waiting = Background(lambda: waiter.acquire(timeout=20))
    # The waiter tries at once, then sleeps until notified or 2 s pass: release while it
    # sleeps, early enough that its fallback poll cannot explain a prompt wake.
    time.sleep(max(0.0, waiting.started_at + HANDOFF_DELAY - time.monotonic()))
    released_at = time.monotonic()
    holder.release()
    assert waiting.join(25) is True
    assert waiting.finished_at is not None
    waiter.release()
    return waiting.finished_at - released_at


def tokens_of(store: cs.Store, name: str, count: int, *, retry: bool = False) -> list[int]:
    """Acquire and release ``name`` ``count`` times; the fencing tokens minted. With
    ``retry``, store errors (just after a restart) are retried."""
    tokens = []
    for _ in range(count):
        mutex = cs.Mutex(store, name, ttl=5.0)
        acquire = partial(mutex.acquire, timeout=10)
        assert when_available(acquire) if retry else acquire()
        assert mutex.token is not None
        tokens.append(mutex.token)
        mutex.release()
    return tokens


# -- 1. outage while a mutex is held and waited for -----------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_outage_while_held_and_waited_for(kind: str, private_server: ServerStarter) -> None:
    srv = private_server(server_for(kind))
    with cs.open_store(srv.url, namespace=new_namespace()) as store:
        scheduler = cs.get_job_once_scheduler(store)
        fired: list[str] = []
        scheduler.set_callback(lambda key, props: fired.append(key))
        pending_at = datetime.now(UTC) + HOUR
        scheduler.schedule_once("pending", pending_at, {"n": 1})
        scheduler.start()
        lost: list[float] = []
        holder = cs.Mutex(store, "m", ttl=1.0, on_lost=lambda: lost.append(time.monotonic()))
        assert holder.acquire(timeout=10)
        held_token = holder.token
        assert held_token is not None

        stop(srv)
        stopped_at = time.monotonic()
        soon = datetime.now(UTC)
        assert_unavailable(kind, lambda: scheduler.schedule_once("during", soon))
        assert_unavailable(kind, scheduler.list_scheduled_jobs)
        assert_unavailable(kind, lambda: cs.Mutex(store, "other").acquire(blocking=False))
        assert_unavailable(kind, lambda: scheduler.cancel("pending"))

        # A waiter that starts while the server is down keeps retrying.
        waiter = cs.Mutex(store, "m", ttl=10.0)
        waiting = Background(lambda: waiter.acquire(timeout=60))

        # The holder cannot renew: its lease is lost, loudly, once.
        wait_until(lambda: bool(lost), "on_lost after the lease expired", 10)
        assert lost[0] - stopped_at < 1.0 + PROMPT
        assert not holder.locked()
        with pytest.raises(cs.LockLostError):
            holder.check()
        with pytest.raises(cs.LockLostError):
            holder.release()
        assert holder.token is None
        assert not waiting.done

        srv.start()
        restarted_at = time.monotonic()
        assert waiting.join(RECOVERY + 10) is True
        assert waiting.finished_at is not None
        assert waiting.finished_at - restarted_at < RECOVERY
        assert waiter.locked()
        assert waiter.token is not None
        assert waiter.token > held_token
        waiter.release()

        # Nothing of the failed schedule_once was stored; the pending job survived.
        jobs = when_available(scheduler.list_scheduled_jobs)
        assert [(j.key, j.props) for j in jobs] == [("pending", {"n": 1})]
        # The scheduler recovered too.
        scheduler.schedule_once("after", datetime.now(UTC))
        wait_until(lambda: "after" in fired, "a job due after the restart fired", 10)
        assert fired == ["after"]
        assert len(lost) == 1
        assert scheduler.stop(timeout=10)


# -- 2. PostgreSQL: no one-shot job lost across shutdown or crash --------------------------


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_loses_no_one_shot_job(
    mode: PostgresStopMode, private_server: ServerStarter
) -> None:
    srv = private_server(PostgresServer(fsync=True))
    kept_ns, fresh_ns = new_namespace(), new_namespace()
    now = datetime.now(UTC)
    # Half already due (fire at start), half due a little after the restart.
    batch = [(f"job-{i}", now + timedelta(seconds=-5 if i % 2 else 1), {"i": i}) for i in range(10)]
    fired: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()

    def recorder(namespace: str) -> Callable[[str, Any], None]:
        def record(key: str, props: Any) -> None:
            assert props == {"i": int(key.split("-")[1])}
            with lock:
                fired[namespace, key] += 1

        return record

    with cs.open_store(srv.url, namespace=kept_ns) as kept:
        kept_scheduler = cs.get_job_once_scheduler(kept)
        kept_scheduler.schedule_many(batch)
        with cs.open_store(srv.url, namespace=fresh_ns) as before:
            cs.get_job_once_scheduler(before).schedule_many(batch)

        srv.stop(mode)  # "immediate" is a crash: recovery from the WAL at the next start
        srv.start()

        # The store that stayed open works again at once (its pool and LISTEN reconnect);
        # a store opened after the restart too.
        kept_scheduler.set_callback(recorder(kept_ns))
        kept_scheduler.start()
        with cs.open_store(srv.url, namespace=fresh_ns) as fresh:
            fresh_scheduler = cs.get_job_once_scheduler(fresh)
            fresh_scheduler.set_callback(recorder(fresh_ns))
            fresh_scheduler.start()
            wait_until(lambda: sum(fired.values()) >= 2 * len(batch), "every job fired", 20)
            time.sleep(0.5)  # a job firing twice would show up now
            expected = {(ns, key): 1 for ns in (kept_ns, fresh_ns) for key, _, _ in batch}
            assert dict(fired) == expected
            assert fresh_scheduler.list_scheduled_jobs() == []
            assert kept_scheduler.list_scheduled_jobs() == []

            # The kept store's LISTEN connection is back: a job stored through another
            # store object wakes its idle scheduler (which otherwise sleeps up to 5 s).
            time.sleep(0.5)
            with cs.open_store(srv.url, namespace=kept_ns) as other:
                cs.get_job_once_scheduler(other).schedule_once(
                    "late-0", datetime.now(UTC), {"i": 0}
                )
                took = wait_until(lambda: (kept_ns, "late-0") in fired, "late job fired", 10)
            assert took < 2.5, f"the idle scheduler was not notified ({took:.2f} s)"
            assert fired[kept_ns, "late-0"] == 1


def test_postgres_connections_closed_by_the_server_are_not_reused(
    private_server: ServerStarter,
) -> None:
    """Connections the server terminated while idle in the pool are dropped before use:
    the next operations succeed instead of failing once per dead connection."""
    srv = private_server(PostgresServer())
    namespace = new_namespace()
    with (
        cs.open_store(srv.url, namespace=namespace) as store,
        cs.open_store(srv.url, namespace=namespace) as other,
    ):
        scheduler = cs.get_job_once_scheduler(store)
        # Several pooled connections: operations from threads at once.
        workers = [Background(partial(tokens_of, store, f"warm-{i}", 5)) for i in range(4)]
        for worker in workers:
            worker.join(30)
        with srv.socket_connect() as admin:
            terminated = admin.execute(
                "SELECT count(*) FROM pg_stat_activity, pg_terminate_backend(pid, 5000)"
                " WHERE usename = %s",
                (srv.user,),
            ).fetchone()
        assert terminated is not None
        assert terminated[0] >= 3  # the LISTEN connections and some pooled ones

        for attempt in range(5):
            scheduler.schedule_once(f"job-{attempt}", datetime.now(UTC) + HOUR)
            assert len(scheduler.list_scheduled_jobs()) == attempt + 1
        assert len(tokens_of(store, "after", 2)) == 2
        # The LISTEN connection reconnected as well.
        latencies = [handoff_latency(other, store, "handoff") for _ in range(3)]
        assert max(latencies[-2:]) < WOKEN_BY_NOTIFICATION, latencies


# -- 3. Redis: persistence, data loss, fencing tokens --------------------------------------


@pytest.mark.parametrize("persistence", [True, False], ids=["appendonly", "no-persistence"])
def test_redis_restart_jobs_and_fencing_tokens(
    persistence: bool, private_server: ServerStarter
) -> None:
    srv = private_server(RedisServer(persistence=persistence))
    namespace = new_namespace()
    with cs.open_store(srv.url, namespace=namespace) as store:
        scheduler = cs.get_job_once_scheduler(store)
        run_at = datetime.now(UTC) + HOUR
        scheduler.schedule_many([("a", run_at, {"x": 1}), ("b", run_at + HOUR, None)])
        before = tokens_of(store, "m", 3)

        srv.stop()
        srv.start()

        jobs = when_available(scheduler.list_scheduled_jobs)
        if persistence:
            assert [(j.key, j.props) for j in jobs] == [("a", {"x": 1}), ("b", None)]
            assert jobs[0].run_at == run_at
        else:
            assert jobs == []  # documented: without persistence a restart loses pending jobs
        after = tokens_of(store, "m", 2, retry=True)
        with cs.open_store(srv.url, namespace=namespace) as fresh:
            after += tokens_of(fresh, "m", 2)
    tokens = before + after
    assert all(a < b for a, b in pairwise(tokens)), tokens


# -- 4. wake-ups after a restart -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_waiters_woken_promptly_after_restart(kind: str, private_server: ServerStarter) -> None:
    srv = private_server(server_for(kind))  # Redis with persistence: the hold survives
    namespace = new_namespace()
    with (
        cs.open_store(srv.url, namespace=namespace) as holder_store,
        cs.open_store(srv.url, namespace=namespace) as waiter_store,
    ):
        assert handoff_latency(holder_store, waiter_store, "before") < WOKEN_BY_NOTIFICATION
        holder = cs.Mutex(holder_store, "across", ttl=30.0)
        assert holder.acquire(timeout=10)
        across = cs.Mutex(waiter_store, "across", ttl=30.0)
        blocked = Background(lambda: across.acquire(timeout=60))

        stop(srv)
        time.sleep(0.5)  # the subscriptions notice and start reconnecting
        srv.start()
        # The subscription / LISTEN connection reconnects with a backoff of at most 2 s;
        # from then on every handoff is prompt (each round is a new waiter).
        latencies: list[float] = []
        deadline = time.monotonic() + 25
        while len(latencies) < 3 or max(latencies[-3:]) >= WOKEN_BY_NOTIFICATION:
            assert time.monotonic() < deadline, f"waiters not woken promptly: {latencies}"
            latencies.append(handoff_latency(holder_store, waiter_store, "after"))

        # The waiter blocked since before the restart is woken by the release too.
        assert not blocked.done
        released_at = time.monotonic()
        holder.release()
        assert blocked.join(25) is True
        assert blocked.finished_at is not None
        assert blocked.finished_at - released_at < WOKEN_BY_NOTIFICATION
        assert across.token is not None
        across.release()


# -- 5. credentials, unreachable servers, malformed URLs -----------------------------------

AUTH_MESSAGE = re.compile(r"authenticat|password", re.IGNORECASE)


def assert_open_fails(
    url: str, cause: type[BaseException], message: re.Pattern[str] | None = None
) -> cs.StoreUnavailableError:
    began = time.monotonic()
    with pytest.raises(cs.StoreUnavailableError) as info:
        cs.open_store(url).close()
    assert time.monotonic() - began < PROMPT
    error = info.value
    assert isinstance(error.__cause__, cause), repr(error.__cause__)
    text = str(error)
    assert "\n" not in text.strip()
    if message is not None:
        assert message.search(text), text
    return error


def test_redis_wrong_or_missing_password(private_server: ServerStarter) -> None:
    srv = private_server(RedisServer(requirepass="right-pw"))
    with cs.open_store(srv.url) as store:  # the right one works
        assert store._ops.list_leases() == []
    wrong = srv.url.replace("right-pw", "wrong-pw")
    error = assert_open_fails(wrong, redis.exceptions.AuthenticationError, AUTH_MESSAGE)
    assert "wrong-pw" not in str(error)
    assert_open_fails(
        f"redis://127.0.0.1:{srv.port}/0", redis.exceptions.AuthenticationError, AUTH_MESSAGE
    )


def test_postgres_wrong_password(postgres_server: PostgresServer) -> None:
    url = postgres_server.url.replace(postgres_server.password, "wrong-pw")
    assert url != postgres_server.url
    error = assert_open_fails(url, psycopg.OperationalError, AUTH_MESSAGE)
    assert "wrong-pw" not in str(error)


def test_closed_port_is_unavailable() -> None:
    port = free_port()
    assert_open_fails(f"redis://127.0.0.1:{port}/0", redis.exceptions.ConnectionError)
    assert_open_fails(f"postgresql://u:p@127.0.0.1:{port}/db", psycopg.OperationalError)


MALFORMED = [
    "redis://host:notaport",
    "redis://127.0.0.1:99999/0",
    "redis://[bad",
    "postgresql://[bad",
    "postgresql://u:p@host:notaport/db",
    "postgres://u:p@127.0.0.1:5432/db?bogus=1",
]


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(cs.ConfigurationError) as info:
        cs.open_store(url).close()
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


@dataclass(frozen=True)
class CliCase:
    url: Callable[[RedisServer, PostgresServer, int], str]
    expect: str


CLI_CASES = {
    "redis-wrong-password": CliCase(
        lambda r, p, port: r.url.replace("right-pw", "wrong-pw"), r"(?i)authenticat|password"
    ),
    "postgres-wrong-password": CliCase(
        lambda r, p, port: p.url.replace(p.password, "wrong-pw"), r"(?i)authenticat|password"
    ),
    "redis-closed-port": CliCase(lambda r, p, port: f"redis://127.0.0.1:{port}/0", "refused"),
    "postgres-closed-port": CliCase(
        lambda r, p, port: f"postgresql://u:p@127.0.0.1:{port}/db", "refused"
    ),
    "redis-bad-port": CliCase(lambda r, p, port: "redis://host:notaport", "invalid Redis URL"),
    "postgres-bad-url": CliCase(lambda r, p, port: "postgresql://[bad", "invalid PostgreSQL URL"),
}


@pytest.fixture(scope="module")
def auth_redis() -> Iterator[RedisServer]:
    with start_or_skip(RedisServer(requirepass="right-pw")) as server:
        yield server


@pytest.mark.parametrize("case", list(CLI_CASES), ids=list(CLI_CASES))
def test_cli_prints_one_line_error(
    case: str, auth_redis: RedisServer, postgres_server: PostgresServer
) -> None:
    spec = CLI_CASES[case]
    url = spec.url(auth_redis, postgres_server, free_port())
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "clustersync", "--url", url, "locks"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - began < 30
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("clustersync: error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert re.search(spec.expect, lines[0]), lines[0]
    assert "wrong-pw" not in done.stderr


# -- 6. asyncio drivers: reconnect paths ---------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_aio_stores_recover_after_restart(kind: str, private_server: ServerStarter) -> None:
    srv = private_server(server_for(kind))
    namespace = new_namespace()
    async with (
        await aio.open_store(srv.url, namespace=namespace) as a,
        await aio.open_store(srv.url, namespace=namespace) as b,
    ):
        fired: list[str] = []

        async def callback(key: str, props: Any) -> None:
            fired.append(key)

        scheduler = aio.get_job_once_scheduler(a)
        scheduler.set_callback(callback)
        await scheduler.start()

        await asyncio.to_thread(stop, srv)
        began = time.monotonic()
        with pytest.raises(cs.StoreUnavailableError) as info:
            await aio.get_job_once_scheduler(b).list_scheduled_jobs()
        assert isinstance(info.value.__cause__, driver_errors(kind))
        assert time.monotonic() - began < PROMPT

        waiter = aio.Mutex(a, "m", ttl=10.0)
        waiting = asyncio.create_task(waiter.acquire(timeout=60))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await asyncio.to_thread(srv.start)
        restarted_at = time.monotonic()
        assert await asyncio.wait_for(waiting, RECOVERY + 10) is True
        assert time.monotonic() - restarted_at < RECOVERY

        # b waits while a holds: woken through the server once its subscription is back.
        async def handoff() -> float:
            contender = aio.Mutex(b, "m", ttl=10.0)
            task = asyncio.create_task(contender.acquire(timeout=20))
            await asyncio.sleep(HANDOFF_DELAY)
            released_at = time.monotonic()
            await waiter.release()
            assert await asyncio.wait_for(task, 25) is True
            latency = time.monotonic() - released_at
            await contender.release()
            assert await waiter.acquire(timeout=10)
            return latency

        latencies: list[float] = []
        deadline = time.monotonic() + 25
        while len(latencies) < 2 or max(latencies[-2:]) >= WOKEN_BY_NOTIFICATION:
            assert time.monotonic() < deadline, f"not woken promptly: {latencies}"
            latencies.append(await handoff())
        await waiter.release()

        # a's scheduler, idle (it sleeps up to 5 s without news), is notified of a job
        # stored through b.
        await scheduler.schedule_once("warm-up", datetime.now(UTC))  # wakes it locally
        while "warm-up" not in fired:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        stored_at = time.monotonic()
        await aio.get_job_once_scheduler(b).schedule_once("ping", datetime.now(UTC))
        while "ping" not in fired:
            assert time.monotonic() - stored_at < 10, "the job never fired"
            await asyncio.sleep(0.01)
        assert time.monotonic() - stored_at < 2.5, "the idle scheduler was not notified"
        assert await scheduler.stop(timeout=10)
