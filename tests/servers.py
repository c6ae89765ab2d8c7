"""Private Redis and PostgreSQL servers for the test suite.

Each server is a child process of the test run, listening on a free port on 127.0.0.1
only, with its data in a temporary directory; it never touches the system services or
their ports (6379, 5432). Stopping a server kills its whole process group if it does not
exit in time, and every server still running when the interpreter exits is killed
(``atexit``), so none is ever left behind.

Use them as context managers::

    with RedisServer() as redis_srv, PostgresServer() as pg_srv:
        redis_srv.url  # redis://127.0.0.1:PORT/0
        pg_srv.url  # postgresql://clustersync:PASSWORD@127.0.0.1:PORT/clustersync_test

or through the pytest fixtures at the end of this module, imported into a conftest::

    from tests.servers import postgres_server, private_server, redis_server  # noqa: F401

``redis_server`` and ``postgres_server`` are session-scoped and shared: tests must not
stop them (isolate with namespaces). A test that stops, restarts or kills a server takes a
private one: ``srv = private_server(RedisServer(persistence=True))`` (closed at its end).

The binaries are installed by ``scripts/install-servers.sh``. When one is missing,
starting raises :class:`ServerBinaryMissing` (a ``RuntimeError`` naming that script); the
fixtures then skip the test, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeVar
from urllib.parse import quote

import pytest

if TYPE_CHECKING:
    import psycopg

INSTALL_SCRIPT = "scripts/install-servers.sh"
LOOPBACK = "127.0.0.1"
#: Generous default for starting a server on a loaded 2-core machine.
STARTUP_TIMEOUT = 30.0
#: How long a graceful stop may take before the process group is killed.
STOP_TIMEOUT = 15.0
#: Where Debian installs the PostgreSQL server binaries (one ``VERSION/bin`` each).
POSTGRES_LIB_DIR = Path("/usr/lib/postgresql")
#: Searched for pgbouncer after PATH (Debian installs it in /usr/sbin).
SBIN_PATH = "/usr/local/sbin:/usr/sbin"

PostgresStopMode = Literal["smart", "fast", "immediate"]
_PG_STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}


class ServerBinaryMissing(RuntimeError):
    """A server binary is not installed (run ``scripts/install-servers.sh``)."""


class ServerStartError(RuntimeError):
    """A server did not start (the message ends with the tail of its log)."""


def in_ci() -> bool:
    """Whether this is a CI run (``CI=true``): servers that cannot start fail, never skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


#: Free ports are drawn from here, below the kernel's ephemeral range (see free_port).
SERVER_PORTS = range(20000, 32768)


def _ephemeral_ports() -> range:
    """The kernel's range of local ports for outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, outside the kernel's ephemeral
    range: no outgoing connection (of this or any process) takes it while its server is
    down for a restart on the same port. Falls back on a port the OS picks."""
    ephemeral = _ephemeral_ports()
    candidates = [port for port in SERVER_PORTS if port not in ephemeral]
    for _ in range(50 if candidates else 0):
        port = candidates[secrets.randbelow(len(candidates))]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def find_redis_server() -> str:
    """The ``redis-server`` binary on PATH."""
    found = shutil.which("redis-server")
    if found is None:
        raise ServerBinaryMissing(
            f"redis-server is not installed (not on PATH); run {INSTALL_SCRIPT} to install it"
        )
    return found


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_postgres_bindir() -> Path:
    """The directory holding ``initdb``, ``postgres`` and ``pg_ctl``: PATH first, then the
    highest version in ``/usr/lib/postgresql/*/bin`` (the same search as the install
    script)."""
    names = ("initdb", "postgres", "pg_ctl")
    on_path = [shutil.which(name) for name in names]
    if all(on_path):
        initdb = on_path[0]
        assert initdb is not None
        return Path(os.path.realpath(initdb)).parent
    candidates = sorted(POSTGRES_LIB_DIR.glob("*/bin"), key=_version_key, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in names):
            return bindir
    raise ServerBinaryMissing(
        "PostgreSQL server binaries (initdb, postgres, pg_ctl) are not installed (neither on "
        f"PATH nor in {POSTGRES_LIB_DIR}/*/bin); run {INSTALL_SCRIPT} to install them"
    )


def find_pgbouncer() -> str:
    """The ``pgbouncer`` binary: PATH first, then :data:`SBIN_PATH` (Debian installs it in
    ``/usr/sbin``, which is not on a normal user's PATH)."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path=SBIN_PATH)
    if found is None:
        raise ServerBinaryMissing(
            f"pgbouncer is not installed (not on PATH nor in {SBIN_PATH}); run "
            f"{INSTALL_SCRIPT} to install it"
        )
    return found


def unprivileged_account() -> tuple[int, int] | None:
    """(uid, gid) of ``postgres`` (else ``nobody``) when we are root, else None (ourselves):
    PostgreSQL and PgBouncer refuse to run as root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise ServerStartError("running as root and neither a postgres nor a nobody user exists")


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc; empty where there is none)."""
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 2 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` is running (a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def _kill_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGKILL every process of group ``pgid`` and wait until none is left running."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


_unclosed: set[ManagedServer] = set()


@atexit.register
def _close_all() -> None:
    for server in list(_unclosed):
        with contextlib.suppress(Exception):
            server.close()


class ManagedServer:
    """A server process in its own process group, with a private temporary directory.

    ``start()`` starts it (the first time: picks a free port unless one was given and
    prepares the directory), ``stop()`` stops it gracefully, ``kill()`` with SIGKILL, and
    ``start()`` starts it again on the same port and data; ``close()`` stops it and removes
    the directory. As a context manager: start on enter, close on exit.
    """

    kind = "server"

    def __init__(self, *, port: int | None = None, startup_timeout: float = STARTUP_TIMEOUT):
        self._fixed_port = port is not None
        self.port: int = port if port is not None else 0
        self.startup_timeout = startup_timeout
        self._base: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False
        #: Seconds the last ``start()`` took.
        self.startup_seconds = 0.0

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} 127.0.0.1:{self.port} {state}>"

    # -- public API -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def base_dir(self) -> Path:
        """The private temporary directory (data, log, socket)."""
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix=f"clustersync-{self.kind}-"))
            _unclosed.add(self)
        return self._base

    @property
    def log_path(self) -> Path:
        return self.base_dir / f"{self.kind}.log"

    def start(self) -> None:
        """Start the server and wait until it answers (``ServerStartError`` otherwise)."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        began = time.monotonic()
        self._check_binaries()
        attempts = 1 if self._fixed_port or self._prepared else 5
        for attempt in range(attempts):
            if not self._prepared:
                if not self._fixed_port:
                    self.port = free_port()
                self._prepare()
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                self._launch_and_wait()
            except ServerStartError:
                # Another process may have taken the free port in between: pick another.
                if attempt + 1 < attempts and "already in use" in self.log_tail(since=log_offset):
                    continue
                raise
            if not self._prepared:
                try:
                    self._bootstrap()
                except BaseException:
                    self.kill()
                    raise
                self._prepared = True
            break
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop gracefully (SIGTERM); kill the process group if it takes too long."""
        self._stop(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash); ``start()`` brings it back."""
        proc = self._proc
        if proc is None:
            return
        _kill_group(proc.pid)
        proc.wait()
        self._proc = None

    def close(self) -> None:
        """Stop (or kill) the server and remove its directory."""
        try:
            if self.running:
                try:
                    self._stop(signal.SIGTERM, raise_on_timeout=False)
                except Exception:
                    self.kill()
            self.kill()  # reaps, and kills any leftover child
        finally:
            if self._base is not None:
                shutil.rmtree(self._base, ignore_errors=True)
            _unclosed.discard(self)

    def log_tail(self, chars: int = 3000, since: int = 0) -> str:
        """The end of the server's log (from byte ``since`` on)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(since)
                return log.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        if not self.running:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- for subclasses ---------------------------------------------------------------

    def _check_binaries(self) -> None:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Create the data directory (before the first start, once the port is known)."""

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        """Whether the server answers (called until true or the deadline)."""
        raise NotImplementedError

    def _bootstrap(self) -> None:
        """One-time setup after the first successful start."""

    def _account(self) -> tuple[int, int] | None:
        """(uid, gid) to run the server processes as, or None for ourselves."""
        return None

    # -- machinery --------------------------------------------------------------------

    def _run(self, argv: Sequence[str], what: str) -> None:
        """Run a setup command to completion, output appended to the log."""
        account = self._account()
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            completed = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=self._env(),
                timeout=self.startup_timeout,
                check=False,
                user=account[0] if account else None,
                group=account[1] if account else None,
                extra_groups=[] if account else None,
            )
        if completed.returncode != 0:
            raise ServerStartError(
                f"{what} failed (exit {completed.returncode}); log {self.log_path}:\n"
                + self.log_tail()
            )

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _launch_and_wait(self) -> None:
        argv = self._argv()
        account = self._account()
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=self._env(),
                start_new_session=True,  # own process group: killed as a whole
                user=account[0] if account else None,
                group=account[1] if account else None,
                extra_groups=[] if account else None,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if not self.running:
                self.kill()
                raise ServerStartError(
                    f"{self.kind} exited while starting on port {self.port}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(
                    f"{self.kind} did not answer on port {self.port} within "
                    f"{self.startup_timeout:.0f} s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _stop(
        self, sig: signal.Signals, timeout: float = STOP_TIMEOUT, raise_on_timeout: bool = True
    ) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                if raise_on_timeout:
                    raise RuntimeError(
                        f"{self.kind} did not stop within {timeout:.0f} s after "
                        f"{sig.name}; killed it"
                    ) from None
                return
        _kill_group(proc.pid)  # any child left behind (e.g. a Redis rewrite child)
        self._proc = None


def _resp(*parts: str) -> bytes:
    """One command in the Redis protocol."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisServer(ManagedServer):
    """A private ``redis-server`` on 127.0.0.1.

    ``persistence=False`` (default): no RDB, no AOF, data is lost on restart.
    ``persistence=True``: append-only file with ``appendfsync everysec``: data survives
    ``stop()``/``start()``; after ``kill()`` the last second of writes may be lost.
    ``requirepass``: clients must authenticate (``url`` carries the password).
    """

    kind = "redis"

    def __init__(
        self,
        *,
        persistence: bool = False,
        requirepass: str | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.persistence = persistence
        self.password = requirepass
        self.extra_args = list(extra_args)
        self.binary = ""

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{LOOPBACK}:{self.port}/0"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def _check_binaries(self) -> None:
        self.binary = find_redis_server()

    def _prepare(self) -> None:
        self.data_dir.mkdir(exist_ok=True)

    def _argv(self) -> list[str]:
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--dir", str(self.data_dir),
            "--save", "",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        if self.persistence:
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            argv += ["--appendonly", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv + self.extra_args

    def _ready(self) -> bool:
        commands: list[tuple[str, ...]] = [("AUTH", self.password)] if self.password else []
        commands.append(("PING",))
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=2.0) as sock:
                sock.sendall(b"".join(_resp(*cmd) for cmd in commands))
                reply = b""
                while reply.count(b"\r\n") < len(commands):
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    reply += chunk
        except OSError:
            return False
        if b"-LOADING" in reply:
            return False
        if not reply.endswith(b"+PONG\r\n"):
            raise ServerStartError(f"unexpected reply of redis on port {self.port}: {reply!r}")
        return True


class PostgresServer(ManagedServer):
    """A private PostgreSQL cluster on 127.0.0.1 with database ``clustersync_test``.

    TCP connections need a password (scram-sha-256): ``url`` is the test user's (owner of
    the database), ``admin_url`` the superuser's. Local (socket) connections are trusted.

    Fast by default: ``fsync``, ``synchronous_commit`` and ``full_page_writes`` are off,
    so ``kill()`` or ``stop("immediate")`` may lose the commits of the last fraction of a
    second; ``fsync=True`` turns all three on (durable commits). ``settings`` adds
    ``-c name=value`` options (e.g. ``{"max_connections": "200"}``).
    """

    kind = "postgres"
    superuser = "postgres"

    def __init__(
        self,
        *,
        user: str = "clustersync",
        password: str | None = None,
        dbname: str = "clustersync_test",
        fsync: bool = False,
        settings: Mapping[str, str] | None = None,
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.user = user
        self.password = password or secrets.token_hex(12)
        self.superuser_password = secrets.token_hex(12)
        self.dbname = dbname
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.bindir = Path()

    @property
    def url(self) -> str:
        """The test user's URL (the owner of the test database)."""
        return self._url(self.user, self.password, self.dbname)

    @property
    def admin_url(self) -> str:
        """The superuser's URL (to terminate sessions, inspect locks, ...)."""
        return self._url(self.superuser, self.superuser_password, self.dbname)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    def kill(self) -> None:
        """SIGKILL the postmaster and every one of its children (a crash): each child of
        the postmaster calls ``setsid()``, so it is not in the postmaster's process group
        (left alone, the children notice the postmaster's death and exit on their own,
        a little later)."""
        proc = self._proc
        children: list[int] = []
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signal.SIGSTOP)  # forks no more children
            children = _children(proc.pid)
        super().kill()
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while any(_process_alive(child) for child in children) and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self, mode: PostgresStopMode = "fast") -> None:
        """Shut down: ``smart`` waits for clients to leave, ``fast`` disconnects them,
        ``immediate`` quits without a checkpoint (crash recovery at the next start)."""
        self._stop(_PG_STOP_SIGNALS[mode])

    def _url(self, user: str, password: str, dbname: str) -> str:
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{LOOPBACK}:{self.port}/{quote(dbname, safe='')}"
        )

    def _account(self) -> tuple[int, int] | None:
        """``postgres`` when we are root (initdb and postgres refuse to run as root), else
        None (ourselves)."""
        return unprivileged_account()

    def _check_binaries(self) -> None:
        self.bindir = find_postgres_bindir()

    def _prepare(self) -> None:
        if self.data_dir.exists():
            return
        base = self.base_dir
        account = self._account()
        pwfile = base / "superuser-password"
        pwfile.write_text(self.superuser_password + "\n")
        if account is not None:
            for path in (base, pwfile):
                os.chown(path, *account)
        base.chmod(0o700)
        self._run(
            [
                str(self.bindir / "initdb"),
                "--pgdata", str(self.data_dir),
                "--username", self.superuser,
                f"--pwfile={pwfile}",
                "--encoding", "UTF8",
                "--locale", "C",
                "--auth-local", "trust",
                "--auth-host", "scram-sha-256",
                "--no-sync",
            ],
            "initdb",
        )  # fmt: skip
        pwfile.unlink()

    def _argv(self) -> list[str]:
        durable = "on" if self.fsync else "off"
        options = {
            "listen_addresses": LOOPBACK,
            "fsync": durable,
            "synchronous_commit": durable,
            "full_page_writes": durable,
            **self.settings,
        }
        argv = [
            str(self.bindir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.socket_dir),
        ]  # fmt: skip
        for name, value in options.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def socket_connect(self, dbname: str = "postgres", timeout: int = 5) -> psycopg.Connection[Any]:
        """A superuser connection through the Unix socket (trusted, autocommit)."""
        import psycopg

        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=self.superuser,
            dbname=dbname,
            connect_timeout=timeout,
            autocommit=True,
        )

    def _ready(self) -> bool:
        import psycopg

        if not (self.socket_dir / f".s.PGSQL.{self.port}").exists():
            return False
        try:
            with self.socket_connect(timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _bootstrap(self) -> None:
        from psycopg import sql

        with self.socket_connect(timeout=10) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.dbname), sql.Identifier(self.user)
                )
            )


PgBouncerPoolMode = Literal["session", "transaction", "statement"]


def _pgbouncer_quote(value: str) -> str:
    """A value in double quotes for PgBouncer's auth_file (a quote is written twice)."""
    return '"' + value.replace('"', '""') + '"'


class PgBouncerServer(ManagedServer):
    """A private PgBouncer on 127.0.0.1 in front of ``postgres`` (a :class:`PostgresServer`,
    started before it), for the test database and user of that server.

    ``pool_mode`` is ``transaction`` by default: a client holds a server connection only
    for the duration of a transaction, so session state (``SET``, ``LISTEN``, advisory
    locks, server-side prepared statements) does not follow the client. PgBouncer 1.18
    (Debian bookworm) does not support protocol-level prepared statements in that mode:
    psycopg clients must disable them with ``prepare_threshold=None`` (else a statement
    name such as ``_pg3_0`` may run another client's statement on the server connection
    the transaction lands on). ``LISTEN`` subscribes the server connection, not the
    client: a notification arriving while that connection is idle in the pool is dropped
    (logged "got packet 'A' from server when not linked"), one arriving while another
    client's transaction holds it goes to that client.

    Clients authenticate with SCRAM-SHA-256 and the test user's password, kept in plain
    text in the ``auth_file``, which lets PgBouncer log in to PostgreSQL with SCRAM too.
    ``url`` is ``postgres.url`` with PgBouncer's port; ``admin_url`` the same user on the
    admin console (database ``pgbouncer``: ``SHOW POOLS``, ``SHOW SERVERS``; simple query
    protocol only, e.g. ``psycopg.ClientCursor``). ``settings`` adds or overrides lines of
    the ``[pgbouncer]`` section. Runs as ``postgres`` (or ``nobody``) when we are root, as
    :class:`PostgresServer` does: PgBouncer refuses to run as root.
    """

    kind = "pgbouncer"

    def __init__(
        self,
        postgres: PostgresServer,
        *,
        pool_mode: PgBouncerPoolMode = "transaction",
        pool_size: int = 5,
        settings: Mapping[str, str] | None = None,
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.postgres = postgres
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.settings = dict(settings or {})
        self.binary = ""

    @property
    def user(self) -> str:
        return self.postgres.user

    @property
    def password(self) -> str:
        return self.postgres.password

    @property
    def dbname(self) -> str:
        return self.postgres.dbname

    @property
    def url(self) -> str:
        """The test user's URL through PgBouncer (same user, password and database)."""
        return self._url(self.dbname)

    @property
    def admin_url(self) -> str:
        """The admin console (database ``pgbouncer``), as the test user."""
        return self._url("pgbouncer")

    @property
    def ini_path(self) -> Path:
        return self.base_dir / "pgbouncer.ini"

    @property
    def auth_file(self) -> Path:
        return self.base_dir / "userlist.txt"

    def _url(self, dbname: str) -> str:
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{LOOPBACK}:{self.port}/{quote(dbname, safe='')}"
        )

    def _account(self) -> tuple[int, int] | None:
        return unprivileged_account()

    def _check_binaries(self) -> None:
        self.binary = find_pgbouncer()

    def _prepare(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.dbname):
            raise ValueError(f"database name {self.dbname!r} is not a plain identifier")
        options = {
            "listen_addr": LOOPBACK,
            "listen_port": str(self.port),
            "unix_socket_dir": "",  # TCP only: nothing in /tmp
            "auth_type": "scram-sha-256",
            "auth_file": str(self.auth_file),
            "admin_users": self.user,
            "stats_users": self.user,
            "pool_mode": self.pool_mode,
            "default_pool_size": str(self.pool_size),
            "max_client_conn": "200",
            "ignore_startup_parameters": "extra_float_digits",
            "logfile": "",  # stderr: the log file of ManagedServer
            "pidfile": "",
            "server_login_retry": "1",
            **self.settings,
        }
        lines = [
            "[databases]",
            f"{self.dbname} = host={LOOPBACK} port={self.postgres.port} dbname={self.dbname}",
            "",
            "[pgbouncer]",
            *(f"{name} = {value}" for name, value in options.items()),
        ]
        self.ini_path.write_text("\n".join(lines) + "\n")
        self.auth_file.write_text(
            f"{_pgbouncer_quote(self.user)} {_pgbouncer_quote(self.password)}\n"
        )
        self.auth_file.chmod(0o600)
        account = self._account()
        if account is not None:
            for path in (self.base_dir, self.ini_path, self.auth_file):
                os.chown(path, *account)

    def _argv(self) -> list[str]:
        return [self.binary, str(self.ini_path)]

    def _ready(self) -> bool:
        """The admin console answers with our password: it is our PgBouncer listening (not
        another process that took the port), whether or not PostgreSQL is up."""
        import psycopg

        try:
            with psycopg.connect(
                self.admin_url,
                connect_timeout=2,
                autocommit=True,
                cursor_factory=psycopg.ClientCursor,
            ) as conn:
                conn.execute("SHOW VERSION")
        except psycopg.OperationalError:
            return False
        return True


# -- pytest fixtures ----------------------------------------------------------------------

S = TypeVar("S", bound=ManagedServer)


def start_or_skip(server: S) -> S:
    """Start ``server``; if its binary is missing, skip the test outside CI (with the
    install hint) and fail in CI. Any other start failure fails."""
    try:
        server.start()
    except ServerBinaryMissing as exc:
        server.close()
        if in_ci():
            raise
        pytest.skip(str(exc))
    except BaseException:
        server.close()
        raise
    return server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server shared by the whole session (no persistence, no password). Do not
    stop it: use ``private_server`` for that."""
    with start_or_skip(RedisServer()) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server shared by the whole session. Do not stop it: use
    ``private_server`` for that."""
    with start_or_skip(PostgresServer()) as server:
        yield server


class ServerStarter(Protocol):
    """The ``private_server`` fixture: starts the server given, returns it."""

    def __call__(self, server: S, /) -> S: ...


@pytest.fixture
def private_server() -> Iterator[ServerStarter]:
    """Start servers private to one test, closed when it ends::

    srv = private_server(RedisServer(persistence=True))
    srv.stop(); srv.start()
    """
    started: list[ManagedServer] = []

    def start(server: S, /) -> S:
        started.append(server)
        return start_or_skip(server)

    yield start
    for server in reversed(started):
        server.close()
