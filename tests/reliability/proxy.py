"""A loopback TCP proxy that a test controls at run time: the network faults of the
reliability suite.

It listens on 127.0.0.1 (a free port) and forwards every connection to one upstream
server (Redis, PostgreSQL), byte for byte, from an asyncio event loop in a background
thread. While the test runs it can:

- add latency per direction (``set_latency(up=0.02, down=0.02)``; ``up`` is client to
  server), optionally with jitter; the order of bytes is always kept;
- drop every current connection (``drop_connections()``: a TCP reset by default, or a
  clean close with ``reset=False``); new connections are accepted as before;
- black-hole the connections open now while new ones work (``freeze_connections()``);
- black-hole traffic (``partition()`` ... ``heal()``, or ``with proxy.partitioned():``):
  connections stay open and new ones are accepted, but nothing is forwarded in the
  chosen direction(s). On ``heal()`` the held bytes are delivered, as TCP would once the
  network is back, unless ``heal(drop=True)`` resets the connections instead.

Since the proxy's own kernel acknowledges everything a client sends, a partition looks to
the client like a server that stopped answering: TCP keepalives and ``tcp_user_timeout``
do not notice it, only application-level timeouts do.

    with TcpProxy(redis_server.port) as proxy:
        url = proxy.url(redis_server.url)  # the same URL, pointing at the proxy
        proxy.set_latency(up=0.02, down=0.02)
        proxy.drop_connections()
        with proxy.partitioned():
            time.sleep(3)

``stats`` counts what was done (connections accepted and dropped, bytes forwarded,
partitions) so that tests can report the faults they injected and check that traffic
really went through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Direction", "ProxyStats", "TcpProxy"]

LOOPBACK = "127.0.0.1"
#: ``up``: client to server; ``down``: server to client.
Direction = Literal["up", "down", "both"]
_DIRECTIONS: dict[str, tuple[str, ...]] = {
    "up": ("up",),
    "down": ("down",),
    "both": ("up", "down"),
}
#: How long a control call waits for the proxy's loop to carry it out.
_CONTROL_TIMEOUT = 10.0
_CHUNK = 65536

T = TypeVar("T")


@dataclass
class ProxyStats:
    """What went through the proxy and what was done to it (updated by its loop)."""

    accepted: int = 0
    #: Connections the proxy closed on purpose (``drop_connections``, ``heal(drop=True)``).
    dropped: int = 0
    drop_calls: int = 0
    partitions: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    #: Upstream connection attempts that failed (the server was down).
    upstream_failures: int = 0


class _Link:
    """One client connection and its upstream connection, with their pump tasks."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False
        #: Cleared by ``freeze_connections``: this connection forwards nothing any more.
        self.flowing = asyncio.Event()
        self.flowing.set()

    def abort(self, reset: bool) -> None:
        """Close both sides at once (a TCP reset if ``reset``), stop the pumps."""
        if self.closed:
            return
        self.closed = True
        for writer in (self.client, self.server):
            if writer is None:
                continue
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                writer.transport.abort()
            else:
                writer.close()
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()


class TcpProxy:
    """Forwards connections on ``127.0.0.1:port`` to ``upstream_host:upstream_port``."""

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = LOOPBACK,
        *,
        port: int = 0,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._requested_port = port
        self.port = 0
        self.stats = ProxyStats()
        self._latency = {"up": 0.0, "down": 0.0}
        self._jitter = {"up": 0.0, "down": 0.0}
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        # Set while traffic flows in that direction; cleared by partition().
        self._open: dict[str, asyncio.Event] = {}
        self._blocked: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"<TcpProxy 127.0.0.1:{self.port} -> {self.upstream[0]}:{self.upstream[1]}"
            f" latency={self._latency} blocked={sorted(self._blocked)}>"
        )

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start listening (returns once the port is bound)."""
        if self._thread is not None:
            raise RuntimeError(f"{self!r} is already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"tcp-proxy-{id(self):x}", daemon=True)
        self._thread.start()
        if not ready.wait(_CONTROL_TIMEOUT) or failure:
            self._thread.join(_CONTROL_TIMEOUT)
            self._thread = None
            raise RuntimeError(f"the proxy did not start: {failure[:1]}")

    async def _listen(self) -> None:
        self._open = {direction: asyncio.Event() for direction in ("up", "down")}
        for event in self._open.values():
            event.set()
        self._server = await asyncio.start_server(
            self._handle, LOOPBACK, self._requested_port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stop listening, reset every connection and stop the loop; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(RuntimeError, TimeoutError):
                self._call(self._shutdown)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CONTROL_TIMEOUT)
        self._thread = None
        self._loop = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort(reset=True)
        tasks = [task for link in self._links for task in link.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=_CONTROL_TIMEOUT)
        if self._server is not None:
            await self._server.wait_closed()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=_CONTROL_TIMEOUT)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- addresses -----------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    def url(self, server_url: str) -> str:
        """``server_url`` (``redis://…``, ``postgresql://…``) with its host and port
        replaced by the proxy's, credentials, database and query kept."""
        parts = urlsplit(server_url)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@" if userinfo else ""
        netloc += f"{LOOPBACK}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # -- faults ---------------------------------------------------------------------------

    def set_latency(
        self,
        up: float = 0.0,
        down: float = 0.0,
        *,
        jitter: float = 0.0,
    ) -> None:
        """Delay every chunk by ``up`` (client to server) or ``down`` seconds, plus a
        uniformly random extra of up to ``jitter``; order is kept. Zero turns it off."""
        if min(up, down, jitter) < 0:
            raise ValueError("latency and jitter must be >= 0")
        self._latency = {"up": up, "down": down}
        self._jitter = {"up": jitter, "down": jitter}

    def drop_connections(self, *, reset: bool = True) -> int:
        """Close every current connection on both sides (a TCP reset unless
        ``reset=False``); returns how many. New connections are accepted as before."""
        return self._call(self._drop, reset)

    async def _drop(self, reset: bool) -> int:
        links = [link for link in self._links if not link.closed]
        for link in links:
            link.abort(reset)
        self.stats.dropped += len(links)
        self.stats.drop_calls += 1
        return len(links)

    def freeze_connections(self) -> int:
        """Black-hole the connections open now, for good, while new connections work
        normally: what a broken middlebox, NAT or failover does to long-lived
        connections. Their clients see a server that stopped answering. Returns how
        many were frozen."""
        return self._call(self._freeze)

    async def _freeze(self) -> int:
        links = [link for link in self._links if not link.closed]
        for link in links:
            link.flowing.clear()
        return len(links)

    def partition(self, direction: Direction = "both") -> None:
        """Black-hole traffic in ``direction`` until :meth:`heal`: connections are kept
        (and new ones accepted) but no byte is forwarded."""
        self._call(self._set_blocked, _DIRECTIONS[direction], True)

    def heal(self, *, drop: bool = False) -> int:
        """End the partition: held bytes are delivered, or with ``drop=True`` every
        connection is reset instead (returns how many were dropped)."""
        dropped = self._call(self._drop, True) if drop else 0
        self._call(self._set_blocked, ("up", "down"), False)
        return dropped

    @property
    def is_partitioned(self) -> bool:
        return bool(self._blocked)

    @contextlib.contextmanager
    def partitioned(self, direction: Direction = "both", *, drop: bool = False) -> Iterator[None]:
        """Black-hole traffic for the ``with`` block, then heal (see :meth:`heal`)."""
        self.partition(direction)
        try:
            yield
        finally:
            self.heal(drop=drop)

    async def _set_blocked(self, directions: tuple[str, ...], blocked: bool) -> None:
        was_partitioned = bool(self._blocked)
        for direction in directions:
            if blocked:
                self._blocked.add(direction)
                self._open[direction].clear()
            else:
                self._blocked.discard(direction)
                self._open[direction].set()
        if blocked and not was_partitioned:
            self.stats.partitions += 1

    # -- forwarding ----------------------------------------------------------------------

    def _call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        loop = self._loop
        if loop is None or self._thread is None:
            raise RuntimeError(f"{self!r} is not running")
        future = asyncio.run_coroutine_threadsafe(fn(*args), loop)
        return future.result(_CONTROL_TIMEOUT)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        self._links.add(link)
        self.stats.accepted += 1
        try:
            # A partition also holds new connections: the client's connect succeeds (the
            # proxy's kernel accepts it) but the server hears of it only after the heal.
            await self._open["up"].wait()
            if link.closed:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                self.stats.upstream_failures += 1
                link.abort(reset=True)
                return
            if link.closed:  # dropped while connecting
                up_writer.transport.abort()
                return
            link.server = up_writer
            link.tasks = [
                asyncio.create_task(self._pump(link, reader, up_writer, "up")),
                asyncio.create_task(self._pump(link, up_reader, writer, "down")),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            link.abort(reset=False)
            self._links.discard(link)

    async def _pump(
        self,
        link: _Link,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        direction: str,
    ) -> None:
        """Forward ``src`` to ``dst``: a reader queues chunks with their delivery time, a
        writer delivers them in order once due and while the direction is open."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                while True:
                    data = await src.read(_CHUNK)
                    if not data:
                        break
                    delay = self._latency[direction]
                    jitter = self._jitter[direction]
                    if jitter:
                        delay += self._rng.uniform(0.0, jitter)
                    queue.put_nowait((loop.time() + delay, data))
            except (OSError, asyncio.IncompleteReadError):
                pass
            queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                due, data = item
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._open[direction].wait()
                await link.flowing.wait()
                dst.write(data)
                await dst.drain()
                if direction == "up":
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
        except OSError:
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            # One side ended: end the other too (like a TCP peer that went away).
            link.abort(reset=False)
