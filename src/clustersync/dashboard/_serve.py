"""``clustersync dashboard``: serve the dashboard of one store with uvicorn.

The store is opened with the asyncio API on uvicorn's event loop (so its calls need no
thread) and closed when the server stops. The socket is bound before anything else, so
that a port in use is a one-line error. Bound to loopback (the default), the server only
answers requests whose ``Host`` names loopback or the ``--host`` given: a hostile page
that rebinds its domain to 127.0.0.1 cannot read the dashboard (see Security in
:mod:`clustersync.dashboard`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from types import FrameType
from typing import Any, TextIO

from ..exceptions import ConfigurationError
from . import INSTALL_HINT, create_app

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The names a browser on this machine uses for loopback.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host of a ``Host`` header, without its port (``[::1]:8787`` -> ``[::1]``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if ":" in header else header


class HostGuard:
    """Answers 421 to requests whose ``Host`` is not one of ``allowed`` (DNS rebinding)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed:
                body = (
                    f"this dashboard answers requests for {', '.join(sorted(self.allowed))}"
                    f" only, not {host or 'a request without Host'} (DNS rebinding"
                    " protection)\n"
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 421,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``OSError`` if it cannot be): connections
    wait in its backlog until the server accepts them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    url: str,
    namespace: str,
    *,
    host: str,
    port: int,
    allow_actions: bool,
    out: TextIO,
) -> int:
    """Serve until interrupted; the exit status (130 after Ctrl-C)."""
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise ConfigurationError(
            f"the dashboard needs Starlette and uvicorn: {INSTALL_HINT}"
        ) from exc
    import asyncio

    from .. import aio

    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    class Server(uvicorn.Server):
        """uvicorn's server, minus re-raising the signal that stopped it (the command
        returns an exit status instead)."""

        interrupted = False

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if sig == signal.SIGINT:
                Server.interrupted = True
            super().handle_exit(sig, frame)

    async def run() -> None:
        store = await aio.open_store(url, namespace=namespace)
        try:
            app: ASGIApp = create_app(store, allow_actions=allow_actions)
            if is_loopback(host):
                app = HostGuard(app, LOOPBACK_NAMES | {host.lower(), shown_host.lower()})
            config = uvicorn.Config(
                app, log_level="warning", access_log=False, lifespan="off", server_header=False
            )
            mode = "actions enabled" if allow_actions else "read-only (--allow-actions to act)"
            out.write(
                f"clustersync dashboard on http://{shown_host}:{bound_port}/ for namespace"
                f" {namespace!r} of {store.url}, {mode}\n"
            )
            if not is_loopback(host):
                out.write(
                    f"warning: listening on {host}, not loopback: whoever reaches this port"
                    " sees the store" + (" and can change it" if allow_actions else "") + "\n"
                )
            out.flush()
            await Server(config).serve(sockets=[sock])
        finally:
            await store.close()

    try:
        asyncio.run(run())
    finally:
        sock.close()
    return 130 if Server.interrupted else 0
