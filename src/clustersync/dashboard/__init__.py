"""The operator's dashboard: a web UI over one store and namespace.

``clustersync dashboard`` serves it; :func:`create_app` returns it as an ASGI application
to mount in a Starlette, FastAPI or Django (ASGI) service. Needs the ``dashboard`` extra
(``pip install "clustersync[dashboard]"``: Starlette and uvicorn); importing
``clustersync`` never imports it.

Pages: an overview (counts of held locks, recurring jobs — paused, failing —, pending and
failed one-shot jobs, the recent runs of both kinds of job with their outcome, lateness
and instance, what needs attention, the store's round trip and clock), locks (mutexes,
election leaders, running recurring jobs), recurring jobs, one-shot jobs (search by key
prefix, pages in key order from an index: a page costs the same at a million pending
jobs) and failed jobs (error, attempts, props). Every page refreshes its content every
``poll_interval`` seconds without a reload (short polling of an HTML fragment; paused
while the tab is hidden). ``/healthz`` answers ``ok`` when the store answers, and
``/metrics`` serves the Prometheus registry that ``clustersync.enable_metrics()`` records
into (see ``metrics_registry``).

**Security**

- **Read-only by default.** Actions (pause, resume and trigger a recurring job, cancel a
  one-shot job, retry or cancel a failed one, break a mutex) exist only with
  ``allow_actions=True`` (``--allow-actions``): otherwise the buttons are not rendered and
  ``POST /actions/...`` answers 403 with a message saying how to enable them. Every
  action, and every refused one, is logged on the logger ``clustersync.dashboard`` with
  the client's address and what was done.
- **No authentication of its own.** The command binds to loopback (``127.0.0.1``) by
  default; mounted in a service, put it behind the service's own authentication.
- **Cross-site request forgery.** The dashboard has no session or cookie of its own, so
  its protection must not rely on one: an action is a ``POST`` with a JSON body *and* the
  header ``X-Clustersync-Action: 1``, which the page's script sends. A page of another
  origin cannot send either a custom header or a JSON content type without a CORS
  preflight, and the dashboard never answers preflights (no CORS headers), so the
  browser refuses to send the action: a hostile page can neither submit a form nor
  ``fetch()`` one. As defence in depth, a browser's ``Sec-Fetch-Site`` must be
  ``same-origin`` and an ``Origin`` must name the request's own host (``Host`` or
  ``X-Forwarded-Host``). A same-site cookie or a token in the page would add state and
  protect nothing more for a same-origin tool; the header check works the same mounted in
  any application, behind any authentication. Pages forbid framing (``frame-ancestors
  'none'``, ``X-Frame-Options: DENY``), so the buttons cannot be clickjacked.
- **DNS rebinding.** The standalone server (``clustersync dashboard``) bound to loopback
  answers only requests whose ``Host`` names loopback (``localhost``, ``127.0.0.1``,
  ``[::1]``) or the ``--host`` given, so a page on a hostile domain that rebinds its name to
  127.0.0.1 cannot read it. Mounted in a service, that service's host checks apply (e.g.
  Starlette's ``TrustedHostMiddleware``, Django's ``ALLOWED_HOSTS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from .._async.store import Store as AsyncStore
    from .._sync.store import Store as SyncStore

__all__ = ["create_app"]

#: How to install what the dashboard needs.
INSTALL_HINT = 'pip install "clustersync[dashboard]"'


def create_app(
    store: AsyncStore | SyncStore,
    *,
    allow_actions: bool = False,
    metrics_registry: Any = None,
    poll_interval: float = 2.0,
) -> Starlette:
    """The dashboard of ``store`` (its namespace) as an ASGI application.

    - ``store`` — from ``await clustersync.aio.open_store(...)``, opened on the event loop
      that serves the application (e.g. in a FastAPI lifespan), or from
      ``clustersync.open_store(...)`` (the threading API, e.g. a Django service's): its
      calls then run in worker threads. The application never closes the store.
    - ``allow_actions`` — show the action buttons and accept ``POST /actions/...``
      (see Security in :mod:`clustersync.dashboard`). Default: read-only.
    - ``metrics_registry`` — the ``prometheus_client`` registry ``/metrics`` serves.
      Default: in multi-process mode (``PROMETHEUS_MULTIPROC_DIR`` set) the samples of
      every process, aggregated; otherwise the registry ``clustersync.enable_metrics()``
      records into (``prometheus_client.REGISTRY`` when it was called without one), or
      ``prometheus_client.REGISTRY`` when it was not called. ``/metrics`` answers 404
      with a hint when ``prometheus_client`` is not installed.
    - ``poll_interval`` — seconds between two refreshes of an open page.

    Mount it under a path of your application, e.g. with Starlette or FastAPI
    ``app.mount("/ops", create_app(store))``; links follow the mount path.

    Raises :class:`~clustersync.ConfigurationError` when Starlette is not installed
    (``pip install "clustersync[dashboard]"``), ``TypeError`` for anything but a store.
    """
    try:
        from ._app import build_app
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "starlette":
            raise ConfigurationError(f"the dashboard needs Starlette: {INSTALL_HINT}") from exc
        raise
    if not isinstance(allow_actions, bool):
        raise TypeError("allow_actions must be a bool")
    if not isinstance(poll_interval, int | float) or not 0.25 <= poll_interval <= 3600:
        raise ValueError("poll_interval must be a number of seconds between 0.25 and 3600")
    return build_app(
        store,
        allow_actions=allow_actions,
        metrics_registry=metrics_registry,
        poll_interval=float(poll_interval),
    )
