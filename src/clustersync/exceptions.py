"""The whole clustersync error tree.

Every error the library raises on purpose derives from :class:`ClusterSyncError` and, where
the meaning fits, from the matching built-in exception, so ``except ValueError`` or
``except ConnectionError`` keep working in code that does not know clustersync. Driver
errors (sqlite3, redis-py, psycopg) never escape untranslated: they are wrapped in
:class:`StoreUnavailableError` (or :class:`ConfigurationError`) with the driver error kept
as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "ClusterSyncError",
    "ConfigurationError",
    "DuplicateJobError",
    "LockLostError",
    "NotLockedError",
    "SchedulerError",
    "StoreUnavailableError",
]


class ClusterSyncError(Exception):
    """Root of every error clustersync raises on purpose."""


class ConfigurationError(ClusterSyncError, ValueError):
    """A store URL, option or optional dependency is wrong or missing."""


class StoreUnavailableError(ClusterSyncError, ConnectionError):
    """The store could not be reached or failed; the driver error is ``__cause__``.

    On a write it means *outcome unknown*: the write may or may not have happened.
    Retrying the same call is safe: a retried ``acquire`` gets the lease its first
    attempt may have taken, a retried ``release`` that finds nothing to release reports
    success, and scheduling the same job again (same key, run time and props) succeeds.
    """


class NotLockedError(ClusterSyncError, RuntimeError):
    """``release()`` was called on a mutex this object does not hold."""


class LockLostError(ClusterSyncError):
    """The lease of a held mutex was lost: the critical section was not protected."""


class DuplicateJobError(ClusterSyncError, KeyError):
    """A one-shot job with this key is already stored."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:  # KeyError would print the repr of its argument only
        return f"a one-shot job with key {self.key!r} already exists"


class SchedulerError(ClusterSyncError, RuntimeError):
    """The one-shot job scheduler was used in the wrong state (no callback, started twice)."""
