"""What the Redis store makes of redis-py's errors (no I/O).

:func:`not_executed` tells the errors that prove a call did not run on the server from
those that leave its outcome unknown; the store retries the first kind while a failover
completes, and raises the second at once (unless running the call twice is harmless).
"""

from __future__ import annotations

from redis.asyncio.sentinel import MasterNotFoundError as AsyncMasterNotFoundError
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError

__all__ = [
    "DRIVER_ERRORS",
    "AskError",
    "AuthenticationError",
    "NoScriptError",
    "NotSent",
    "RedisClusterException",
    "RedisConnectionError",
    "RedisError",
    "RedisTimeoutError",
    "ResponseError",
    "not_executed",
]

#: Errors of the driver that become ``StoreUnavailableError``.
DRIVER_ERRORS = (RedisError, OSError, RedisClusterException)
#: What redis-py's Sentinel connections raise for ``READONLY`` or an unblocked ``BLPOP``
#: from a demoted master (they disconnect so that the next connection asks the sentinels).
_DEMOTED = "previous master is now a slave"
#: Error replies that say the command was refused without running.
_REFUSED_REPLIES = ("NOREPLICAS", "UNBLOCKED", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")


class NotSent(RedisConnectionError):
    """No connection to the master could be made: nothing of the call was sent."""


def not_executed(exc: BaseException) -> bool:
    """Whether ``exc`` proves that a call did not run on the server: no connection was
    made, no master is known (a failover is under way), the cluster is down, the node is
    a replica now (``READONLY``, or redis-py's Sentinel connection saying so), it is
    loading its data, or it refused the command (``TRYAGAIN``, ``NOREPLICAS``)."""
    if isinstance(exc, AuthenticationError):
        return False
    if isinstance(
        exc,
        NotSent
        | MasterNotFoundError
        | AsyncMasterNotFoundError
        | ClusterDownError
        | TryAgainError
        | BusyLoadingError
        | ReadOnlyError,
    ):
        return True
    if isinstance(exc, ResponseError):
        status = getattr(exc, "status_code", None)
        return str(exc).startswith(_REFUSED_REPLIES) or status in _REFUSED_REPLIES
    return isinstance(exc, RedisConnectionError) and _DEMOTED in str(exc)
