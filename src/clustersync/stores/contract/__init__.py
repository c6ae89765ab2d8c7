"""The store contract, declared once.

- :mod:`.aio` — the protocols, asyncio form (the source of truth): :class:`~.aio.Backend`
  (the operations every store provides) and the optional capabilities
  (:class:`~.aio.GrantHandoff`).
- :mod:`.sync` — the same protocols with plain methods, generated from :mod:`.aio`.
- :mod:`.records` — the values the operations take and return.

The lists below are derived from the protocols, so that the asyncio adapter of blocking
stores, fault injection and the documentation never list operations by hand.
"""

from __future__ import annotations

import inspect

from . import aio
from .records import (
    ANY_CHANNEL,
    GRANT_LEASE_MS,
    JOBS_CHANNEL,
    JOBS_DUE_PREFIX,
    RECURRING_JOB_ACTIONS,
    AcquireResult,
    ChangeListener,
    ClaimedJob,
    GrantResult,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    RecurringJobRecord,
    StoredJob,
    conflicting_job,
    job_channel,
    lease_channel,
    parse_jobs_due,
    prefix_end,
)

__all__ = [
    "ANY_CHANNEL",
    "CAPABILITIES",
    "GRANT_LEASE_MS",
    "JOBS_CHANNEL",
    "JOBS_DUE_PREFIX",
    "OPERATIONS",
    "RECURRING_JOB_ACTIONS",
    "REQUIRED_OPERATIONS",
    "AcquireResult",
    "ChangeListener",
    "ClaimedJob",
    "GrantResult",
    "JobMetadataRecord",
    "LeaseInfo",
    "NewJob",
    "RecurringJobRecord",
    "StoredJob",
    "conflicting_job",
    "job_channel",
    "lease_channel",
    "parse_jobs_due",
    "prefix_end",
]


def _operations(protocol: type) -> tuple[str, ...]:
    """The operations a protocol declares: its coroutine methods, in declaration order
    (``close`` is plumbing, not an operation)."""
    return tuple(
        name
        for name, member in vars(protocol).items()
        if inspect.iscoroutinefunction(member) and name != "close"
    )


#: The operations every store provides.
REQUIRED_OPERATIONS: tuple[str, ...] = _operations(aio.Backend)
#: Optional capabilities: name -> the operations a store offering it provides.
CAPABILITIES: dict[str, tuple[str, ...]] = {"grant": _operations(aio.GrantHandoff)}
#: Every operation (required or of a capability): what fault injection can fail and the
#: asyncio adapter of blocking stores serves.
OPERATIONS: frozenset[str] = frozenset(REQUIRED_OPERATIONS).union(*CAPABILITIES.values())
