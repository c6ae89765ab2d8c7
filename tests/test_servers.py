"""The private test servers of ``tests/servers.py``: start, connect, restart, crash,
authentication, clean-up, and the hint when a binary is missing."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests import servers
from tests.servers import (
    PostgresServer,
    RedisServer,
    ServerBinaryMissing,
    ServerStartError,
    free_port,
    start_or_skip,
)


def _assert_gone(server: servers.ManagedServer, pid: int, base: Path) -> None:
    """Closed: no process of its group left running, its directory removed."""
    assert not server.running
    assert not servers._group_alive(pid)
    assert not base.exists()


def test_redis_start_ping_restart_without_persistence() -> None:
    with start_or_skip(RedisServer()) as srv:
        assert srv.url == f"redis://127.0.0.1:{srv.port}/0"
        with redis.Redis.from_url(srv.url) as client:
            assert client.ping()
            client.set("k", "v")
        port = srv.port
        srv.stop()
        assert not srv.running
        srv.start()
        assert srv.port == port
        with redis.Redis.from_url(srv.url) as client:
            assert client.ping()
            assert client.get("k") is None  # no persistence: a restart loses the data
        pid, base = srv.pid, srv.base_dir
    assert pid is not None
    _assert_gone(srv, pid, base)


def test_redis_persistence_password_and_kill() -> None:
    with start_or_skip(RedisServer(persistence=True, requirepass="s3cret/pw")) as srv:
        assert srv.url == f"redis://:s3cret%2Fpw@127.0.0.1:{srv.port}/0"
        with redis.Redis.from_url(srv.url) as client:
            client.set("kept", "1")
        # No retries: redis-py retries connection errors (authentication ones included)
        # with a backoff of seconds by default.
        no_retry = Retry(NoBackoff(), retries=0)
        for password in ("wrong", None):
            with (
                redis.Redis(
                    host="127.0.0.1", port=srv.port, password=password, retry=no_retry
                ) as client,
                pytest.raises(redis.AuthenticationError),
            ):
                client.ping()

        srv.stop()
        srv.start()
        with redis.Redis.from_url(srv.url) as client:
            assert client.get("kept") == b"1"  # the append-only file survives a restart
            client.set("after-restart", "2")

        srv.kill()
        assert not srv.running
        srv.start()
        with redis.Redis.from_url(srv.url) as client:
            assert client.get("kept") == b"1"


def test_postgres_connect_restart_and_crash() -> None:
    with start_or_skip(PostgresServer()) as srv:
        assert srv.url == (
            f"postgresql://clustersync:{srv.password}@127.0.0.1:{srv.port}/clustersync_test"
        )
        with psycopg.connect(srv.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            conn.execute("CREATE TABLE t (v int)")
            conn.execute("INSERT INTO t VALUES (1)")
        with psycopg.connect(srv.admin_url) as conn:
            row = conn.execute("SELECT current_user, current_setting('fsync')").fetchone()
            assert row == ("postgres", "off")

        srv.stop()  # fast: checkpoint, so everything committed before is on disk
        srv.start()
        with psycopg.connect(srv.url) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]

        srv.stop("immediate")  # crash recovery at the next start
        srv.start()
        srv.kill()
        srv.start()
        with psycopg.connect(srv.url) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]
        pid, base = srv.pid, srv.base_dir
    assert pid is not None
    _assert_gone(srv, pid, base)


def test_postgres_rejects_a_wrong_password() -> None:
    with start_or_skip(PostgresServer(password="right")) as srv:
        wrong = srv.url.replace(":right@", ":wrong@")
        assert wrong != srv.url
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(wrong, connect_timeout=5).close()


def test_fixed_port_in_use_fails_clearly() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))  # bound, not listening: the server's bind fails
        srv = RedisServer(port=busy.getsockname()[1], startup_timeout=10)
        try:
            with pytest.raises(ServerStartError, match="in use"):
                start_or_skip(srv)
        finally:
            srv.close()
        assert not srv.running


def test_missing_binaries_name_the_install_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(servers, "POSTGRES_LIB_DIR", tmp_path)
    with pytest.raises(ServerBinaryMissing, match=re.escape(servers.INSTALL_SCRIPT)):
        servers.find_redis_server()
    with pytest.raises(ServerBinaryMissing, match=re.escape(servers.INSTALL_SCRIPT)):
        servers.find_postgres_bindir()

    monkeypatch.setenv("CI", "true")
    with pytest.raises(ServerBinaryMissing):  # CI: fail, never skip
        start_or_skip(PostgresServer())
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=re.escape(servers.INSTALL_SCRIPT)):
        start_or_skip(RedisServer())


def test_a_taken_free_port_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        ports = iter([busy.getsockname()[1]])
        monkeypatch.setattr(servers, "free_port", lambda: next(ports, None) or free_port())
        with start_or_skip(RedisServer()) as srv:
            assert srv.port != busy.getsockname()[1]
            with redis.Redis.from_url(srv.url) as client:
                assert client.ping()
