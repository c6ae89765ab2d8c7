"""Stores: a connection to the shared state plus a namespace.

``open_store(url)`` picks the backend from the URL scheme (see SPEC §1). A store object
is shared by every primitive built on it, owns the connections and the change listener,
and is closed with ``close()`` or by leaving its ``with`` block.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from .. import _aioshim as shim
from .._core.validation import validate_name
from .._notify import ChangeHub
from ..backends.base import (
    AcquireResult,
    ClaimedJob,
    GrantResult,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    StoredJob,
)
from ..backends.urls import backend_kind, open_engine, redact, resolve_url
from ..exceptions import ConfigurationError, StoreUnavailableError
from .backend import Backend, EngineBackend, GrantingBackend

if TYPE_CHECKING:
    from .job_once import JobOnceScheduler
    from .renewer import Renewer

logger = logging.getLogger("clustersync.store")


class Store:
    """A connection to the shared state of one namespace.

    Create it with :func:`open_store`. Every operation is atomic in the store; failures
    raise :class:`~clustersync.StoreUnavailableError` with the driver error as
    ``__cause__``.
    """

    def __init__(self, backend: Backend, *, url: str, namespace: str) -> None:
        self._backend = backend
        self.url = redact(url)
        self.namespace = namespace
        self.hub = ChangeHub(backend.set_watch_interval)
        self._scheduler: JobOnceScheduler | None = None
        self._renewer: Renewer | None = None
        self._closed = False
        #: Whether blocked acquires queue up for a direct grant (``handoff="grant"``).
        self.grants = getattr(backend, "handoff", "notify") == "grant"
        backend.set_listener(self.hub)

    def __repr__(self) -> str:
        return f"<Store {self.url} namespace={self.namespace!r}>"

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Stop this instance's scheduler and close the connection; idempotent."""
        if self._closed:
            return
        scheduler = self._scheduler
        if scheduler is not None and scheduler.started:
            await scheduler.stop()
        if self._renewer is not None:  # leases still held simply expire
            await self._renewer.close()
        self._closed = True
        await self._backend.close()

    def renewer(self) -> Renewer:
        """The worker that renews every lease held through this store."""
        if self._renewer is None:
            from .renewer import Renewer

            self._renewer = Renewer(self)
        return self._renewer

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _open_backend(self) -> Backend:
        if self._closed:
            raise StoreUnavailableError(f"store {self.url} is closed")
        return self._backend

    # -- narrow operations (see clustersync.backends.base) -------------------------------

    async def now_us(self) -> int:
        return await self._open_backend().now_us()

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult:
        return await self._open_backend().acquire_lease(name, owner, ttl)

    async def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool:
        return await self._open_backend().renew_lease(name, owner, token, ttl)

    async def release_lease(self, name: str, owner: str, token: int) -> bool:
        return await self._open_backend().release_lease(name, owner, token)

    async def wait_for_grant(self, name: str, owner: str, ttl: float, wait: float) -> GrantResult:
        backend = cast(GrantingBackend, self._open_backend())
        return await backend.wait_for_grant(name, owner, ttl, wait)

    async def withdraw_waiter(self, name: str, owner: str) -> bool:
        backend = cast(GrantingBackend, self._open_backend())
        return await backend.withdraw_waiter(name, owner)

    async def list_leases(self) -> list[LeaseInfo]:
        return await self._open_backend().list_leases()

    async def get_job_metadata(self, key: str) -> JobMetadataRecord:
        return await self._open_backend().get_job_metadata(key)

    async def set_job_finished(self, key: str, lease_name: str, owner: str, token: int) -> bool:
        return await self._open_backend().set_job_finished(key, lease_name, owner, token)

    async def put_jobs(self, jobs: Sequence[NewJob]) -> None:
        await self._open_backend().put_jobs(jobs)

    async def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]:
        return await self._open_backend().claim_due_jobs(owner, limit, claim_ttl)

    async def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]:
        return await self._open_backend().renew_job_claims(owner, claims, claim_ttl)

    async def complete_job(self, key: str, owner: str, claim: int) -> bool:
        return await self._open_backend().complete_job(key, owner, claim)

    async def cancel_job(self, key: str) -> bool:
        return await self._open_backend().cancel_job(key)

    async def list_jobs(self) -> list[StoredJob]:
        return await self._open_backend().list_jobs()

    async def next_job_delay(self) -> float | None:
        return await self._open_backend().next_job_delay()


async def open_store(
    url: str | None = None, *, namespace: str = "default", **options: Any
) -> Store:
    """Open the store at ``url`` (default: ``$CLUSTERSYNC_URL``, else
    ``sqlite:///clustersync.db``) for ``namespace``.

    Raises :class:`~clustersync.ConfigurationError` for an unknown scheme, a malformed URL,
    unknown options or a missing optional dependency (naming the extra to install), and
    :class:`~clustersync.StoreUnavailableError` when the store cannot be reached or
    rejects the credentials. Backends create their schema on first use.
    """
    resolved = resolve_url(url)
    validate_name(namespace, "namespace")
    kind = backend_kind(resolved)
    if kind != "redis" and "handoff" in options:
        if options["handoff"] != "notify":
            raise ConfigurationError(
                f"handoff={options['handoff']!r}: the {kind} store only notifies waiters"
                " (handoff='grant' is a Redis store option)"
            )
        options = {k: v for k, v in options.items() if k != "handoff"}
    backend: Backend
    if kind == "redis":
        backend = await _open_redis(resolved, namespace, options)
    elif kind == "postgres":
        backend = await _open_postgres(resolved, namespace, options)
    else:
        backend = EngineBackend(await shim.run_blocking(open_engine, resolved, namespace, options))
    return Store(backend, url=resolved, namespace=namespace)


def _server_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    if "clock" in options:
        raise ConfigurationError(f"the {kind} store judges time by its own clock: no clock=")
    return options


async def _open_redis(url: str, namespace: str, options: dict[str, Any]) -> Backend:
    try:
        from .redis_backend import RedisBackend
    except ImportError as exc:
        raise ConfigurationError(
            'the redis store needs redis-py: pip install "clustersync[redis]"'
        ) from exc
    return await RedisBackend.open(url, namespace, _server_options("redis", options))


async def _open_postgres(url: str, namespace: str, options: dict[str, Any]) -> Backend:
    try:
        from .postgres_backend import PostgresBackend
    except ImportError as exc:
        raise ConfigurationError(
            'the postgres store needs psycopg 3: pip install "clustersync[postgres]"'
        ) from exc
    return await PostgresBackend.open(url, namespace, _server_options("postgres", options))
