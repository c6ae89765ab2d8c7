"""Stores: a connection to the shared state plus a namespace.

``open_store(url)`` picks the store kind from the URL scheme (see
:mod:`clustersync.stores.registry`) and opens its backend. A store object is shared by
every primitive built on it, owns the backend (connections, change feed) and the
background renewer of its leases, and is closed with ``close()`` or by leaving its
``with`` block.
"""

from __future__ import annotations

import logging
import os
import socket
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from .._concurrency import aio as shim
from .._core.validation import validate_name
from .._notify import ChangeHub
from ..exceptions import ConfigurationError, StoreUnavailableError
from ..stores.contract.aio import Backend, GrantHandoff
from ..stores.registry import StoreKind, kind_for_url, redact, resolve_url

if TYPE_CHECKING:
    from .job_once import JobOnceScheduler
    from .renewer import Renewer

logger = logging.getLogger("clustersync.store")


def default_identity() -> str:
    """``"<hostname>:<pid>"``: who this instance is, when ``open_store`` is not told."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Store:
    """A connection to the shared state of one namespace; create it with
    :func:`open_store`.

    - ``url`` — the store's URL, password redacted;
    - ``namespace`` — everything built on this store lives in it, isolated from other
      namespaces;
    - ``identity`` — a readable name of this instance, recorded with what it holds.

    Every primitive built on the store reaches it through this object. Failures raise
    :class:`~clustersync.StoreUnavailableError` with the driver error as ``__cause__``.
    """

    def __init__(self, backend: Backend, *, url: str, namespace: str, identity: str) -> None:
        self._backend = backend
        self.url = redact(url)
        self.namespace = namespace
        self.identity = identity
        self._hub = ChangeHub(backend.set_watch_interval)
        self._scheduler: JobOnceScheduler | None = None
        self._lease_renewer: Renewer | None = None
        self._closed = False
        #: Whether blocked acquires queue up for a direct grant (``handoff="grant"``).
        self._grants = "grant" in backend.capabilities
        backend.set_listener(self._hub)

    def __repr__(self) -> str:
        return f"<Store {self.url} namespace={self.namespace!r}>"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def close(self) -> None:
        """Stop this instance's scheduler and close the connection; idempotent."""
        if self._closed:
            return
        scheduler = self._scheduler
        if scheduler is not None and scheduler.started:
            await scheduler.stop()
        if self._lease_renewer is not None:  # leases still held simply expire
            await self._lease_renewer.close()
        self._closed = True
        await self._backend.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- for the primitives built on the store ---------------------------------------------

    @property
    def _ops(self) -> Backend:
        """The store's operations (see :mod:`clustersync.stores.contract`); raises
        ``StoreUnavailableError`` once the store is closed."""
        if self._closed:
            raise StoreUnavailableError(f"store {self.url} is closed")
        return self._backend

    @property
    def _grant_ops(self) -> GrantHandoff:
        """The operations of the ``"grant"`` capability (only when ``_grants``)."""
        return cast(GrantHandoff, self._ops)

    def _renewer(self) -> Renewer:
        """The worker that renews every lease held through this store."""
        if self._lease_renewer is None:
            from .renewer import Renewer

            self._lease_renewer = Renewer(self)
        return self._lease_renewer


async def open_store(
    url: str | None = None,
    *,
    namespace: str = "default",
    identity: str | None = None,
    **options: Any,
) -> Store:
    """Open the store at ``url`` (default: ``$CLUSTERSYNC_URL``, else
    ``sqlite:///clustersync.db``) for ``namespace``.

    ``identity`` names this instance in listings (default ``"<hostname>:<pid>"``).
    ``options`` are those of the store kind (e.g. ``socket_timeout`` for servers).

    Raises :class:`~clustersync.ConfigurationError` for an unknown scheme, a malformed URL,
    unknown options or a missing optional dependency (naming the extra to install), and
    :class:`~clustersync.StoreUnavailableError` when the store cannot be reached or
    rejects the credentials. Stores create their schema on first use.
    """
    resolved = resolve_url(url)
    validate_name(namespace, "namespace")
    if identity is None:
        identity = default_identity()
    else:
        validate_name(identity, "identity")
    kind = kind_for_url(resolved)
    backend = await _open_backend(kind, resolved, namespace, _common_options(kind, options))
    return Store(backend, url=resolved, namespace=namespace, identity=identity)


def _common_options(kind: StoreKind, options: dict[str, Any]) -> dict[str, Any]:
    """Check the options whose meaning is the same for every store kind; return the
    rest, for the kind's opener."""
    options = dict(options)
    if "clock" in options and not kind.accepts_clock:
        raise ConfigurationError(f"the {kind.name} store judges time by its own clock: no clock=")
    if "handoff" in options and "grant" not in kind.capabilities:
        if options["handoff"] != "notify":
            raise ConfigurationError(
                f"handoff={options['handoff']!r}: the {kind.name} store only notifies"
                " waiters (handoff='grant' is a Redis store option)"
            )
        del options["handoff"]
    return options


async def _open_backend(
    kind: StoreKind, url: str, namespace: str, options: dict[str, Any]
) -> Backend:
    if shim.IS_ASYNC and kind.async_backend is not None:
        opener = kind.load(kind.async_backend)
        backend: Backend = await opener(url, namespace, options)
        return backend
    opener = kind.load(kind.backend)
    return shim.adapt_blocking(
        await shim.run_blocking(opener, url, namespace, options), blocking=kind.blocking
    )
