"""The dashboard as a Starlette application (see :func:`clustersync.dashboard.create_app`
for what it serves and how actions are protected)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .. import _metrics
from .._core.validation import validate_name
from ..exceptions import ClusterSyncError
from ._layout import ASSETS, asset, error_banner, render
from ._pages import (
    Page,
    View,
    failed_page,
    jobs_page,
    locks_page,
    overview,
    page_size,
    recurring_page,
)
from ._source import Source

logger = logging.getLogger("clustersync.dashboard")

#: The header the page's script sends with every action (see create_app).
ACTION_HEADER = "X-Clustersync-Action"
#: The header asking for the live region only (the page's refresh).
FRAGMENT_HEADER = "X-Clustersync-Fragment"
#: How long /healthz waits for the store.
HEALTH_TIMEOUT = 5.0

#: Security headers of every page: no framing (the buttons cannot be clickjacked), no
#: script, style or connection but the dashboard's own.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Vary": FRAGMENT_HEADER,
}

#: Store errors a page shows in a banner (and /healthz as 503) rather than raise.
STORE_ERRORS = (ClusterSyncError, OSError, TimeoutError)


class ActionError(Exception):
    """An action that cannot be done: answered with ``status`` and the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def build_app(
    store: Any,
    *,
    allow_actions: bool,
    metrics_registry: Any,
    poll_interval: float,
) -> Starlette:
    source = Source(store)
    poll_ms = max(250, round(poll_interval * 1000))

    def view_of(request: Request) -> View:
        base = str(request.scope.get("root_path", "")).rstrip("/")
        return View(source, base, allow_actions)

    def page_endpoint(
        build: Callable[[View, Request], Awaitable[Page]], path: str, title: str
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            view = view_of(request)
            status = 200
            try:
                page = await build(view, request)
            except STORE_ERRORS as exc:
                status = 503
                page = Page(path, title, "", error_banner(str(exc) or type(exc).__name__))
            headers = dict(PAGE_HEADERS)
            if request.headers.get(FRAGMENT_HEADER) == "1":
                headers["X-Clustersync-Now"] = f"{view.now:.3f}"
                return HTMLResponse(page.live, status, headers=headers)
            return HTMLResponse(render(view, page, poll_ms=poll_ms), status, headers=headers)

        return endpoint

    async def build_overview(view: View, request: Request) -> Page:
        return await overview(view)

    async def build_locks(view: View, request: Request) -> Page:
        return await locks_page(view)

    async def build_recurring(view: View, request: Request) -> Page:
        return await recurring_page(view)

    async def build_jobs(view: View, request: Request) -> Page:
        prefix = request.query_params.get("prefix", "")
        after = request.query_params.get("after") or None
        limit = page_size(request.query_params.get("limit"))
        return await jobs_page(view, prefix, after, limit)

    async def build_failed(view: View, request: Request) -> Page:
        return await failed_page(view)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return PlainTextResponse("not found", 404)
        found = asset(name)
        cache = (
            "public, max-age=31536000, immutable" if request.query_params.get("v") else "no-cache"
        )
        return Response(
            found.body,
            media_type=found.media_type,
            headers={"Cache-Control": cache, "ETag": f'"{found.version}"'},
        )

    async def healthz(request: Request) -> Response:
        try:
            await asyncio.wait_for(source.now_us(), HEALTH_TIMEOUT)
        except STORE_ERRORS as exc:
            return PlainTextResponse(f"store unavailable: {exc or type(exc).__name__}\n", 503)
        return PlainTextResponse("ok\n")

    async def metrics(request: Request) -> Response:
        try:
            import prometheus_client
        except ImportError:
            return PlainTextResponse(
                "no metrics: prometheus_client is not installed. Install it"
                ' (pip install "clustersync[prometheus]") and call'
                " clustersync.enable_metrics() in the service.\n",
                404,
            )
        registry = scraped_registry(metrics_registry, prometheus_client)
        # Collectors may read the store or take locks: keep them off the event loop.
        body = await asyncio.to_thread(prometheus_client.generate_latest, registry)
        return Response(body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    async def action(request: Request) -> Response:
        name = request.path_params["action"]
        client = client_of(request)
        if not allow_actions:
            logger.warning(
                "dashboard: refused %s from %s: actions are disabled",
                name,
                client,
                extra={"event": "dashboard.refused", "action": name, "client": client},
            )
            return JSONResponse(
                {
                    "ok": False,
                    "error": "actions are disabled: this dashboard is read-only. Start it with"
                    " `clustersync dashboard --allow-actions` (or create_app(store,"
                    " allow_actions=True)) to pause, resume, trigger, cancel, retry or"
                    " break from here.",
                },
                403,
            )
        refusal = csrf_refusal(request)
        if refusal is not None:
            logger.warning(
                "dashboard: refused %s from %s: %s",
                name,
                client,
                refusal,
                extra={"event": "dashboard.refused", "action": name, "client": client},
            )
            return JSONResponse({"ok": False, "error": refusal}, 403)
        key: str | None = None
        try:
            key = await key_of(request)
            message = await perform(source, name, key)
        except ActionError as exc:
            logger.warning(
                "dashboard: %s %r by %s failed: %s",
                name,
                key,
                client,
                exc,
                extra=log_fields(name, key, client),
            )
            return JSONResponse({"ok": False, "error": str(exc)}, exc.status)
        logger.info(
            "dashboard: %s %r by %s: %s",
            name,
            key,
            client,
            message,
            extra=log_fields(name, key, client),
        )
        return JSONResponse({"ok": True, "message": message})

    routes = [
        Route("/", page_endpoint(build_overview, "/", "Overview")),
        Route("/locks", page_endpoint(build_locks, "/locks", "Locks")),
        Route("/recurring", page_endpoint(build_recurring, "/recurring", "Recurring jobs")),
        Route("/jobs", page_endpoint(build_jobs, "/jobs", "One-shot jobs")),
        Route("/failed", page_endpoint(build_failed, "/failed", "Failed jobs")),
        Route("/static/{name}", static),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/actions/{action}", action, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def scraped_registry(given: Any, prometheus_client: ModuleType) -> Any:
    """The registry ``/metrics`` serves: ``given`` (``create_app(metrics_registry=...)``);
    else, in ``prometheus_client``'s multi-process mode (``PROMETHEUS_MULTIPROC_DIR``), a
    fresh one aggregating every process's samples; else the registry that
    ``clustersync.enable_metrics()`` records into; else the default registry."""
    if given is not None:
        return given
    if _metrics.multiprocess_mode():
        from prometheus_client import multiprocess

        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    active = _metrics.ACTIVE
    if active is not None:
        return active.registry
    return prometheus_client.REGISTRY


def log_fields(action: str, key: str | None, client: str) -> dict[str, Any]:
    """The ``extra`` fields of an action's log record (for structured logging)."""
    return {
        "event": "dashboard.action",
        "action": action,
        "lock" if action == "break-lock" else "job": key,
        "client": client,
    }


def client_of(request: Request) -> str:
    """``"127.0.0.1:51234"``: who sent the request (the peer of the connection)."""
    client = request.client
    return f"{client.host}:{client.port}" if client is not None else "an unknown client"


def csrf_refusal(request: Request) -> str | None:
    """Why an action request may not come from the dashboard's own page, or None."""
    if request.headers.get(ACTION_HEADER) != "1":
        return (
            f"missing header {ACTION_HEADER}: 1 (the dashboard's page sends it; a cross-site"
            " form or script cannot)"
        )
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return "actions take a JSON body (Content-Type: application/json)"
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is not None:
        hosts = {request.headers.get("host", "").lower()}
        forwarded = request.headers.get("x-forwarded-host")
        if forwarded:
            hosts.add(forwarded.split(",")[0].strip().lower())
        if origin == "null" or urlsplit(origin).netloc.lower() not in hosts:
            return f"cross-origin request refused (Origin: {origin})"
    return None


async def key_of(request: Request) -> str:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ActionError(400, "the body is not valid JSON") from None
    key = body.get("key") if isinstance(body, dict) else None
    try:
        return validate_name(key, "key")
    except (TypeError, ValueError) as exc:
        raise ActionError(400, f'the body needs {{"key": "..."}}: {exc}') from None


async def perform(source: Source, action: str, key: str) -> str:
    """Do ``action`` on ``key``; the message to show, or :class:`ActionError`."""
    source.changed()
    try:
        if action == "break-lock":
            if not await source.break_lock(key):
                raise ActionError(404, f"mutex {key!r} is not held")
            return (
                f"Broke mutex {key!r}: the next holder gets a higher fencing token; the old"
                " holder learns it at its next renewal."
            )
        if action in ("pause", "resume", "trigger"):
            try:
                await source.control_recurring_job(action, key)
            except KeyError:
                raise ActionError(404, f"no recurring job {key!r} was ever scheduled") from None
            return {
                "pause": f"Paused recurring job {key!r} on every instance.",
                "resume": f"Resumed recurring job {key!r} on every instance.",
                "trigger": f"Triggered recurring job {key!r}: it runs once more, on one instance.",
            }[action]
        if action == "cancel-job":
            if not await source.cancel_job(key):
                raise ActionError(
                    404, f"no pending one-shot job {key!r} (it may have fired or been cancelled)"
                )
            return f"Cancelled one-shot job {key!r}."
        if action == "cancel-failed":
            if not await source.cancel_failed(key):
                raise ActionError(
                    404, f"no failed one-shot job {key!r} (it may have been retried or removed)"
                )
            return f"Removed failed job {key!r}: it will never run."
        if action == "retry-failed":
            try:
                await source.retry_failed(key)
            except KeyError:
                raise ActionError(
                    404, f"no failed one-shot job {key!r} (it may have been retried or removed)"
                ) from None
            return f"Scheduled failed job {key!r} again, to run now with fresh attempts."
    except STORE_ERRORS as exc:
        raise ActionError(503, f"the store did not answer: {exc}") from None
    raise ActionError(404, f"unknown action {action!r}")
