"""Redis store (``redis://``, ``rediss://``, ``unix://``): a cluster on the Redis you run.

Every operation is one round trip through a Lua script (``EVALSHA``, loaded once, with
redis-py's automatic fallback), so it is atomic; expiry is judged by Redis's own clock
(``PX`` leases, ``TIME``). See :mod:`clustersync.stores.redis.lua` for the key layout
and how fencing tokens survive a restart that lost the data.

Wake-ups: one pub/sub subscription per store object on the namespace's ``events``
channel, established before ``open_store`` returns. Releases and job changes publish
there; a lost message costs latency only, since every waiter also has a deadline.

Failure modes: any redis-py error becomes ``StoreUnavailableError`` (cause kept); after a
reconnect of the subscription every waiter is woken to recheck. Without persistence
(``appendonly``), a Redis restart loses pending one-shot jobs and metadata.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as redis_client
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...exceptions import ConfigurationError, DuplicateJobError, StoreUnavailableError
from ..contract import (
    GRANT_LEASE_MS,
    AcquireResult,
    ClaimedJob,
    GrantResult,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    RecurringJobRecord,
    StoredJob,
    conflicting_job,
    prefix_end,
)
from ..feed.aio import POLL, ChangeFeed, PushNotifications
from ..options import option_count, option_timeout
from ..registry import redact
from . import lua

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
#: ``handoff`` values: notify waiters of a release, or grant the lease to the first one.
HANDOFFS = ("notify", "grant")
#: Shortest BLPOP timeout sent (Redis reads 0 as "block forever").
_MIN_BLOCK = 0.01
#: Characters with a meaning in the patterns of ``SCAN … MATCH``.
_GLOB_SPECIAL = frozenset("\\[]?*")


def key_prefix(namespace: str) -> str:
    """``cs:{NAMESPACE}:``, the prefix of every key of a namespace. ``%`` and ``}`` in the
    namespace are percent-encoded, so that the hash tag ends where the namespace does
    (one Redis Cluster slot) and no two namespaces share a key."""
    escaped = namespace.replace("%", "%25").replace("}", "%7D")
    return "cs:{" + escaped + "}:"


class RedisBackend(PushNotifications):
    """Lease and job operations on one namespace of a Redis server."""

    def __init__(
        self,
        client: Any,
        url: str,
        namespace: str,
        *,
        handoff: str = "notify",
        socket_timeout: float | None = None,
    ) -> None:
        self._client = client
        #: ``"grant"``: blocked acquires queue up and a release hands the lease to the
        #: first of them (see :meth:`wait_for_grant`); ``"notify"``: they are woken.
        self.handoff = handoff
        self.capabilities = frozenset({"grant"}) if handoff == "grant" else frozenset()
        self._socket_timeout = socket_timeout
        self._url = redact(url)
        self._prefix = key_prefix(namespace)
        self._events = self._prefix + "events"
        self._due = self._prefix + "due"
        self._runat = self._prefix + "runat"
        self._meta = self._prefix + "meta"  # last_finished of version 1 (read as a fallback)
        self._recurring = self._prefix + "rjobs"
        self._closed = False
        self._feed: ChangeFeed[Any] = ChangeFeed(
            what="Redis subscription",
            connect=self._subscribe,
            receive=self._receive,
            disconnect=_close_pubsub,
            notify=self._notify,
            errors=(RedisError, OSError),
            ping=self._ping_subscription,
            answer_within=socket_timeout or DEFAULT_SOCKET_TIMEOUT,
        )
        self._scripts: dict[str, Any] = {
            name: client.register_script(text) for name, text in lua.SCRIPTS.items()
        }

    @classmethod
    async def open(cls, url: str, namespace: str, options: dict[str, Any]) -> RedisBackend:
        options = dict(options)
        url, handoff = _handoff_option(url, options.pop("handoff", None))
        timeout = option_timeout(
            options.pop("socket_timeout", DEFAULT_SOCKET_TIMEOUT), "socket_timeout"
        )
        connect_timeout = option_timeout(options.pop("connect_timeout", 5.0), "connect_timeout")
        max_connections = options.pop("max_connections", None)
        if max_connections is not None:
            max_connections = option_count(max_connections, "max_connections")
        if options:
            raise ConfigurationError(
                f"unknown option(s) for the redis store: {', '.join(sorted(options))}"
            )
        try:
            client = redis_client.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=timeout,
                socket_connect_timeout=connect_timeout,
                max_connections=max_connections,
                health_check_interval=30,
            )
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"invalid Redis URL {redact(url)!r}: {exc}") from exc
        try:
            _check_connection_options(client.connection_pool)
        except (ValueError, TypeError, RedisError) as exc:
            await client.aclose()
            raise ConfigurationError(f"invalid Redis URL {redact(url)!r}: {exc}") from exc
        backend = cls(client, url, namespace, handoff=handoff, socket_timeout=timeout)
        try:
            async with backend._translate("connect"):
                await client.ping()
                await backend._index_keys()
                await backend._feed.start()
        except BaseException:
            await backend.close()
            raise
        return backend

    @contextlib.asynccontextmanager
    async def _translate(self, action: str) -> AsyncIterator[None]:
        """The one boundary where redis-py errors become StoreUnavailableError."""
        if self._closed:
            raise StoreUnavailableError(f"store {self._url} is closed")
        try:
            yield
        except AuthenticationError as exc:
            raise StoreUnavailableError(
                f"Redis at {self._url} rejected the credentials: authentication failed"
                f" (wrong or missing password?): {exc}"
            ) from exc
        except (RedisError, OSError) as exc:
            if isinstance(exc, RedisTimeoutError):
                await self.drop_idle_connections()  # they may have stopped answering too
            raise StoreUnavailableError(f"Redis at {self._url} failed to {action}: {exc}") from exc

    async def drop_idle_connections(self) -> None:
        """Close the pooled connections not in use (after a call got no answer: those
        may be stuck too), so that the next call opens a new one."""
        with contextlib.suppress(Exception):
            await self._client.connection_pool.disconnect(inuse_connections=False)

    async def _index_keys(self) -> None:
        """Add the jobs stored before the key index existed to it (once per namespace)."""
        marker = self._prefix + "keys:complete"
        if await self._client.exists(marker):
            return
        start = 0
        while True:
            seen = await self._scripts["BACKFILL_KEYS"](
                keys=[self._runat, self._prefix + "keys", marker], args=[start, _PUT_STEP]
            )
            if int(seen) < _PUT_STEP:
                return
            start += _PUT_STEP

    async def _run(self, action: str, script: str, keys: list[str], args: list[Any]) -> Any:
        async with self._translate(action):
            return await self._scripts[script](keys=keys, args=args)

    # -- notifications -------------------------------------------------------------------

    async def _subscribe(self) -> Any:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._events)
        except BaseException:
            await pubsub.aclose()
            raise
        return pubsub

    async def _receive(self, pubsub: Any) -> tuple[list[str], bool]:
        message = await pubsub.get_message(timeout=POLL)
        if message is None:
            return [], False
        if message.get("type") == "message":
            return [str(message["data"])], True
        return [], True  # a keep-alive answer ("pong") or a subscription message

    async def _ping_subscription(self, pubsub: Any) -> bool:
        await pubsub.ping(message=_KEEPALIVE)  # the answer arrives as a "pong" message
        return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listener = None
        await self._feed.close()
        with contextlib.suppress(Exception):
            await self._client.aclose()

    # -- leases --------------------------------------------------------------------------

    def _lease_keys(self, name: str) -> list[str]:
        """The lease, its fencing counter and its waiter flag."""
        return [self._prefix + "l:" + name, self._prefix + "f:" + name, self._prefix + "w:" + name]

    async def now_us(self) -> int:
        return int(await self._run("read the time", "NOW", [], []))

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult:
        acquired, value = await self._run(
            "acquire a lease", "ACQUIRE", self._lease_keys(name), [owner, _ms(ttl)]
        )
        if int(acquired) == 1:
            return AcquireResult(True, token=int(value))
        return AcquireResult(False, retry_after=max(0, int(value)) / 1000)

    async def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool:
        result = await self._run(
            "renew a lease", "RENEW", self._lease_keys(name)[:1], [f"{token}|{owner}", _ms(ttl)]
        )
        return int(result) == 1

    async def release_lease(self, name: str, owner: str, token: int) -> bool:
        result = await self._run(
            "release a lease",
            "RELEASE",
            [self._prefix + "l:" + name],
            [self._prefix, name, f"{token}|{owner}"],
        )
        return int(result) != 0

    async def break_lease(self, name: str) -> bool:
        result = await self._run(
            "break a lease", "BREAK", [self._prefix + "l:" + name], [self._prefix, name]
        )
        return int(result) == 1

    async def wait_for_grant(self, name: str, owner: str, ttl: float, wait: float) -> GrantResult:
        """Take the lease if free, else queue up (or refresh our place) and block up to
        ``wait`` seconds (and no longer than the current lease lives) until a release
        grants it to us. A grant writes a lease of ``min(ttl, GRANT_LEASE_MS)`` after this
        call was sent, so that is how long it is valid for; the holder's renewer extends
        it to ``ttl``. One connection of the pool is busy while this blocks."""
        granted_ms = min(_ms(ttl), GRANT_LEASE_MS)
        status, token, ms = await self._run(
            "wait for a lease",
            "ENQUEUE",
            [self._prefix + "l:" + name],
            [self._prefix, name, owner, _ms(ttl), granted_ms, lua.REGISTRATION_MS],
        )
        if int(status) != 0:
            return GrantResult(int(token), valid_for=max(0, int(ms)) / 1000)
        left = max(0, int(ms)) / 1000
        block = min(wait, left + 0.001)
        if self._socket_timeout is not None:
            block = min(block, self._socket_timeout / 2)
        popped = None
        if block > 0:
            async with self._translate("wait for a lease"):
                popped = await self._client.blpop(
                    [self._prefix + "g:" + owner], timeout=max(block, _MIN_BLOCK)
                )
        if popped is None:
            return GrantResult(None, retry_after=left)
        return GrantResult(int(popped[1]), valid_for=granted_ms / 1000)

    async def withdraw_waiter(self, name: str, owner: str) -> bool:
        """Leave the grant queue; a grant we never saw goes on as if released. True if
        there was one."""
        result = await self._run(
            "leave the queue of a lease",
            "WITHDRAW",
            [self._prefix + "l:" + name],
            [self._prefix, name, owner],
        )
        return int(result) == 1

    async def list_leases(self) -> list[LeaseInfo]:
        leases: list[LeaseInfo] = []
        pattern = "".join("\\" + c if c in _GLOB_SPECIAL else c for c in self._prefix)
        async with self._translate("list leases"):
            async for key in self._client.scan_iter(match=pattern + "l:*", count=1000):
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.get(key)
                    pipe.pttl(key)
                    value, pttl = await pipe.execute()
                if value is None or pttl is None or int(pttl) <= 0:
                    continue
                token, _, owner = str(value).partition("|")
                name = str(key)[len(self._prefix) + 2 :]
                leases.append(LeaseInfo(name, owner, int(token), int(pttl) / 1000))
        leases.sort(key=lambda info: info.name)
        return leases

    # -- recurring job metadata ----------------------------------------------------------

    async def get_job_metadata(self, key: str) -> JobMetadataRecord:
        last, paused, triggered, now = await self._run(
            "read job metadata", "GET_METADATA", [self._prefix + "r:" + key, self._meta], [key]
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
            [self._prefix + "r:" + key, self._recurring],
            [
                self._prefix,
                key,
                instance,
                schedule,
                "" if next_run_us is None else str(next_run_us),
                int(ttl * _US),
            ],
        )

    async def unregister_recurring_job(self, key: str, instance: str) -> None:
        await self._run(
            "unregister a recurring job",
            "UNREGISTER_RECURRING",
            [self._prefix + "ri:" + key],
            [self._prefix, key, instance],
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
            [self._prefix + "r:" + key, self._prefix + "l:" + lease_name, self._recurring],
            [f"{token}|{owner}", key, outcome, error or ""],
        )
        return int(result) == 1

    async def control_recurring_job(self, key: str, action: str) -> bool:
        result = await self._run(
            f"{action} a recurring job",
            "CONTROL_RECURRING",
            [self._prefix + "r:" + key, self._events],
            [key, action],
        )
        return int(result) == 1

    async def list_recurring_jobs(self) -> list[RecurringJobRecord]:
        rows = await self._run(
            "list recurring jobs", "LIST_RECURRING", [self._recurring], [self._prefix]
        )
        return [_recurring_record(row) for row in rows]

    # -- one-shot jobs -------------------------------------------------------------------

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
                await self._run(
                    "undo storing one-shot jobs",
                    "UNDO_JOBS",
                    [self._due, self._runat],
                    [self._prefix, *_job_args(stored[start : start + _PUT_STEP])],
                )
            raise

    async def _put_step(self, jobs: Sequence[NewJob], mode: str) -> set[str]:
        """PUT_JOBS on one step of a batch; returns the keys stored identically already."""
        status, *keys = await self._run(
            "store one-shot jobs",
            "PUT_JOBS",
            [self._due, self._runat, self._events],
            [self._prefix, mode, *_job_args(jobs)],
        )
        if int(status) == 1:
            raise DuplicateJobError(str(keys[0]))
        return {str(key) for key in keys}

    async def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]:
        rows = await self._run(
            "claim due jobs",
            "CLAIM_DUE",
            [self._due],
            [self._prefix, owner, limit, int(claim_ttl * _US)],
        )
        return [ClaimedJob(str(k), int(r), str(p), int(c)) for k, r, p, c in rows]

    async def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]:
        if not claims:
            return []
        args: list[Any] = [self._prefix, owner, int(claim_ttl * _US)]
        for key, claim in claims:
            args += [key, str(claim)]
        renewed = await self._run("renew job claims", "RENEW_CLAIMS", [self._due], args)
        return [str(key) for key in renewed]

    async def complete_job(self, key: str, owner: str, claim: int) -> bool:
        result = await self._run(
            "complete a job",
            "COMPLETE",
            [self._due, self._runat],
            [self._prefix, key, owner, str(claim)],
        )
        return int(result) == 1

    async def cancel_job(self, key: str) -> bool:
        result = await self._run(
            "cancel a job", "CANCEL", [self._due, self._runat, self._events], [self._prefix, key]
        )
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
            [self._prefix + "keys", self._due],
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


def _handoff_option(url: str, option: Any) -> tuple[str, str]:
    """The ``handoff`` store option, also accepted as ``?handoff=`` in the URL (so that
    ``CLUSTERSYNC_URL`` can choose it); returns the URL without it, and the mode."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {redact(url)!r}: {exc}") from exc
    query = parse_qsl(parts.query, keep_blank_values=True)
    in_url = [value for key, value in query if key == "handoff"]
    if in_url:
        url = urlunsplit(parts._replace(query=urlencode([q for q in query if q[0] != "handoff"])))
    values = [*in_url, *([] if option is None else [option])]
    for value in values:
        if value not in HANDOFFS:
            raise ConfigurationError(
                f"invalid store option: handoff must be 'notify' or 'grant', got {value!r}"
            )
    if len(set(values)) > 1:
        raise ConfigurationError("conflicting handoff settings in the URL and the options")
    handoff = values[0] if values else "notify"
    return url, str(handoff)


def _check_connection_options(pool: Any) -> None:
    """Check the options a URL's query gave redis-py before any connection is made: it
    would only fail when connecting, with an OverflowError for a huge timeout or a
    TypeError for an unknown option."""
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
    """key, run_at, props of each job, as the job scripts take them."""
    args: list[str] = []
    for job in jobs:
        args += [job.key, str(job.run_at_us), job.props_json]
    return args


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


async def _close_pubsub(pubsub: Any) -> None:
    await pubsub.aclose()
