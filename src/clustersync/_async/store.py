"""Stores: a connection to the shared state plus a namespace.

``open_store(url)`` picks the store kind from the URL scheme (see
:mod:`clustersync.stores.registry`) and opens its backend. A store object is shared by
every primitive built on it, owns the backend (connections, change feed), the background
renewer of its leases, its recurring jobs and its one-shot scheduler, and is closed with
``close()`` or by leaving its ``with`` block.

Closing stops everything built on the store: elections resign (``on_revoked`` runs),
recurring jobs and the one-shot scheduler stop (a running callback finishes first,
unless ``close()`` is called from inside it), held mutex and semaphore leases end
(released in the store; ``locked()`` turns False and ``on_lost`` is called), and every
later call through the store raises ``StoreUnavailableError``.

Fork (``gunicorn --preload``, multiprocessing): a threading-API store opened before
``os.fork()`` works in the child as if opened there: the child opens its own connections
at first use, and re-creates the renewer, the change feed, the scheduler and the
recurring jobs and elections that were started (a child campaigns as a new candidate).
Holds taken before the fork belong to the parent: in the child ``locked()`` and
``is_leader`` are False and ``check()``/``release()`` raise ``LockLostError``.
An asyncio store cannot follow a fork (its event loop does not): its first use in the
child raises ``ConfigurationError``.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import threading
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from .. import _metrics
from .._concurrency import aio as shim
from .._core.places import Places
from .._core.validation import validate_name
from .._notify import ChangeHub
from ..exceptions import ConfigurationError, StoreUnavailableError
from ..stores.contract import ANY_CHANNEL
from ..stores.contract.aio import Backend, GrantHandoff
from ..stores.registry import StoreKind, kind_for_url, redact, resolve_url

if TYPE_CHECKING:
    from .election import Election
    from .job import Job
    from .job_once import JobOnceScheduler
    from .renewer import Renewer

logger = logging.getLogger("clustersync.store")

#: Every open store of this world, so that a forked child can re-create what they run.
_OPEN_STORES: weakref.WeakSet[Store] = weakref.WeakSet()
#: Backends a forked child stopped using: kept referenced so that they are never
#: finalized there (closing a connection shared with the parent could disturb it).
_ABANDONED: list[Any] = []


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

    ``close()`` (or leaving a ``with`` block) stops everything built on the store.
    Failures raise :class:`~clustersync.StoreUnavailableError` with the driver error as
    ``__cause__``.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        url: str,
        namespace: str,
        identity: str | None,
        kind: StoreKind,
        options: dict[str, Any],
    ) -> None:
        self.url = redact(url)
        self.namespace = namespace
        self.identity = identity or default_identity()
        self._default_identity = not identity  # "<host>:<pid>" follows a fork
        self._backend: Backend | None = backend
        self._timed: Any = None  # the backend with timed operations, while metrics are on
        #: The event loop of an asyncio store (None for a threading one).
        self._loop = shim.event_loop()
        # How to open the backend again (in a forked child).
        self._full_url = url
        self._kind = kind
        self._options = options
        self._pid = os.getpid()
        self._reopen_lock = threading.Lock()
        self._watch_interval: float | None = None
        self._hub = ChangeHub(self._set_watch_interval)
        self._scheduler: JobOnceScheduler | None = None
        self._lease_renewer: Renewer | None = None
        self._jobs: set[Job] = set()  # recurring jobs started on this store
        self._elections: set[Election] = set()  # elections campaigning on this store
        self._closing = False
        self._closed = False
        #: Whether blocked acquires queue up for a direct grant (``handoff="grant"``).
        self._grants = "grant" in backend.capabilities
        #: Places of blocked waiters in grant queues (each may hold a connection).
        self._grant_places = Places(
            cast(GrantHandoff, backend).max_blocked_waiters if self._grants else 0
        )
        backend.set_listener(self._hub)
        _OPEN_STORES.add(self)

    def __repr__(self) -> str:
        return f"<Store {self.url} namespace={self.namespace!r}>"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the store can no longer be used)."""
        return self._closed or self._closing

    async def close(self) -> None:
        """Stop everything built on this store, then close its connections; idempotent.

        Elections resign (waiting for ``on_revoked``), recurring jobs and the one-shot
        scheduler stop (waiting for running callbacks, except one that calls ``close()``
        itself), held mutex and semaphore leases are released in the store (their holders
        see them lost), and every later call through this store raises
        :class:`~clustersync.StoreUnavailableError`.
        """
        if self._closing or self._closed:
            return
        self._closing = True
        try:
            for election in list(self._elections):
                await election.stop()
            for job in list(self._jobs):
                await job.close()
            scheduler = self._scheduler
            if scheduler is not None and scheduler.started:
                await scheduler.stop()
            if self._lease_renewer is not None:
                await self._lease_renewer.close()
        finally:
            self._closed = True
            self._hub(ANY_CHANNEL)  # waiters recheck, and see the store closed
            _OPEN_STORES.discard(self)
            backend, self._backend = self._backend, None
            if backend is not None and self._pid == os.getpid():
                await backend.close()

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
        backend = self._backend
        if backend is None:
            backend = self._reopen()
        metrics = _metrics.ACTIVE
        if metrics is None:  # the default: no cost beyond this check
            return backend
        timed = self._timed
        if timed is None or timed._backend is not backend or timed._metrics is not metrics:
            timed = self._timed = metrics.instrument(backend)
        return cast(Backend, timed)

    @property
    def _grant_ops(self) -> GrantHandoff:
        """The operations of the ``"grant"`` capability (only when ``_grants``)."""
        return cast(GrantHandoff, self._ops)

    def _renewer(self) -> Renewer:
        """The worker that renews every lease held through this store."""
        renewer = self._lease_renewer
        if renewer is None:
            from .renewer import Renewer

            with self._reopen_lock:
                renewer = self._lease_renewer
                if renewer is None:
                    renewer = self._lease_renewer = Renewer(self)
        return renewer

    async def _call_bounded(self, seconds: float, operation: str, *args: Any) -> Any:
        """The store operation ``operation(*args)``, abandoned after ``seconds``: a call
        stuck on a connection that stopped answering (silently, e.g. behind a broken
        proxy) must not cost a lease or a claim while the store still answers on new
        connections. On timeout the backend drops its idle connections (they may be
        stuck too), so that a retry opens a new one; raises ``StoreUnavailableError``."""
        backend = self._ops
        try:
            return await shim.bounded(getattr(backend, operation), args, seconds)
        except TimeoutError as exc:
            drop = getattr(backend, "drop_idle_connections", None)
            if drop is not None:
                await drop()
            raise StoreUnavailableError(
                f"store {self.url} did not answer {operation} within {seconds:.2f}s;"
                " retrying on a new connection"
            ) from exc

    def _set_watch_interval(self, seconds: float | None) -> None:
        """What the hub asks of the backend (remembered for a backend opened later)."""
        self._watch_interval = seconds
        backend = self._backend
        if backend is not None:
            backend.set_watch_interval(seconds)

    # -- fork ----------------------------------------------------------------------------

    def _reopen(self) -> Backend:
        """The backend of a forked child, opened at its first use there."""
        if self._closed:
            raise StoreUnavailableError(f"store {self.url} is closed")
        with self._reopen_lock:
            backend = self._backend
            if backend is None:
                backend = shim.reopen_after_fork(
                    self._kind, self._full_url, self.namespace, dict(self._options)
                )
                backend.set_listener(self._hub)
                if self._watch_interval is not None:
                    backend.set_watch_interval(self._watch_interval)
                self._backend = backend
            return backend

    def _after_fork_in_child(self) -> None:
        """Runs in a forked child (one thread): drop what belongs to the parent's threads
        and connections, and restart what this store runs."""
        self._pid = os.getpid()
        if self._default_identity:
            self.identity = default_identity()
        self._reopen_lock = threading.Lock()
        self._hub = ChangeHub(self._set_watch_interval)
        self._lease_renewer = None  # the parent's holds stay the parent's
        backend = self._backend
        if backend is not None and not self._closed:
            keep = getattr(backend, "after_fork", None)
            if keep is not None and keep():
                backend.set_listener(self._hub)
            else:
                _ABANDONED.append(backend)
                self._backend = None
        if self._closed or shim.IS_ASYNC:
            return
        for job in list(self._jobs):
            job._after_fork()
        for election in list(self._elections):
            election._after_fork()
        if self._scheduler is not None:
            self._scheduler._after_fork()


def _after_fork_in_child() -> None:
    for store in list(_OPEN_STORES):
        store._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def require_store(store: object, what: str) -> Store:
    """``store`` if it is a store of this API; else a TypeError that says what to do
    (a store of the other API, a forgotten ``await``)."""
    if isinstance(store, Store):
        return store
    if inspect.iscoroutine(store):
        store.close()  # never awaited: silence the warning, the error says it all
        raise TypeError(
            f"{what} got a coroutine instead of a store: did you forget `await`?"
            " Use `store = await clustersync.aio.open_store(...)`"
        )
    module = type(store).__module__
    if type(store).__name__ == "Store" and module.startswith("clustersync."):
        if shim.IS_ASYNC:
            raise TypeError(
                f"{what} is the asyncio API and needs a store from"
                " `await clustersync.aio.open_store(...)`; this store comes from"
                " clustersync.open_store() (the threading API): use the threading API with"
                " it (clustersync.Mutex, clustersync.schedule, ...) or open the store with"
                " clustersync.aio.open_store()"
            )
        raise TypeError(
            f"{what} is the threading API and needs a store from clustersync.open_store();"
            " this store comes from clustersync.aio.open_store(): use the asyncio API with it"
            " (clustersync.aio.Mutex, clustersync.aio.schedule, ...) or open the store with"
            " clustersync.open_store()"
        )
    raise TypeError(f"store must be a Store from open_store(), not {type(store).__name__}")


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
    if identity is not None:
        validate_name(identity, "identity")
    kind = kind_for_url(resolved)
    options = _common_options(kind, options)
    backend = await _open_backend(kind, resolved, namespace, dict(options))
    return Store(
        backend, url=resolved, namespace=namespace, identity=identity, kind=kind, options=options
    )


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
                " waiters (handoff='grant' is a Redis store option, handoff='advisory' a"
                " PostgreSQL one)"
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
