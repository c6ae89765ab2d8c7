"""The operations a store backend offers to the orchestration, and the adapter that
serves them from a blocking engine (memory, SQLite).

Server backends (Redis, PostgreSQL) implement :class:`Backend` natively with their
asyncio driver here and their sync driver in the generated ``_sync`` copy. Memory and
SQLite engines are written once as plain functions (see ``backends/``);
:class:`EngineBackend` runs them inline (memory) or on a private I/O thread (SQLite, in
asyncio only — threads call them directly).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from .. import _aioshim as shim
from ..backends.base import (
    AcquireResult,
    BlockingEngine,
    ChangeListener,
    ClaimedJob,
    GrantResult,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    StoredJob,
)

_T = TypeVar("_T")


class Backend(Protocol):
    """Narrow, atomic store operations (see :mod:`clustersync.backends.base`)."""

    async def now_us(self) -> int: ...

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult: ...

    async def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool: ...

    async def release_lease(self, name: str, owner: str, token: int) -> bool: ...

    async def list_leases(self) -> list[LeaseInfo]: ...

    async def get_job_metadata(self, key: str) -> JobMetadataRecord: ...

    async def set_job_finished(self, key: str, lease_name: str, owner: str, token: int) -> bool: ...

    async def put_jobs(self, jobs: Sequence[NewJob]) -> None: ...

    async def claim_due_jobs(
        self, owner: str, limit: int, claim_ttl: float
    ) -> list[ClaimedJob]: ...

    async def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]: ...

    async def complete_job(self, key: str, owner: str, claim: int) -> bool: ...

    async def cancel_job(self, key: str) -> bool: ...

    async def list_jobs(self) -> list[StoredJob]: ...

    async def next_job_delay(self) -> float | None: ...

    def set_listener(self, listener: ChangeListener | None) -> None: ...

    def set_watch_interval(self, seconds: float | None) -> None: ...

    async def close(self) -> None: ...


class GrantingBackend(Backend, Protocol):
    """A backend whose releases can hand a lease straight to a queued waiter."""

    async def wait_for_grant(
        self, name: str, owner: str, ttl: float, wait: float
    ) -> GrantResult: ...

    async def withdraw_waiter(self, name: str, owner: str) -> bool: ...


class EngineBackend:
    """:class:`Backend` served by a :class:`~clustersync.backends.base.BlockingEngine`."""

    def __init__(self, engine: BlockingEngine) -> None:
        self.engine = engine
        self._executor = shim.io_executor("clustersync-store") if engine.blocking_io else None

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            return fn(*args)
        return await shim.run_blocking(fn, *args, executor=self._executor)

    async def now_us(self) -> int:
        return await self._call(self.engine.now_us)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult:
        return await self._call(self.engine.acquire_lease, name, owner, ttl)

    async def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool:
        return await self._call(self.engine.renew_lease, name, owner, token, ttl)

    async def release_lease(self, name: str, owner: str, token: int) -> bool:
        return await self._call(self.engine.release_lease, name, owner, token)

    async def list_leases(self) -> list[LeaseInfo]:
        return await self._call(self.engine.list_leases)

    async def get_job_metadata(self, key: str) -> JobMetadataRecord:
        return await self._call(self.engine.get_job_metadata, key)

    async def set_job_finished(self, key: str, lease_name: str, owner: str, token: int) -> bool:
        return await self._call(self.engine.set_job_finished, key, lease_name, owner, token)

    async def put_jobs(self, jobs: Sequence[NewJob]) -> None:
        await self._call(self.engine.put_jobs, jobs)

    async def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]:
        return await self._call(self.engine.claim_due_jobs, owner, limit, claim_ttl)

    async def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]:
        return await self._call(self.engine.renew_job_claims, owner, claims, claim_ttl)

    async def complete_job(self, key: str, owner: str, claim: int) -> bool:
        return await self._call(self.engine.complete_job, key, owner, claim)

    async def cancel_job(self, key: str) -> bool:
        return await self._call(self.engine.cancel_job, key)

    async def list_jobs(self) -> list[StoredJob]:
        return await self._call(self.engine.list_jobs)

    async def next_job_delay(self) -> float | None:
        return await self._call(self.engine.next_job_delay)

    def set_listener(self, listener: ChangeListener | None) -> None:
        self.engine.set_listener(listener)

    def set_watch_interval(self, seconds: float | None) -> None:
        self.engine.set_watch_interval(seconds)

    async def close(self) -> None:
        await self._call(self.engine.close)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
