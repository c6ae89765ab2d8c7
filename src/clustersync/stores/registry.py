"""The registry of store kinds: which URL schemes exist and how each is opened.

The built-in kinds (memory, SQLite, Redis, PostgreSQL) are declared next to their code
(``KIND`` in each store's module) and registered first. Other packages add kinds through
the entry-point group ``clustersync.stores``: each entry point names a
:class:`StoreKind` (or a function returning one), e.g. in a plugin's ``pyproject.toml``::

    [project.entry-points."clustersync.stores"]
    jsonfile = "my_package.store:KIND"

:func:`register_store` does the same at run time. Openers are given as
``"module:function"`` strings, so that a driver is imported only when its store is used
(and a missing one is reported with the extra to install).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal
from urllib.parse import urlsplit

from ..exceptions import ConfigurationError

__all__ = [
    "DEFAULT_URL",
    "ENTRY_POINT_GROUP",
    "URL_ENV_VAR",
    "StoreKind",
    "kind_for_url",
    "redact",
    "register_store",
    "resolve_url",
    "store_kinds",
]

logger = logging.getLogger("clustersync.stores")

DEFAULT_URL = "sqlite:///clustersync.db"
URL_ENV_VAR = "CLUSTERSYNC_URL"
ENTRY_POINT_GROUP = "clustersync.stores"

Reach = Literal["process", "host", "cluster"]


@dataclass(frozen=True)
class StoreKind:
    """A kind of store: its URL schemes, how to open it, and what it offers.

    ``backend`` and ``async_backend`` are ``"module:function"`` references:

    - ``backend(url, namespace, options) -> Backend`` (required) opens the store for the
      threading API: a :class:`clustersync.stores.Backend` with plain methods. It may
      block (it is called in a worker thread by the asyncio API).
    - ``async_backend(url, namespace, options) -> AsyncBackend`` (optional, a coroutine
      function) opens it with an asyncio driver. Without it, the asyncio API runs the
      plain backend's operations on a private worker thread.

    ``options`` is a dict of the keyword options given to ``open_store``; an opener pops
    those it knows and raises :class:`~clustersync.ConfigurationError` for the rest.
    """

    #: Short name, e.g. ``"redis"`` (also the name tests use for the kind).
    name: str
    #: URL schemes it serves, lower case, e.g. ``("redis", "rediss", "unix")``.
    schemes: tuple[str, ...]
    backend: str
    async_backend: str | None = None
    #: URL forms shown in errors and docs, e.g. ``("redis://[:password@]host:port/db",)``.
    url_forms: tuple[str, ...] = ()
    #: The ``pip install "clustersync[EXTRA]"`` extra that provides its driver, if any.
    extra: str | None = None
    #: Who can share it: the threads of one process, the processes of one host, a cluster.
    reach: Reach = "cluster"
    #: Whether its data outlives the process that opened it.
    durable: bool = True
    #: Whether it accepts ``clock=`` (a :class:`~clustersync.testing.ManualClock`) to
    #: judge time by; stores with a clock of their own (servers) refuse it.
    accepts_clock: bool = False
    #: Whether the plain backend's calls may block on I/O: the asyncio API then runs them
    #: on a private worker thread (else it calls them inline).
    blocking: bool = True
    #: Optional capabilities it can offer (names of
    #: :data:`clustersync.stores.contract.CAPABILITIES`); the backend reports those in
    #: use as opened.
    capabilities: frozenset[str] = field(default_factory=frozenset)

    def load(self, reference: str) -> Callable[..., Any]:
        """Import the opener ``"module:function"``; a missing driver is a
        ConfigurationError naming the extra to install."""
        module_name, _, attribute = reference.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if self.extra is None:
                raise ConfigurationError(f"the {self.name} store cannot be loaded: {exc}") from exc
            raise ConfigurationError(
                f"the {self.name} store needs a driver that is not installed ({exc.name}):"
                f' pip install "clustersync[{self.extra}]"'
            ) from exc
        opener: Callable[..., Any] = getattr(module, attribute)
        return opener


class _Registry:
    """Scheme -> kind, filled on first use with the built-in kinds and the plugins."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_scheme: dict[str, StoreKind] = {}
        self.loaded = False
        self.broken_plugins: list[str] = []

    def add(self, kind: StoreKind, *, keep_existing: bool = False) -> None:
        with self.lock:
            if keep_existing and any(s in self.by_scheme for s in kind.schemes):
                return  # a kind registered explicitly before keeps its schemes
            for scheme in kind.schemes:
                self.by_scheme[scheme.lower()] = kind

    def load(self) -> None:
        """Register the built-in kinds, then those that installed packages declare
        (once, on first use)."""
        with self.lock:
            if self.loaded:
                return
            self.loaded = True
        from . import memory, postgres, redis, sqlite

        for kind in (memory.KIND, sqlite.KIND, *redis.KINDS, postgres.KIND):
            self.add(kind, keep_existing=True)
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = entry.load()
                plugin = loaded if isinstance(loaded, StoreKind) else loaded()
                register_store(plugin)
            except Exception as exc:  # a broken plugin must not break the other stores
                logger.warning(
                    "store plugin %r (%s) could not be loaded: %s", entry.name, entry.value, exc
                )
                self.broken_plugins.append(f"{entry.name} ({exc})")

    def kinds(self) -> list[StoreKind]:
        self.load()
        with self.lock:
            return list(dict.fromkeys(self.by_scheme.values()))

    def get(self, scheme: str) -> StoreKind | None:
        self.load()
        with self.lock:
            return self.by_scheme.get(scheme.lower())


_REGISTRY = _Registry()


def register_store(kind: StoreKind) -> None:
    """Make ``kind``'s URL schemes openable by ``open_store`` (replacing any kind that
    served one of them)."""
    if not isinstance(kind, StoreKind):
        raise TypeError(f"register_store takes a StoreKind, not {type(kind).__name__}")
    if not kind.schemes:
        raise ValueError(f"store kind {kind.name!r} has no URL schemes")
    _REGISTRY.add(kind)


def store_kinds() -> list[StoreKind]:
    """Every registered kind: the built-in ones first, then those of plugins."""
    return _REGISTRY.kinds()


def resolve_url(url: str | None) -> str:
    """``url``, else ``$CLUSTERSYNC_URL``, else the embedded default."""
    if url is None:
        url = os.environ.get(URL_ENV_VAR) or DEFAULT_URL
    if not isinstance(url, str):
        raise ConfigurationError(f"store URL must be a str, not {type(url).__name__}")
    if "\x00" in url:
        raise ConfigurationError("store URL must not contain NUL characters")
    try:
        url.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: no driver can use them
        raise ConfigurationError(f"store URL must be valid unicode text: {exc.reason}") from None
    return url


def kind_for_url(url: str) -> StoreKind:
    """The kind serving ``url``'s scheme; ConfigurationError listing the supported ones."""
    scheme, sep, _ = url.partition("://")
    kind = _REGISTRY.get(scheme) if sep else None
    if kind is None:
        supported = [
            form for k in store_kinds() for form in (k.url_forms or (f"{k.schemes[0]}://…",))
        ]
        message = f"unsupported store URL {redact(url)!r}; supported: " + ", ".join(supported)
        if _REGISTRY.broken_plugins:
            message += "; store plugins that failed to load: " + ", ".join(_REGISTRY.broken_plugins)
        raise ConfigurationError(message)
    return kind


#: Query parameters that carry a secret (libpq's ``?password=…``, ``?sslpassword=…``).
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for logs and errors).

    The host part is kept as written, so a multi-host URL
    (``postgresql://u:***@h1:5432,h2:5432/db``) stays readable; a password given as a
    query parameter (``?password=…``) is hidden too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    # The netloc is split by hand: urlsplit's username/password/port properties parse a
    # single host:port and raise on "h1:5432,h2:5432".
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = parts.query
    if query:
        fields = query.split("&")
        for index, field_ in enumerate(fields):
            name, equals, _ = field_.partition("=")
            if equals and name.lower() in _SECRET_PARAMETERS:
                fields[index] = f"{name}=***"
        query = "&".join(fields)
    if netloc == parts.netloc and query == parts.query:
        return url
    # Rebuilt by hand: urlunsplit drops the "//" of an empty host part for schemes it
    # does not know ("postgresql:///db?password=…").
    rebuilt = f"{parts.scheme}://{netloc}{parts.path}"
    rebuilt += f"?{query}" if query else ""
    return rebuilt + (f"#{parts.fragment}" if parts.fragment else "")
