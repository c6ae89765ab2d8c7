"""The store contract and the registry of store kinds — for store authors.

Users open stores with :func:`clustersync.open_store`; nothing here is needed for that.
This package is for writing a store of your own (or reading how the built-in ones work):

- :class:`Backend` / :class:`AsyncBackend` — the operations every store provides
  (:mod:`clustersync.stores.contract`), with plain methods or as coroutines;
  :class:`GrantHandoff` / :class:`AsyncGrantHandoff` — an optional capability;
- the records those operations take and return (:class:`AcquireResult`, ...);
- :class:`StoreKind`, :func:`register_store` and the entry-point group
  ``clustersync.stores`` — how ``open_store`` finds a store by URL scheme
  (:mod:`clustersync.stores.registry`);
- :mod:`clustersync.stores.options` — validation helpers for store options;
- :class:`clustersync.testing.StoreContract` — the test suite a store must pass.

The built-in stores, one folder or module each: :mod:`.memory` (the reference),
:mod:`.sqlite`, :mod:`.redis`, :mod:`.postgres`.
"""

from __future__ import annotations

from .contract import (
    ANY_CHANNEL,
    CAPABILITIES,
    GRANT_LEASE_MS,
    JOBS_CHANNEL,
    OPERATIONS,
    RECENT_RUNS_KEPT,
    REQUIRED_OPERATIONS,
    AcquireResult,
    ChangeListener,
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
    job_channel,
    lease_channel,
)
from .contract.aio import Backend as AsyncBackend
from .contract.aio import GrantHandoff as AsyncGrantHandoff
from .contract.sync import Backend, GrantHandoff
from .registry import (
    DEFAULT_URL,
    ENTRY_POINT_GROUP,
    URL_ENV_VAR,
    StoreKind,
    kind_for_url,
    register_store,
    store_kinds,
)

__all__ = [
    "ANY_CHANNEL",
    "CAPABILITIES",
    "DEFAULT_URL",
    "ENTRY_POINT_GROUP",
    "GRANT_LEASE_MS",
    "JOBS_CHANNEL",
    "OPERATIONS",
    "RECENT_RUNS_KEPT",
    "REQUIRED_OPERATIONS",
    "URL_ENV_VAR",
    "AcquireResult",
    "AsyncBackend",
    "AsyncGrantHandoff",
    "Backend",
    "ChangeListener",
    "ClaimedJob",
    "FailedJobRecord",
    "GrantHandoff",
    "GrantResult",
    "JobMetadataRecord",
    "LeaseInfo",
    "NewJob",
    "RecurringJobRecord",
    "RunRecord",
    "StoreKind",
    "StoredJob",
    "conflicting_job",
    "job_channel",
    "kind_for_url",
    "lease_channel",
    "register_store",
    "store_kinds",
]
