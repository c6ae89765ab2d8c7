"""Redis URL forms (docs/guide/stores.md) beyond redis://host:port/db (which the whole
suite uses)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

import clustersync as cs
from tests.servers import RedisServer, ServerStarter


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "redis.sock"


def test_unix_socket_url(private_server: ServerStarter, socket_path: Path) -> None:
    """unix:///path.sock reaches Redis through its Unix socket: locks and jobs work."""
    private_server(RedisServer(extra_args=["--unixsocket", str(socket_path)]))
    with cs.open_store(f"unix://{socket_path}", namespace="unix") as store:
        assert store.url == f"unix://{socket_path}"
        mutex = cs.Mutex(store, "over-a-socket")
        with mutex:
            first = mutex.token
            assert first is not None
        with mutex:
            assert mutex.token is not None
            assert mutex.token > first
        fired: list[str] = []
        scheduler = cs.get_job_once_scheduler(store)
        scheduler.set_callback(lambda key, props: fired.append(key))
        scheduler.start()
        scheduler.schedule_once("now", datetime.now(UTC))
        deadline = time.monotonic() + 5
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fired == ["now"]


def test_unix_socket_that_does_not_exist(socket_path: Path) -> None:
    """A missing socket file is an unreachable store, not a raw driver error."""
    with pytest.raises(cs.StoreUnavailableError) as info:
        cs.open_store(f"unix://{socket_path}")
    assert info.value.__cause__ is not None
