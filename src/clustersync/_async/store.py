"""Stores: a connection to the shared state plus a namespace.

``open_store(url)`` picks the backend from the URL scheme (see SPEC §1). A store object
is shared by every primitive built on it, owns the connection and the change listener,
and is closed with ``close()`` or by leaving its ``with`` block.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import _aioshim as shim
from .._core.validation import validate_name
from .._notify import ChangeHub
from ..backends.base import (
    AcquireResult,
    BlockingEngine,
    ClaimedJob,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    StoredJob,
)
from ..backends.urls import open_engine, redact, resolve_url
from ..exceptions import StoreUnavailableError

if TYPE_CHECKING:
    from .job_once import JobOnceScheduler

logger = logging.getLogger("clustersync.store")


class Store:
    """A connection to the shared state of one namespace.

    Create it with :func:`open_store`. Every operation is atomic in the store; failures
    raise :class:`~clustersync.StoreUnavailableError` with the driver error as
    ``__cause__``.
    """

    def __init__(self, engine: BlockingEngine, *, url: str, namespace: str) -> None:
        self._engine = engine
        self.url = redact(url)
        self.namespace = namespace
        self.hub = ChangeHub(engine.set_watch_interval)
        self._scheduler: JobOnceScheduler | None = None
        self._closed = False
        self._executor = shim.io_executor("clustersync-store") if engine.blocking_io else None
        engine.set_listener(self.hub)

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
        self._closed = True
        await shim.run_blocking(self._engine.close, executor=self._executor)
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, fn: Any, *args: Any) -> Any:
        if self._closed:
            raise StoreUnavailableError(f"store {self.url} is closed")
        if self._executor is not None:
            return await shim.run_blocking(fn, *args, executor=self._executor)
        return fn(*args)

    # -- narrow operations (see clustersync.backends.base) -------------------------------

    async def now_us(self) -> int:
        result: int = await self._call(self._engine.now_us)
        return result

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult:
        result: AcquireResult = await self._call(self._engine.acquire_lease, name, owner, ttl)
        return result

    async def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool:
        return bool(await self._call(self._engine.renew_lease, name, owner, token, ttl))

    async def release_lease(self, name: str, owner: str, token: int) -> bool:
        return bool(await self._call(self._engine.release_lease, name, owner, token))

    async def list_leases(self) -> list[LeaseInfo]:
        result: list[LeaseInfo] = await self._call(self._engine.list_leases)
        return result

    async def get_job_metadata(self, key: str) -> JobMetadataRecord:
        result: JobMetadataRecord = await self._call(self._engine.get_job_metadata, key)
        return result

    async def set_job_finished(self, key: str, lease_name: str, owner: str, token: int) -> bool:
        return bool(await self._call(self._engine.set_job_finished, key, lease_name, owner, token))

    async def put_jobs(self, jobs: Sequence[NewJob]) -> None:
        await self._call(self._engine.put_jobs, jobs)

    async def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]:
        result: list[ClaimedJob] = await self._call(
            self._engine.claim_due_jobs, owner, limit, claim_ttl
        )
        return result

    async def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]:
        result: list[str] = await self._call(
            self._engine.renew_job_claims, owner, claims, claim_ttl
        )
        return result

    async def complete_job(self, key: str, owner: str, claim: int) -> bool:
        return bool(await self._call(self._engine.complete_job, key, owner, claim))

    async def cancel_job(self, key: str) -> bool:
        return bool(await self._call(self._engine.cancel_job, key))

    async def list_jobs(self) -> list[StoredJob]:
        result: list[StoredJob] = await self._call(self._engine.list_jobs)
        return result

    async def next_job_delay(self) -> float | None:
        result: float | None = await self._call(self._engine.next_job_delay)
        return result


async def open_store(
    url: str | None = None, *, namespace: str = "default", **options: Any
) -> Store:
    """Open the store at ``url`` (default: ``$CLUSTERSYNC_URL``, else
    ``sqlite:///clustersync.db``) for ``namespace``.

    Raises :class:`~clustersync.ConfigurationError` for an unknown scheme, a malformed URL
    or unknown options, and :class:`~clustersync.StoreUnavailableError` when the store
    cannot be reached. Backends create their schema on first use.
    """
    resolved = resolve_url(url)
    validate_name(namespace, "namespace")
    engine = await shim.run_blocking(open_engine, resolved, namespace, options)
    return Store(engine, url=resolved, namespace=namespace)
