"""The Redis store on Sentinel and Cluster topologies, without failures (the failures are
in ``tests/reliability/test_failover.py``), and the pieces that make it safe there:

- a namespace lives in one hash slot, on one node, and wake-ups use that slot's shard
  channel (``SSUBSCRIBE``);
- every script declares the keys the client knows (the rest live in the same slot);
- ``min_replicas``: a write returns once the replicas have it, and a write they cannot
  confirm raises ``StoreUnavailableError`` and leaves no lease handed out;
- fencing tokens have a clock floor: a counter that lost its last increments (a promoted
  replica that had not received them) still mints above every token handed out;
- cutting off the master (a fence or a switch, decided by the thread that watches the
  sentinels) fails the calls in flight on other threads with a connection error.

The session's topologies are shared: nothing here fails a node over or stops one.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from redis.asyncio.sentinel import (
    SentinelManagedConnection as AsyncSentinelManagedConnection,
)
from redis.sentinel import SentinelManagedConnection

import clustersync as cs
from clustersync import aio
from clustersync.stores.contract import NewJob
from clustersync.stores.redis import lua
from clustersync.stores.redis.errors import NotSent, RedisConnectionError
from clustersync.stores.redis.sync import key_prefix
from tests.servers import RedisServer
from tests.topologies import RedisClusterTopology, RedisSentinel


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True)


def _namespace() -> str:
    return f"ha-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def namespace() -> str:
    return _namespace()


def _use_everything(store: cs.Store) -> None:
    """Leases, recurring-job records and one-shot jobs: every kind of key."""
    with cs.Mutex(store, "m", ttl=5):
        pass
    scheduler = cs.get_job_once_scheduler(store)
    scheduler.schedule_many(
        [(f"job-{i}", datetime.now(UTC) + timedelta(hours=1), i) for i in range(5)]
    )
    ran: list[int] = []
    job = cs.schedule(
        store, "tick", cs.wait_for_interval(timedelta(hours=1)), lambda: ran.append(1)
    )
    deadline = time.monotonic() + 10
    while not ran and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.close(timeout=10)
    assert ran
    assert store._ops.list_leases() == []


# -- Redis Cluster -----------------------------------------------------------------------


def test_a_namespace_lives_in_one_slot_of_one_node(
    redis_cluster: RedisClusterTopology, namespace: str
) -> None:
    with cs.open_store(redis_cluster.url, namespace=namespace) as store:
        _use_everything(store)
    prefix = key_prefix(namespace)
    slot = redis_cluster.slot_of(prefix)
    home = redis_cluster.master_of(prefix)
    with home.client() as client:
        keys = [str(key) for key in client.scan_iter(match=prefix.replace("{", "\\{") + "*")]
        assert len(keys) >= 10, keys  # jobs, indexes, counters, the recurring records
        assert int(client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) == len(keys)
    for master in redis_cluster.masters():
        if master is not home:
            with master.client() as client:
                assert int(client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) == 0


def test_cluster_wake_ups_use_the_slots_shard_channel(
    redis_cluster: RedisClusterTopology, namespace: str
) -> None:
    """A waiter subscribed to the namespace's shard channel on the slot's master wakes as
    soon as the holder releases (long before the lease would expire)."""
    channel = key_prefix(namespace) + "events"
    with (
        cs.open_store(redis_cluster.url, namespace=namespace) as holder_store,
        cs.open_store(redis_cluster.url, namespace=namespace) as waiter_store,
    ):
        with redis_cluster.master_of(channel).client() as client:
            subscribers = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        assert int(subscribers[1]) == 2
        holder = cs.Mutex(holder_store, "m", ttl=30)
        assert holder.acquire()
        waiter = cs.Mutex(waiter_store, "m", ttl=30)
        assert not waiter.acquire(timeout=0.1)  # registers as a waiter
        began = time.monotonic()
        released: list[float] = []

        def release_soon() -> None:
            time.sleep(0.2)
            released.append(time.monotonic())
            holder.release()

        thread = threading.Thread(target=release_soon)
        thread.start()
        assert waiter.acquire(timeout=10)
        woke = time.monotonic()
        thread.join()
        waiter.release()
    assert woke - released[0] < 0.5, "woken by the message, not by a deadline"
    assert woke - began < 2.0


# -- scripts and keys --------------------------------------------------------------------

#: Scripts that also reach keys they find in the data (see ``lua``'s docstring): the grant
#: list of a queued waiter (the lease scripts that may hand a lease on), the job hashes an
#: index lists, the records of the registered recurring jobs, the failed job hashes the
#: failed set lists (LIST_FAILED reads every failed job; the client names none of them).
FOUND_IN_DATA = {
    "ENQUEUE": "g:",
    "WITHDRAW": "g:",
    "RELEASE": "g:",
    "BREAK": "g:",
    "CLAIM_DUE": "j:",
    "LIST_PAGE": "j:",
    "LIST_KEYS_PAGE": "j:",
    "LIST_RECURRING": "r:",
    "LIST_FAILED": "fj:",
}


def test_scripts_build_no_key_names_but_those_found_in_the_data() -> None:
    """Every key whose name the client knows is a declared KEY; a script builds a name
    (prefix .. 'x:' .. something, or prefix .. 'name') only for a key it finds in the
    data. The prefix may be in any variable or argument (P, prefix, ARGV[1])."""
    built = re.compile(r"(?:\b[A-Za-z_]\w*|ARGV\[\d+\]) \.\. '([a-z]+:?)'")
    for name, text in lua.SCRIPTS.items():
        kinds = set(built.findall(text))
        allowed = FOUND_IN_DATA.get(name)
        if allowed is None:
            assert not kinds, f"{name} builds key names {kinds}: declare them as KEYS"
        elif allowed == "r:":
            assert kinds <= {"r:", "ri:", "rn:"}, (name, kinds)
        else:
            assert kinds <= {allowed}, (name, kinds)
        assert "KEYS[1]" in text or name in {"LEASES", "NOW"}, name


def test_scripts_publish_to_a_declared_channel() -> None:
    """The events channel is a declared KEY (SPUBLISH on Redis Cluster is routed like a
    key), never an argument."""
    published = re.compile(r"redis\.call\('PUBLISH', ([^,]+),")
    declared = re.compile(r"local [^=\n]*\bevents\b[^=\n]*= [^\n]*KEYS\[")
    for name, text in lua.SCRIPTS.items():
        for channel in published.findall(text):
            assert re.fullmatch(r"KEYS\[\d+\]|events", channel), (name, channel)
            assert channel != "events" or declared.search(text), name


@pytest.mark.parametrize("topology", ["redis_server", "redis_cluster"])
def test_job_scripts_cut_keys_from_hash_names_in_a_multibyte_namespace(
    request: pytest.FixtureRequest, topology: str
) -> None:
    """The scripts that get a job as its declared hash alone cut the key from the hash's
    name: the prefix is counted in bytes, not characters."""
    url = request.getfixturevalue(topology).url
    with cs.open_store(url, namespace=f"ha-é日本😀-{uuid.uuid4().hex[:8]}") as store:
        ops = store._ops
        due = ops.now_us() - 1000
        jobs = [NewJob("ключ", due, "1"), NewJob("k2", due, "2")]
        ops.put_jobs(jobs)
        ops.put_jobs(jobs[:1])  # stored identically already: a retry
        with pytest.raises(cs.DuplicateJobError) as raised:
            ops.put_jobs([NewJob("k0", due, "0"), NewJob("ключ", due, "3")])
        assert raised.value.key == "ключ"
        assert sorted(job.key for job in ops.list_jobs()) == ["k2", "ключ"]
        claims = {job.key: job.claim for job in ops.claim_due_jobs("me", 10, 30)}
        assert sorted(claims) == ["k2", "ключ"]
        assert sorted(ops.renew_job_claims("me", list(claims.items()), 30)) == ["k2", "ключ"]
        assert ops.complete_job("ключ", "me", claims["ключ"], "ok", None)
        assert ops.fail_job("k2", "me", claims["k2"], "boom")
        assert [job.key for job in ops.list_failed_jobs()] == ["k2"]
        with pytest.raises(cs.DuplicateJobError):
            ops.put_jobs([NewJob("k2", due, "2")])  # a failed job
        assert ops.retry_failed_job("k2")
        assert ops.cancel_job("k2")
        assert ops.count_jobs() == 0
        assert ops.list_jobs_page("", None, 10) == ([], None)
        assert [(run.key, run.outcome) for run in ops.recent_runs(10)] == [
            ("k2", "error"),
            ("ключ", "ok"),
        ]


def test_scripts_publish_on_the_shard_channel_on_redis_cluster() -> None:
    for name, text in lua.SCRIPTS.items():
        sharded = lua.sharded(text)
        assert "'PUBLISH'" not in sharded, name
        assert ("'SPUBLISH'" in sharded) == ("'PUBLISH'" in text), name


# -- min_replicas ------------------------------------------------------------------------


def test_min_replicas_writes_are_on_the_replica_when_they_return(
    redis_sentinel: RedisSentinel, namespace: str
) -> None:
    with cs.open_store(redis_sentinel.url, namespace=namespace, min_replicas=1) as store:
        mutex = cs.Mutex(store, "m", ttl=30)
        replica = redis_sentinel.replicas[0]
        lease_key = key_prefix(namespace) + "l:m:m"
        with replica.client() as client:
            for _ in range(20):
                assert mutex.acquire(timeout=5)
                assert client.get(lease_key) == f"{mutex.token}|{store._ops.list_leases()[0].owner}"
                mutex.release()
                assert client.get(lease_key) is None
            scheduler = cs.get_job_once_scheduler(store)
            scheduler.schedule_once("later", datetime.now(UTC) + timedelta(hours=1))
            assert client.exists(key_prefix(namespace) + "j:later")
        _use_everything(store)


@pytest.mark.parametrize("handoff", ["notify", "grant"])
def test_writes_the_replicas_cannot_confirm_raise_and_hand_out_nothing(
    redis_sentinel: RedisSentinel, namespace: str, handoff: str
) -> None:
    """Two replicas asked for, one available: every write raises after the WAIT timeout,
    and no lease stays behind (it was given back)."""
    url = redis_sentinel.url
    with (
        cs.open_store(
            url, namespace=namespace, min_replicas=2, min_replicas_timeout=0.05, handoff=handoff
        ) as store,
        cs.open_store(url, namespace=namespace) as observer,
    ):
        mutex = cs.Mutex(store, "m", ttl=30)
        with pytest.raises(cs.StoreUnavailableError, match="min_replicas"):
            mutex.acquire(blocking=False)
        assert observer._ops.list_leases() == []
        with pytest.raises(cs.StoreUnavailableError, match="min_replicas"):
            mutex.acquire(timeout=0.3)  # the grant queue's path, with handoff="grant"
        assert observer._ops.list_leases() == []
        scheduler = cs.get_job_once_scheduler(store)
        with pytest.raises(cs.StoreUnavailableError, match="min_replicas"):
            scheduler.schedule_once("job", datetime.now(UTC) + timedelta(hours=1))
        # Reads need no replica.
        assert [job.key for job in scheduler.list_scheduled_jobs()] in (["job"], [])


def test_min_replicas_on_a_server_without_replicas(redis_server: RedisServer) -> None:
    with cs.open_store(
        redis_server.url, namespace=_namespace(), min_replicas=1, min_replicas_timeout=0.05
    ) as store:
        with pytest.raises(cs.StoreUnavailableError, match="1 replicas asked for"):
            cs.Mutex(store, "m").acquire(blocking=False)
        assert store._ops.list_leases() == []


def test_a_granted_lease_is_confirmed_before_it_is_used(
    redis_sentinel: RedisSentinel, namespace: str
) -> None:
    """handoff="grant" with min_replicas=1: waiters queue up and are granted the lock in
    turn; each grant reaches the replica before its new holder uses it."""
    url = redis_sentinel.url
    lease_key = key_prefix(namespace) + "l:m:m"
    seen: list[bool] = []
    errors: list[BaseException] = []
    replica = redis_sentinel.replicas[0]

    def contend(store: cs.Store) -> None:
        try:
            mutex = cs.Mutex(store, "m", ttl=10)
            with replica.client() as client:
                for _ in range(10):
                    assert mutex.acquire(timeout=20)
                    value = client.get(lease_key)
                    seen.append(value is not None and value.startswith(f"{mutex.token}|"))
                    mutex.release()
        except BaseException as exc:
            errors.append(exc)

    stores = [
        cs.open_store(url, namespace=namespace, min_replicas=1, handoff="grant") for _ in range(3)
    ]
    try:
        threads = [threading.Thread(target=contend, args=(store,)) for store in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for store in stores:
            store.close()
    assert not errors, errors
    assert len(seen) == 30
    assert all(seen)


# -- cutting off the master ---------------------------------------------------------------


def test_cutting_off_the_master_fails_the_calls_in_flight_with_a_connection_error(
    redis_sentinel: RedisSentinel, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the sentinels' watch thread cuts the master off (a replica is being promoted,
    or a new master was announced), a call another thread has in flight fails with a
    connection error of unknown outcome — which the store turns into
    ``StoreUnavailableError`` — and the next call opens a new connection.

    redis-py's connections are not thread-safe: closing one that another thread is using
    made that thread's ``read_response`` raise ``AttributeError`` ('NoneType' object has
    no attribute 'readline'), which escaped the store and killed two holders of the
    Sentinel failover test. Here the call is paused after sending its command, before
    reading the reply, while the master is cut off: exactly that window."""
    with cs.open_store(redis_sentinel.url, namespace=namespace) as store:
        route: Any = getattr(store._ops, "_route")  # noqa: B009 - the Sentinel route
        sent, paused, resume = threading.Event(), threading.Event(), threading.Event()
        caller: list[threading.Thread] = []
        send: Any = SentinelManagedConnection.send_packed_command  # untyped
        read_response = SentinelManagedConnection.read_response

        def mine() -> bool:
            return bool(caller) and threading.current_thread() is caller[0]

        def send_and_note(self: SentinelManagedConnection, command: Any, **kwargs: Any) -> None:
            send(self, command, **kwargs)
            chunks = [command] if isinstance(command, bytes) else command
            if mine() and b"BLPOP" in b"".join(map(bytes, chunks)):
                sent.set()

        def read_later(self: SentinelManagedConnection, *args: Any, **kwargs: Any) -> Any:
            if mine() and sent.is_set() and not paused.is_set():
                paused.set()
                assert resume.wait(10)
            return read_response(self, *args, **kwargs)

        monkeypatch.setattr(SentinelManagedConnection, "send_packed_command", send_and_note)
        monkeypatch.setattr(SentinelManagedConnection, "read_response", read_later)
        outcome: list[BaseException | list[Any]] = []

        def call() -> None:
            try:  # blocks on the server for up to 2 s: no reply is on its way
                outcome.append(route.exchange([("BLPOP", key_prefix(namespace) + "none", 2)]))
            except BaseException as exc:
                outcome.append(exc)

        caller.append(threading.Thread(target=call))
        caller[0].start()
        try:
            assert paused.wait(10)
            route._reset(announce=False)  # what a fence or a switch does
        finally:
            resume.set()
            caller[0].join(10)
        assert len(outcome) == 1
        error = outcome[0]
        assert isinstance(error, RedisConnectionError), repr(error)
        assert not isinstance(error, NotSent)  # it was sent: outcome unknown
        assert route.exchange([("PING",)]) == ["PONG"]
        with cs.Mutex(store, "m", ttl=5):
            pass


async def test_cutting_off_the_master_fails_the_calls_in_flight_with_asyncio_too(
    redis_sentinel: RedisSentinel, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with asyncio, where the connections in use are closed as they are (one
    event loop: redis-py's asyncio connections allow it)."""
    store = await aio.open_store(redis_sentinel.url, namespace=namespace)
    try:
        route: Any = getattr(store._ops, "_route")  # noqa: B009 - the Sentinel route
        sent, paused, resume = asyncio.Event(), asyncio.Event(), asyncio.Event()
        caller: list[asyncio.Task[list[Any]]] = []
        send = AsyncSentinelManagedConnection.send_packed_command
        read_response = AsyncSentinelManagedConnection.read_response

        async def send_and_note(
            self: AsyncSentinelManagedConnection, command: Any, **kwargs: Any
        ) -> Any:
            await send(self, command, **kwargs)
            chunks = [command] if isinstance(command, bytes) else command
            if asyncio.current_task() in caller and b"BLPOP" in b"".join(map(bytes, chunks)):
                sent.set()

        async def read_later(
            self: AsyncSentinelManagedConnection, *args: Any, **kwargs: Any
        ) -> Any:
            if asyncio.current_task() in caller and sent.is_set() and not paused.is_set():
                paused.set()
                await resume.wait()
            return await read_response(self, *args, **kwargs)

        monkeypatch.setattr(AsyncSentinelManagedConnection, "send_packed_command", send_and_note)
        monkeypatch.setattr(AsyncSentinelManagedConnection, "read_response", read_later)
        blpop = ("BLPOP", key_prefix(namespace) + "none", 2)
        caller.append(asyncio.create_task(route.exchange([blpop])))
        await asyncio.wait_for(paused.wait(), 10)
        await route._reset(announce=False)
        resume.set()
        with pytest.raises(RedisConnectionError) as caught:
            await asyncio.wait_for(caller[0], 10)
        assert not isinstance(caught.value, NotSent)
        assert await route.exchange([("PING",)]) == ["PONG"]
    finally:
        await store.close()


# -- fencing tokens with a clock floor ----------------------------------------------------


@pytest.fixture
def server_store(redis_server: RedisServer) -> Iterator[tuple[cs.Store, str]]:
    namespace = _namespace()
    with cs.open_store(redis_server.url, namespace=namespace) as store:
        yield store, namespace


def test_a_counter_that_lost_its_last_increments_still_mints_higher_tokens(
    redis_server: RedisServer, server_store: tuple[cs.Store, str]
) -> None:
    """As on a replica promoted before it received the last tokens: the counter is set
    back, yet the next token is above every token handed out (the clock floor)."""
    store, namespace = server_store
    mutex = cs.Mutex(store, "m", ttl=5)
    tokens = []
    for _ in range(5):
        with mutex:
            assert mutex.token is not None
            tokens.append(mutex.token)
    fence = key_prefix(namespace) + "f:m:m"
    with _client(redis_server) as client:
        client.set(fence, str(tokens[0] - 1))  # the last four increments "lost"
    with mutex:
        assert mutex.token is not None
        assert mutex.token > tokens[-1]
        tokens.append(mutex.token)
    with _client(redis_server) as client:
        client.delete(fence)  # the whole counter lost
    with mutex:
        assert mutex.token is not None
        assert mutex.token > tokens[-1]
    assert tokens == sorted(set(tokens))


def test_a_counter_ahead_of_the_clock_goes_on_by_one(
    redis_server: RedisServer, server_store: tuple[cs.Store, str]
) -> None:
    """Tokens never follow a clock that is behind them: the counter goes on by one."""
    store, namespace = server_store
    ahead = (int(time.time()) + 86_400) * 1_000_000
    with _client(redis_server) as client:
        client.set(key_prefix(namespace) + "f:m:m", str(ahead))
    mutex = cs.Mutex(store, "m", ttl=5)
    for expected in (ahead + 1, ahead + 2):
        with mutex:
            assert mutex.token == expected


def test_tokens_are_at_least_the_servers_clock(server_store: tuple[cs.Store, str]) -> None:
    store, _ = server_store
    before = store._ops.now_us()
    mutex = cs.Mutex(store, "m", ttl=5)
    with mutex:
        assert mutex.token is not None
        assert before <= mutex.token <= store._ops.now_us()
