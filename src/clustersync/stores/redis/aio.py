"""The Redis store on redis-py's asyncio client (the source; ``sync.py`` is generated).

One server (``redis://``, ``rediss://``, ``unix://``), a Sentinel service
(``redis+sentinel://``) or a Redis Cluster (``redis+cluster://``): every call goes to the
master serving the namespace (:mod:`.topology`), as one round trip on one connection.

Every operation is a Lua script (``EVALSHA``; ``EVAL`` when the server does not know it
yet, e.g. a freshly promoted replica), so it is atomic; expiry is judged by Redis's own
clock (``PX`` leases, ``TIME``). See :mod:`clustersync.stores.redis.lua` for the key
layout and how fencing tokens survive a restart or a failover that lost the last writes.

Failures. A call that surely did not run on the server — no connection could be made,
no master is known while a failover is under way, ``CLUSTERDOWN``, ``READONLY`` from a
demoted master, ``LOADING``, a ``MOVED``/``ASK`` redirection — is retried inside for up
to ``failover_timeout`` seconds (default 5 s with Sentinel and Cluster, 0 for one server)
against the master found again. A call whose outcome is unknown (the connection broke or
timed out after the request was sent) raises ``StoreUnavailableError`` at once, unless
repeating it is harmless (reads, acquisitions and renewals by the same owner, storing the
same jobs), which is retried within the same bound. Any redis-py error that is raised
becomes ``StoreUnavailableError`` (cause kept).

``min_replicas=N``: every call that writes sends ``WAIT N timeout`` after its script on
the same connection (one round trip) and raises ``StoreUnavailableError`` unless N
replicas acknowledged the write; an acquisition that cannot be confirmed is released
(best effort) and not handed out, and a granted lease is confirmed by its new holder
before it is used.

Wake-ups: one pub/sub subscription per store object on the namespace's ``events``
channel (a shard channel on Redis Cluster), established before ``open_store`` returns and
re-established on the new master after a failover; every waiter is woken to recheck after
a reconnect. A lost message costs latency only, since every waiter also has a deadline.
Without persistence (``appendonly``), a Redis restart loses pending one-shot jobs and
metadata.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as redis_client

from ..._concurrency import aio as shim
from ..._core.backoff import Backoff
from ...exceptions import ConfigurationError, DuplicateJobError, StoreUnavailableError
from ..contract import (
    ANY_CHANNEL,
    GRANT_LEASE_MS,
    AcquireResult,
    ClaimedJob,
    FailedJobRecord,
    GrantResult,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    RecurringJobRecord,
    RunRecord,
    StoredJob,
    conflicting_job,
    prefix_end,
)
from ..feed.aio import POLL, ChangeFeed, PushNotifications
from ..options import option_count, option_timeout, reject_unknown
from ..registry import redact
from . import lua
from .errors import (
    DRIVER_ERRORS,
    AskError,
    AuthenticationError,
    NoScriptError,
    RedisConnectionError,
    RedisTimeoutError,
    ResponseError,
    not_executed,
)
from .topology.aio import ClusterRoute, Route, SentinelRoute, connection_options
from .urls import HANDOFFS, Settings, Target, parse_target, read_settings

__all__ = ["HANDOFFS", "RedisBackend", "key_prefix", "open_backend"]

logger = logging.getLogger("clustersync.redis")

_US = 1_000_000
_LIST_PAGE = 1000
#: Most jobs stored by one script (~20 ms of the server's time).
_PUT_STEP = 1000
#: Longest wait for an answer on one connection. With the default ttl of 15 s a lease is
#: renewed at 5 s; a connection that stopped answering is abandoned at 10 s at the latest
#: and the renewal retried on a new connection, well before 15 s (docs/reliability.md).
DEFAULT_SOCKET_TIMEOUT = 5.0
#: The payload of the subscription's keep-alive pings.
_KEEPALIVE = "clustersync-keepalive"
#: Shortest BLPOP timeout sent (Redis reads 0 as "block forever").
_MIN_BLOCK = 0.01
#: Most redirections (``MOVED``/``ASK``) one call follows.
_MAX_REDIRECTS = 16


def key_prefix(namespace: str) -> str:
    """``cs:{NAMESPACE}:``, the prefix of every key of a namespace. ``%`` and ``}`` in the
    namespace are percent-encoded, so that the hash tag ends where the namespace does
    (one Redis Cluster slot) and no two namespaces share a key."""
    escaped = namespace.replace("%", "%25").replace("}", "%7D")
    return "cs:{" + escaped + "}:"


class RedisBackend(PushNotifications):
    """Lease and job operations on one namespace of a Redis server, Sentinel service or
    Redis Cluster."""

    def __init__(
        self,
        route: Route,
        url: str,
        namespace: str,
        *,
        settings: Settings | None = None,
        socket_timeout: float | None = None,
    ) -> None:
        settings = settings or Settings()
        self._route = route
        self._settings = settings
        #: ``"grant"``: blocked acquires queue up and a release hands the lease to the
        #: first of them (see :meth:`wait_for_grant`); ``"notify"``: they are woken.
        self.handoff = settings.handoff
        self.capabilities = frozenset({"grant"}) if self.handoff == "grant" else frozenset()
        #: Waiters of this store that may block in grant queues at once (each holds a
        #: connection while it blocks); the others wait to be notified.
        self.max_blocked_waiters = settings.grant_waiters
        #: Replicas that must acknowledge every write (``WAIT``); 0: none.
        self.min_replicas = settings.min_replicas
        self._wait_ms = max(1, int(settings.min_replicas_timeout * 1000))
        self._socket_timeout = socket_timeout
        self._url = redact(url)
        self._prefix = key_prefix(namespace)
        self._events = self._prefix + "events"
        self._due = self._prefix + "due"
        self._runat = self._prefix + "runat"
        self._index = self._prefix + "keys"
        self._lease_names = self._prefix + "lnames"
        self._failed = self._prefix + "failed"
        self._runs = self._prefix + "runs"
        #: Where a job's key starts in the name of its hash (the scripts cut it from there).
        self._prefix_bytes = len(self._prefix.encode("utf-8"))
        self._meta = self._prefix + "meta"  # last_finished of version 1 (read as a fallback)
        self._recurring = self._prefix + "rjobs"
        self._closed = False
        self._feed: ChangeFeed[Any] = ChangeFeed(
            what="Redis subscription",
            connect=self._subscribe,
            receive=self._receive,
            disconnect=_close_pubsub,
            notify=self._notify,
            errors=DRIVER_ERRORS,
            ping=self._ping_subscription,
            answer_within=socket_timeout or DEFAULT_SOCKET_TIMEOUT,
        )
        texts = {
            name: lua.sharded(text) if route.sharded else text for name, text in lua.SCRIPTS.items()
        }
        #: name -> (sha1, text)
        self._scripts = {name: (lua.sha1(text), text) for name, text in texts.items()}

    @classmethod
    async def open(cls, url: str, namespace: str, options: dict[str, Any]) -> RedisBackend:
        options = dict(options)
        timeout = option_timeout(
            options.pop("socket_timeout", DEFAULT_SOCKET_TIMEOUT), "socket_timeout"
        )
        connect_timeout = option_timeout(options.pop("connect_timeout", 5.0), "connect_timeout")
        max_connections = options.pop("max_connections", None)
        if max_connections is not None:
            max_connections = option_count(max_connections, "max_connections")
        sentinel_password = options.pop("sentinel_password", None)
        if sentinel_password is not None and not isinstance(sentinel_password, str):
            raise ConfigurationError(
                "invalid store option: sentinel_password must be a str,"
                f" not {type(sentinel_password).__name__}"
            )
        url, settings = read_settings(url, options, timeout)
        if max_connections is not None:
            # A waiter blocked in BLPOP holds a connection of the pool: at most half of a
            # bounded pool, so that the other calls always find one.
            settings = replace(
                settings, grant_waiters=min(settings.grant_waiters, max_connections // 2)
            )
        reject_unknown(options, "redis")
        target = parse_target(url)
        if sentinel_password is not None and target.mode != "sentinel":
            raise ConfigurationError(
                "invalid store option: sentinel_password is for redis+sentinel:// URLs"
            )
        route = _open_route(
            target,
            key_prefix(namespace) + "events",
            socket_timeout=timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            sentinel_password=sentinel_password,
        )
        backend = cls(route, url, namespace, settings=settings, socket_timeout=timeout)
        try:
            async with backend._translate("connect"):
                await backend._call("connect", [("PING",)], idempotent=True)
                await backend._index_keys()
                await backend._feed.start()
                await route.start(backend._master_changed)
        except BaseException:
            await backend.close()
            raise
        return backend

    # -- calls -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _translate(self, action: str) -> AsyncIterator[None]:
        """The one boundary where redis-py errors become StoreUnavailableError."""
        if self._closed:
            raise StoreUnavailableError(f"store {self._url} is closed")
        try:
            yield
        except StoreUnavailableError:  # already translated (it is an OSError too)
            raise
        except AuthenticationError as exc:
            raise StoreUnavailableError(
                f"Redis at {self._url} rejected the credentials: authentication failed"
                f" (wrong or missing password?): {exc}"
            ) from exc
        except DRIVER_ERRORS as exc:
            if isinstance(exc, RedisTimeoutError | TimeoutError):
                await self.drop_idle_connections()  # they may have stopped answering too
            raise StoreUnavailableError(f"Redis at {self._url} failed to {action}: {exc}") from exc

    async def drop_idle_connections(self) -> None:
        """Close the pooled connections not in use (after a call got no answer: those
        may be stuck too), so that the next call opens a new one."""
        await self._route.drop_idle()

    async def _call(
        self,
        action: str,
        commands: list[tuple[Any, ...]],
        *,
        idempotent: bool,
        unknown_script: tuple[Any, ...] | None = None,
    ) -> list[Any]:
        """The replies to ``commands``, sent in one round trip to the namespace's master.

        Errors that prove the call did not run (see :func:`.topology.aio.not_executed`)
        are retried with backoff for up to ``failover_timeout`` seconds, redirections
        followed at once; so are errors of unknown outcome when ``idempotent`` (running
        the call twice is harmless). ``NOSCRIPT`` resends the first command as
        ``unknown_script`` (``EVAL`` with the script's text)."""
        if self._closed:
            raise StoreUnavailableError(f"store {self._url} is closed")
        give_up = shim.monotonic() + self._settings.failover_timeout
        backoff = Backoff(base=0.02, cap=0.5)
        redirects = 0
        asking: tuple[str, int] | None = None
        while True:
            try:
                sent = commands if asking is None else [("ASKING",), *commands]
                replies = await self._route.exchange(sent, asking)
                if asking is not None:
                    replies, asking = replies[1:], None
                first = replies[0]
                if isinstance(first, NoScriptError) and unknown_script is not None:
                    commands = [unknown_script, *commands[1:]]
                    continue
                if isinstance(first, AskError) and redirects < _MAX_REDIRECTS:
                    redirects += 1
                    address = (str(first.host), int(first.port))
                    if type(first) is AskError:
                        asking = address
                    else:  # MovedError: the slot has a new master
                        self._route.moved(address)
                    continue
                for reply in replies:
                    if isinstance(reply, ResponseError):
                        raise reply
                return replies
            except DRIVER_ERRORS as exc:
                if isinstance(exc, AuthenticationError):
                    raise
                retry = not_executed(exc) or (idempotent and not isinstance(exc, ResponseError))
                delay = backoff.next_delay()
                if not retry or shim.monotonic() + delay > give_up:
                    raise
                self._route.suspect()
                logger.info("Redis at %s: %s failed, retrying: %s", self._url, action, exc)
                await shim.sleep(delay)

    async def _eval(
        self,
        action: str,
        script: str,
        keys: list[str],
        args: list[Any],
        *,
        idempotent: bool = False,
        confirm: bool = True,
    ) -> tuple[Any, int]:
        """The reply of ``script``, and how many replicas acknowledged it (``WAIT``, sent
        after a script that writes when ``min_replicas`` is set and ``confirm``; else 0).
        ``idempotent``: running it twice is harmless (always so for the scripts that only
        read), so it may be retried after an unknown outcome."""
        sha, text = self._scripts[script]
        idempotent = idempotent or script in lua.READS
        wait = self.min_replicas if confirm and script not in lua.READS else 0
        commands: list[tuple[Any, ...]] = [("EVALSHA", sha, len(keys), *keys, *args)]
        if wait:
            commands.append(("WAIT", wait, self._wait_ms))
        async with self._translate(action):
            replies = await self._call(
                action,
                commands,
                idempotent=idempotent,
                unknown_script=("EVAL", text, len(keys), *keys, *args),
            )
        return replies[0], (int(replies[1]) if wait else 0)

    async def _run(
        self, action: str, script: str, keys: list[str], args: list[Any], **options: bool
    ) -> Any:
        """The reply of ``script`` (``options`` as for :meth:`_eval`); with
        ``min_replicas``, StoreUnavailableError if a write that asked for confirmation was
        not acknowledged by enough replicas (outcome unknown)."""
        reply, acks = await self._eval(action, script, keys, args, **options)
        if options.get("confirm", True) and acks < self.min_replicas and script not in lua.READS:
            raise self._unconfirmed(action, acks)
        return reply

    def _unconfirmed(self, action: str, acks: int) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"Redis at {self._url} failed to {action}: the master applied it but only {acks}"
            f" of the {self.min_replicas} replicas asked for (min_replicas) acknowledged it"
            f" within {self._wait_ms / 1000:g}s; outcome unknown (a failover may lose it)"
        )

    async def _index_keys(self) -> None:
        """Add the jobs stored before the key index existed to it (once per namespace)."""
        marker = self._prefix + "keys:complete"
        (exists,) = await self._call("connect", [("EXISTS", marker)], idempotent=True)
        if int(exists):
            return
        start = 0
        while True:
            seen = await self._run(
                "index job keys",
                "BACKFILL_KEYS",
                [self._runat, self._index, marker],
                [start, _PUT_STEP],
                idempotent=True,
                confirm=False,  # an index rebuilt again if a failover loses it
            )
            if int(seen) < _PUT_STEP:
                return
            start += _PUT_STEP

    # -- notifications -------------------------------------------------------------------

    async def _subscribe(self) -> Any:
        try:
            return await self._route.subscribe(self._events)
        except BaseException:
            self._route.suspect()
            raise

    async def _receive(self, pubsub: Any) -> tuple[list[str], bool]:
        message = await pubsub.get_message(timeout=POLL)
        if message is None:
            return [], False
        kind = message.get("type")
        if kind in ("message", "smessage"):
            return [str(message["data"])], True
        if kind == "sunsubscribe":
            # Redis Cluster ends shard subscriptions of a slot its node no longer serves
            # (a failover): subscribe again, on the slot's new master.
            self._route.suspect()
            raise RedisConnectionError("the namespace's slot moved to another node")
        return [], True  # a keep-alive answer ("pong") or a subscription message

    async def _ping_subscription(self, pubsub: Any) -> bool:
        await pubsub.ping(message=_KEEPALIVE)  # the answer arrives as a "pong" message
        return False

    def _master_changed(self) -> None:
        """The route found a new master: subscribe there, and wake every waiter to try
        again at once (they would otherwise sleep until their deadline)."""
        self._feed.reset()
        self._notify(ANY_CHANNEL)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listener = None
        await self._feed.close()
        with contextlib.suppress(Exception):
            await self._route.close()

    # -- leases --------------------------------------------------------------------------

    def _lease_keys(self, name: str) -> list[str]:
        """The lease, its counter, its waiter flag, its grant queue and queue info, the
        events channel and the index of lease keys (the keys of the scripts that end a
        hold or queue up)."""
        per_name = [self._prefix + part + name for part in lua.LEASE_KEYS]
        return [*per_name, self._events, self._lease_names]

    async def now_us(self) -> int:
        return int(await self._run("read the time", "NOW", [self._due], []))

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult:
        keys = [*self._lease_keys(name)[:3], self._lease_names]
        (acquired, value), acks = await self._eval(
            "acquire a lease", "ACQUIRE", keys, [owner, _ms(ttl)], idempotent=True
        )
        if acks < self.min_replicas:
            if int(acquired) == 1:
                await self._give_back(name, owner, int(value))
            raise self._unconfirmed("acquire a lease", acks)
        if int(acquired) == 1:
            return AcquireResult(True, token=int(value))
        return AcquireResult(False, retry_after=max(0, int(value)) / 1000)

    async def _give_back(self, name: str, owner: str, token: int) -> None:
        """Release a lease that was not confirmed by enough replicas (best effort: if this
        fails too, it expires on its own), so that it is never handed out."""
        sha, text = self._scripts["RELEASE"]
        keys = self._lease_keys(name)
        args = [self._prefix, name, f"{token}|{owner}"]
        try:
            async with self._translate("give back an unconfirmed lease"):
                await self._call(
                    "give back an unconfirmed lease",
                    [("EVALSHA", sha, len(keys), *keys, *args)],
                    idempotent=False,
                    unknown_script=("EVAL", text, len(keys), *keys, *args),
                )
        except StoreUnavailableError as exc:
            logger.warning("could not give back lease %r; it expires on its own: %s", name, exc)

    async def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool:
        result = await self._run(
            "renew a lease",
            "RENEW",
            [self._prefix + "l:" + name],
            [f"{token}|{owner}", _ms(ttl)],
            idempotent=True,
        )
        return int(result) == 1

    async def release_lease(self, name: str, owner: str, token: int) -> bool:
        result = await self._run(
            "release a lease",
            "RELEASE",
            self._lease_keys(name),
            [self._prefix, name, f"{token}|{owner}"],
        )
        return int(result) != 0

    async def break_lease(self, name: str) -> bool:
        result = await self._run(
            "break a lease", "BREAK", self._lease_keys(name), [self._prefix, name]
        )
        return int(result) == 1

    def grant_wait(self, ttl: float) -> float:
        """A quarter of a granted lease's life (0.25 s for ttls of 1 s and more): a grant
        is never older than that when its waiter sees it, and the waiter refreshes its
        place in the queue (which lapses after ``REGISTRATION_MS``) at that pace."""
        return min(ttl, GRANT_LEASE_MS / 1000) / 4

    async def wait_for_grant(self, name: str, owner: str, ttl: float, wait: float) -> GrantResult:
        """Take the lease if free, else queue up (or refresh our place) and block up to
        ``wait`` seconds (and no longer than the current lease lives) until a release
        grants it to us. A grant writes a lease of ``min(ttl, GRANT_LEASE_MS)`` after this
        call was sent, so that is how long it is valid for; the holder's renewer extends
        it to ``ttl``. One connection of the pool is busy while this blocks. With
        ``min_replicas``, a granted lease is confirmed (renewed, and the replicas waited
        for) before it is returned."""
        granted_ms = min(_ms(ttl), GRANT_LEASE_MS)
        grants = self._prefix + "g:" + owner
        (status, token, ms), acks = await self._eval(
            "wait for a lease",
            "ENQUEUE",
            [*self._lease_keys(name), grants],
            [self._prefix, name, owner, _ms(ttl), granted_ms, lua.REGISTRATION_MS],
            idempotent=True,
        )
        if acks < self.min_replicas:
            if int(status) != 0:
                await self._give_back(name, owner, int(token))
            raise self._unconfirmed("wait for a lease", acks)
        if int(status) != 0:
            return GrantResult(int(token), valid_for=max(0, int(ms)) / 1000)
        left = max(0, int(ms)) / 1000
        block = min(wait, left + 0.001)
        if self._socket_timeout is not None:
            block = min(block, self._socket_timeout / 2)
        popped = None
        if block > 0:
            async with self._translate("wait for a lease"):
                (popped,) = await self._call(
                    "wait for a lease",
                    [("BLPOP", grants, max(block, _MIN_BLOCK))],
                    idempotent=False,
                )
        if popped is None:
            return GrantResult(None, retry_after=left)
        granted = int(popped[1])
        if self.min_replicas:
            # The grant was written by the releaser's call; make sure the replicas have it
            # before using it (and that it is still ours).
            renewed, acks = await self._eval(
                "confirm a granted lease",
                "RENEW",
                [self._prefix + "l:" + name],
                [f"{granted}|{owner}", granted_ms],
                idempotent=True,
            )
            if int(renewed) != 1:
                return GrantResult(None, retry_after=0.0)
            if acks < self.min_replicas:
                await self._give_back(name, owner, granted)
                raise self._unconfirmed("confirm a granted lease", acks)
        return GrantResult(granted, valid_for=granted_ms / 1000, handed_over=True)

    async def withdraw_waiter(self, name: str, owner: str) -> bool:
        """Leave the grant queue; a grant we never saw goes on as if released. True if
        there was one."""
        result = await self._run(
            "leave the queue of a lease",
            "WITHDRAW",
            [*self._lease_keys(name), self._prefix + "g:" + owner],
            [self._prefix, name, owner],
        )
        return int(result) == 1

    async def list_leases(self) -> list[LeaseInfo]:
        rows = await self._run("list leases", "LEASES", [self._lease_names], [])
        leases: list[LeaseInfo] = []
        skip = len(self._prefix) + 2  # "P l:"
        for key, value, pttl in rows:
            if pttl is None or int(pttl) <= 0:
                continue
            token, _, owner = str(value).partition("|")
            leases.append(LeaseInfo(str(key)[skip:], owner, int(token), int(pttl) / 1000))
        leases.sort(key=lambda info: info.name)
        return leases

    async def read_lease(self, name: str) -> LeaseInfo | None:
        found = await self._run("read a lease", "READ_LEASE", [self._prefix + "l:" + name], [])
        if not found or int(found[1]) <= 0:
            return None
        token, _, owner = str(found[0]).partition("|")
        return LeaseInfo(name, owner, int(token), int(found[1]) / 1000)

    # -- slots ---------------------------------------------------------------------------

    def _slot_keys(self, name: str) -> list[str]:
        """The slots, their tokens, the fencing counter, the waiter flag and the line
        (arrivals, expiries) of ``name``."""
        p = self._prefix
        return [p + kind + ":" + name for kind in ("sl", "st", "sf", "sw", "sq", "sx")]

    async def acquire_slot(
        self, name: str, owner: str, limit: int, ttl: float, wait: float
    ) -> AcquireResult:
        acquired, value = await self._run(
            "acquire a slot",
            "ACQUIRE_SLOT",
            self._slot_keys(name),
            [owner, limit, _us(ttl), int(wait * _US) if wait > 0 else 0],
        )
        if int(acquired) == 1:
            return AcquireResult(True, token=int(value))
        return AcquireResult(False, retry_after=max(0, int(value)) / _US)

    async def leave_slot_queue(self, name: str, owner: str) -> bool:
        keys = self._slot_keys(name)
        result = await self._run(
            "leave the line of a semaphore",
            "LEAVE_SLOT_QUEUE",
            [keys[4], keys[5], keys[3], self._events],
            [owner, name],
        )
        return int(result) == 1

    async def renew_slot(self, name: str, owner: str, token: int, ttl: float) -> bool:
        result = await self._run(
            "renew a slot", "RENEW_SLOT", self._slot_keys(name)[:2], [owner, token, _us(ttl)]
        )
        return int(result) == 1

    async def release_slot(self, name: str, owner: str, token: int) -> bool:
        keys = self._slot_keys(name)
        result = await self._run(
            "release a slot",
            "RELEASE_SLOT",
            [keys[0], keys[1], keys[3], self._events],
            [owner, token, name],
        )
        return int(result) == 1

    async def break_slots(self, name: str, token: int | None) -> int:
        keys = self._slot_keys(name)
        result = await self._run(
            "break slots",
            "BREAK_SLOTS",
            [keys[0], keys[1], keys[3], self._events],
            ["" if token is None else token, name],
        )
        return int(result)

    async def list_slots(self, name: str) -> list[LeaseInfo]:
        rows = await self._run("list slots", "LIST_SLOTS", self._slot_keys(name)[:2], [])
        slots = [LeaseInfo(name, str(o), int(t), int(left) / _US) for o, t, left in rows]
        slots.sort(key=lambda info: info.token)
        return slots

    # -- recurring job metadata ----------------------------------------------------------

    async def get_job_metadata(self, key: str) -> JobMetadataRecord:
        last, paused, triggered, now = await self._run(
            "read job metadata",
            "GET_METADATA",
            [self._prefix + "r:" + key, self._meta],
            [key],
        )
        return JobMetadataRecord(
            int(last) if last else None, int(now), int(paused) == 1, int(triggered) == 1
        )

    async def register_recurring_job(
        self, key: str, instance: str, schedule: str, next_run_us: int | None, ttl: float
    ) -> None:
        await self._run(
            "register a recurring job",
            "REGISTER_RECURRING",
            [
                self._prefix + "r:" + key,
                self._recurring,
                self._prefix + "ri:" + key,
                self._prefix + "rn:" + key,
            ],
            [key, instance, schedule, "" if next_run_us is None else next_run_us, int(ttl * _US)],
            idempotent=True,
        )

    async def unregister_recurring_job(self, key: str, instance: str) -> None:
        await self._run(
            "unregister a recurring job",
            "UNREGISTER_RECURRING",
            [self._prefix + "ri:" + key, self._prefix + "rn:" + key],
            [instance],
            idempotent=True,
        )

    async def start_job_run(self, key: str, lease_name: str, owner: str, token: int) -> bool:
        result = await self._run(
            "start a recurring job's run",
            "START_RUN",
            [self._prefix + "r:" + key, self._prefix + "l:" + lease_name, self._recurring],
            [f"{token}|{owner}", key],
        )
        return int(result) == 1

    async def set_job_finished(
        self,
        key: str,
        lease_name: str,
        owner: str,
        token: int,
        outcome: str,
        error: str | None,
    ) -> bool:
        result = await self._run(
            "write job metadata",
            "SET_FINISHED",
            [
                self._prefix + "r:" + key,
                self._prefix + "l:" + lease_name,
                self._recurring,
                self._runs,
            ],
            [f"{token}|{owner}", key, outcome, error or "", owner],
            idempotent=True,
        )
        return int(result) == 1

    async def control_recurring_job(self, key: str, action: str) -> bool:
        result = await self._run(
            f"{action} a recurring job",
            "CONTROL_RECURRING",
            [self._prefix + "r:" + key, self._events],
            [key, action],
            idempotent=True,
        )
        return int(result) == 1

    async def list_recurring_jobs(self) -> list[RecurringJobRecord]:
        rows = await self._run(
            "list recurring jobs", "LIST_RECURRING", [self._recurring], [self._prefix]
        )
        return [_recurring_record(row) for row in rows]

    # -- one-shot jobs -------------------------------------------------------------------

    def _batch_keys(self, jobs: Sequence[NewJob]) -> list[str]:
        """The keys of PUT_JOBS and UNDO_JOBS: the indexes and the events channel, then
        the hash and the failed job hash of each job."""
        keys = [self._prefix + name for name in lua.JOB_BATCH_KEYS]
        for job in jobs:
            keys += [self._prefix + "j:" + job.key, self._prefix + "fj:" + job.key]
        return keys

    def _job_keys(self, key: str) -> list[str]:
        """The keys of the scripts on one job (see ``lua.JOB_KEYS``): the indexes, the
        events channel, the failed set, the recent runs, the job's hash and its failed
        job hash."""
        fixed = [self._prefix + name for name in lua.JOB_KEYS]
        return [*fixed, self._prefix + "j:" + key, self._prefix + "fj:" + key]

    async def put_jobs(self, jobs: Sequence[NewJob]) -> None:
        """One script for a batch of up to :data:`_PUT_STEP` jobs. A larger batch in one
        script would block the server for seconds (every client gets BUSY past
        ``lua-time-limit``): it is checked for duplicates step by step, then stored step
        by step; if a concurrent change makes a later step meet a duplicate, the earlier
        steps are undone, so nothing of the batch stays stored when this raises."""
        if not jobs:
            return
        if len(jobs) <= _PUT_STEP:
            await self._put_step(jobs, "put")
            return
        duplicate = conflicting_job(jobs, {})  # a key repeated within the batch
        if duplicate is not None:
            raise DuplicateJobError(duplicate)
        steps = [jobs[i : i + _PUT_STEP] for i in range(0, len(jobs), _PUT_STEP)]
        for step in steps:
            await self._put_step(step, "check")
        stored: list[NewJob] = []
        try:
            for step in steps:
                skipped = await self._put_step(step, "put")
                stored += [job for job in step if job.key not in skipped]
        except DuplicateJobError:
            for start in range(0, len(stored), _PUT_STEP):
                chunk = stored[start : start + _PUT_STEP]
                await self._run(
                    "undo storing one-shot jobs",
                    "UNDO_JOBS",
                    self._batch_keys(chunk),
                    [self._prefix_bytes, "undo", *_job_args(chunk)],
                    idempotent=True,
                )
            raise

    async def _put_step(self, jobs: Sequence[NewJob], mode: str) -> set[str]:
        """PUT_JOBS on one step of a batch; returns the keys stored identically already."""
        status, *keys = await self._run(
            "store one-shot jobs",
            "PUT_JOBS",
            self._batch_keys(jobs),
            [self._prefix_bytes, mode, *_job_args(jobs)],
            idempotent=True,
        )
        if int(status) == 1:
            raise DuplicateJobError(str(keys[0]))
        return {str(key) for key in keys}

    async def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]:
        rows = await self._run(
            "claim due jobs",
            "CLAIM_DUE",
            [self._due, self._runat, self._index],
            [self._prefix, owner, limit, int(claim_ttl * _US)],
        )
        return [
            ClaimedJob(str(k), int(r), str(p), int(c), int(a), int(d), int(at), str(b), str(t))
            for k, r, p, c, a, d, at, b, t in rows
        ]

    async def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]:
        if not claims:
            return []
        keys = [self._due] + [self._prefix + "j:" + key for key, _ in claims]
        args: list[Any] = [self._prefix_bytes, owner, int(claim_ttl * _US)]
        args += [str(claim) for _, claim in claims]
        renewed = await self._run("renew job claims", "RENEW_CLAIMS", keys, args, idempotent=True)
        return [str(key) for key in renewed]

    def _end_run(
        self, key: str, owner: str, claim: int, outcome: str, error: str | None
    ) -> tuple[list[str], list[Any]]:
        return self._job_keys(key), [key, owner, str(claim), outcome, error or ""]

    async def complete_job(
        self, key: str, owner: str, claim: int, outcome: str, error: str | None
    ) -> bool:
        keys, args = self._end_run(key, owner, claim, outcome, error)
        return int(await self._run("complete a job", "COMPLETE", keys, args)) == 1

    async def retry_job(
        self,
        key: str,
        owner: str,
        claim: int,
        delay: float,
        error: str | None,
        count_attempt: bool,
    ) -> bool:
        keys, args = self._end_run(key, owner, claim, "retry", error)
        args += [int(delay * _US), "1" if count_attempt else "0"]
        return int(await self._run("retry a job", "RETRY_JOB", keys, args)) == 1

    async def fail_job(self, key: str, owner: str, claim: int, error: str) -> bool:
        keys, args = self._end_run(key, owner, claim, "error", error)
        return int(await self._run("fail a job", "FAIL_JOB", keys, args)) == 1

    async def list_failed_jobs(self) -> list[FailedJobRecord]:
        rows = await self._run("list failed jobs", "LIST_FAILED", [self._failed], [self._prefix])
        return [
            FailedJobRecord(str(k), int(r), str(p), int(a), str(e), int(f))
            for k, r, p, a, e, f in rows
        ]

    async def retry_failed_job(self, key: str) -> bool:
        result = await self._run(
            "retry a failed job",
            "RETRY_FAILED",
            self._job_keys(key),
            [key],
        )
        return int(result) == 1

    async def recent_runs(self, limit: int) -> list[RunRecord]:
        entries = await self._run("list recent runs", "RECENT_RUNS", [self._runs], [limit])
        runs = []
        for entry in entries:
            kind, key, due, started, finished, outcome, error, owner, attempt = json.loads(entry)
            runs.append(
                RunRecord(
                    kind,
                    key,
                    int(due) if due else None,
                    int(started) if started else None,
                    int(finished),
                    outcome,
                    error or None,
                    owner,
                    int(attempt),
                )
            )
        return runs

    async def cancel_job(self, key: str) -> bool:
        result = await self._run("cancel a job", "CANCEL", self._job_keys(key), [key])
        return int(result) == 1

    async def list_jobs(self) -> list[StoredJob]:
        jobs: list[StoredJob] = []
        # (score, key) of the last key scanned: the next page starts right after it (see
        # lua.LIST_PAGE), so keys added or removed meanwhile never shift a page.
        cursor: list[str] = []
        while True:
            scanned, rows, *cursor = await self._run(
                "list jobs",
                "LIST_PAGE",
                [self._due, self._runat],
                [self._prefix, _LIST_PAGE, *cursor],
            )
            jobs += [StoredJob(str(k), int(r), str(p)) for k, r, p in rows]
            if int(scanned) < _LIST_PAGE:
                break
        jobs.sort(key=lambda job: (job.run_at_us, job.key))
        return jobs

    async def list_jobs_page(
        self, prefix: str, after: str | None, limit: int
    ) -> tuple[list[StoredJob], str | None]:
        low = "(" + after if after is not None and after >= prefix else "[" + prefix
        end = prefix_end(prefix)
        high = "+" if end is None else "(" + end
        last, scanned, rows = await self._run(
            "list jobs",
            "LIST_KEYS_PAGE",
            [self._index, self._due],
            [self._prefix, low, high, limit],
        )
        page = [StoredJob(str(k), int(r), str(p)) for k, r, p in rows]
        return page, (str(last) if int(scanned) == limit and last else None)

    async def count_jobs(self) -> int:
        return int(await self._run("count jobs", "COUNT_JOBS", [self._due], []))

    async def next_job_delay(self) -> float | None:
        delay = await self._run("find the next due job", "NEXT_DELAY", [self._due], [])
        if delay is None or delay is False:
            return None
        return max(0.0, int(delay) / _US)


async def open_backend(url: str, namespace: str, options: dict[str, Any]) -> RedisBackend:
    """Open the Redis store of ``url`` (see :meth:`RedisBackend.open`)."""
    return await RedisBackend.open(url, namespace, options)


def _open_route(
    target: Target,
    slot_key: str,
    *,
    socket_timeout: float,
    connect_timeout: float,
    max_connections: int | None,
    sentinel_password: str | None,
) -> Route:
    """The route to the master of ``target`` (no I/O yet)."""
    if target.mode == "sentinel":
        return SentinelRoute(
            target,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            sentinel_password=sentinel_password,
        )
    if target.mode == "cluster":
        return ClusterRoute(
            target,
            slot_key,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
        )
    try:
        pool = redis_client.ConnectionPool.from_url(
            target.url,
            max_connections=max_connections,
            **connection_options(socket_timeout=socket_timeout, connect_timeout=connect_timeout),
        )
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"invalid Redis URL {redact(target.url)!r}: {exc}") from exc
    try:
        _check_connection_options(pool)
    except (ValueError, TypeError, *DRIVER_ERRORS) as exc:
        raise ConfigurationError(f"invalid Redis URL {redact(target.url)!r}: {exc}") from exc
    return Route(pool)


def _check_connection_options(pool: Any) -> None:
    """Check the options a URL's query gave redis-py before any connection is made: it
    would only fail when connecting, with an OverflowError for a huge timeout or a
    TypeError for an unknown option. Connections get no retry policy of redis-py's own
    (the store decides what to retry), unless the URL asked for one."""
    options = pool.connection_kwargs
    for name in ("socket_timeout", "socket_connect_timeout"):
        if options.get(name) is not None:
            option_timeout(options[name], name)
    if options.get("health_check_interval") is not None:
        option_timeout(options["health_check_interval"], "health_check_interval", allow_zero=True)
    # No I/O: TypeError for an unknown option, RedisError for a bad value (protocol=9).
    pool.connection_class(**options)


def _recurring_record(row: Any) -> RecurringJobRecord:
    key, schedule, paused, triggered, started, finished, outcome, error, next_run, count = row
    return RecurringJobRecord(
        str(key),
        str(schedule),
        paused == "1",
        triggered == "1",
        int(started) if started else None,
        int(finished) if finished else None,
        outcome or None,
        error or None,
        int(next_run) if next_run else None,
        int(count),
    )


def _job_args(jobs: Sequence[NewJob]) -> list[str]:
    """run_at, props, scheduled_by, trace of each job, as PUT_JOBS and UNDO_JOBS take them
    (the key is in the name of the job's hash)."""
    args: list[str] = []
    for job in jobs:
        args += [str(job.run_at_us), job.props_json, job.scheduled_by, job.trace]
    return args


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _us(seconds: float) -> int:
    return max(1, int(seconds * _US))


async def _close_pubsub(pubsub: Any) -> None:
    await pubsub.aclose()
