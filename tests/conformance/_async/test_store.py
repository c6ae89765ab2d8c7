"""Stores and the error tree (docs/guarantees.md): opening, URLs, options, namespaces,
lifecycle and the errors raised on purpose."""

from __future__ import annotations

import importlib
import os
import socket
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clustersync import aio as cs
from clustersync import exceptions
from clustersync._concurrency import aio as shim
from tests.conformance._async.conftest import eventually

SCHEME_HINTS = ("memory://", "sqlite:///", "redis://", "postgresql://")


def unique_memory_url(prefix: str = "store") -> str:
    return f"memory://{prefix}-{uuid.uuid4().hex}"


def entries(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# -- URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["foo://bar", "http://example.com/db", "mysql://u@h/db", "just-a-path.db", ""]
)
async def test_unknown_scheme_lists_the_supported_ones(url: str) -> None:
    with pytest.raises(cs.ConfigurationError) as excinfo:
        await cs.open_store(url)
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    for hint in SCHEME_HINTS:
        assert hint in message


async def test_url_must_be_a_string() -> None:
    with pytest.raises(cs.ConfigurationError):
        await cs.open_store(123)  # type: ignore[arg-type]


async def test_unknown_scheme_error_does_not_leak_the_password() -> None:
    with pytest.raises(cs.ConfigurationError) as excinfo:
        await cs.open_store("foo://user:s3cret-pw@host:1234/db")
    assert "s3cret-pw" not in str(excinfo.value)
    assert "***" in str(excinfo.value)


@pytest.mark.parametrize(
    "url",
    ["sqlite://relative.db", "sqlite:///", "sqlite:///:memory:", "sqlite:///some/dir/"],
    ids=["two-slashes", "no-path", "in-memory", "directory"],
)
async def test_malformed_sqlite_urls(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(cs.ConfigurationError) as excinfo:
        await cs.open_store(url)
    assert "sqlite" in str(excinfo.value).lower()
    assert entries(tmp_path) == []  # nothing created


async def test_sqlite_file_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(cs.StoreUnavailableError) as excinfo:
        await cs.open_store(f"sqlite:///{missing / 'cluster.db'}")
    error = excinfo.value
    assert isinstance(error, ConnectionError)
    assert isinstance(error, cs.ClusterSyncError)
    assert error.__cause__ is not None or (
        str(missing) in str(error) and "does not exist" in str(error)
    )
    assert not missing.exists()


async def test_sqlite_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database file" * 100)
    with pytest.raises(cs.StoreUnavailableError) as excinfo:
        await cs.open_store(f"sqlite:///{garbage}")
    assert isinstance(excinfo.value.__cause__, sqlite3.Error)  # the driver error, wrapped


async def test_sqlite_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    async with await cs.open_store("sqlite:///sub/relative.db") as relative:
        assert relative.url == "sqlite:///sub/relative.db"
    assert (tmp_path / "sub" / "relative.db").is_file()

    absolute = tmp_path / "absolute.db"
    url = f"sqlite:///{absolute}"
    assert url.startswith("sqlite:////")
    async with await cs.open_store(url):
        pass
    assert absolute.is_file()


async def test_url_defaults_to_env_var_then_embedded_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    memory_url = unique_memory_url("env")
    monkeypatch.setenv("CLUSTERSYNC_URL", memory_url)
    async with await cs.open_store() as from_env:
        assert from_env.url == memory_url
    explicit = unique_memory_url("explicit")
    async with await cs.open_store(explicit) as from_argument:  # an explicit URL wins
        assert from_argument.url == explicit
    assert entries(tmp_path) == []

    monkeypatch.delenv("CLUSTERSYNC_URL")
    async with await cs.open_store() as default:
        assert default.url == "sqlite:///clustersync.db"
        assert default.namespace == "default"
    assert (tmp_path / "clustersync.db").is_file()


# -- options -----------------------------------------------------------------------------


async def test_unknown_option_is_a_configuration_error(tmp_path: Path) -> None:
    for url in (unique_memory_url(), f"sqlite:///{tmp_path / 'options.db'}"):
        with pytest.raises(cs.ConfigurationError, match="bogus_option"):
            await cs.open_store(url, bogus_option=1)


@pytest.mark.parametrize(
    "options",
    [{"synchronous": "sometimes"}, {"busy_timeout": "soon"}, {"busy_timeout": -1}],
    ids=["synchronous", "busy_timeout-str", "busy_timeout-negative"],
)
async def test_invalid_sqlite_option_values_are_configuration_errors(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    with pytest.raises(cs.ConfigurationError):
        await cs.open_store(f"sqlite:///{tmp_path / 'options.db'}", **options)


async def test_valid_sqlite_options_are_accepted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'options.db'}"
    async with await cs.open_store(url, busy_timeout=2, synchronous="full") as opened:
        assert await opened._ops.list_jobs() == []


# -- namespaces --------------------------------------------------------------------------


@pytest.mark.parametrize("namespace", ["", "n" * 256], ids=["empty", "256-chars"])
async def test_bad_namespace_is_a_value_error(
    namespace: str, tmp_path: Path, store_url: str
) -> None:
    with pytest.raises(ValueError):
        await cs.open_store(store_url, namespace=namespace)
    assert entries(tmp_path) == []  # nothing opened or created


async def test_namespace_must_be_a_string(store_url: str) -> None:
    with pytest.raises(TypeError):
        await cs.open_store(store_url, namespace=None)  # type: ignore[arg-type]


async def test_longest_namespace_is_accepted(store_url: str) -> None:
    async with await cs.open_store(store_url, namespace="n" * 255) as opened:
        assert opened.namespace == "n" * 255
        mutex = cs.Mutex(opened, "m")
        assert await mutex.acquire(blocking=False)
        await mutex.release()


# -- memory:// ---------------------------------------------------------------------------


async def test_named_memory_store_is_shared_and_plain_memory_is_private() -> None:
    url = unique_memory_url("shared")
    async with await cs.open_store(url) as first, await cs.open_store(url) as second:
        held = cs.Mutex(first, "m")
        assert await held.acquire(blocking=False)
        assert not await cs.Mutex(second, "m").acquire(blocking=False)  # same data
        await held.release()
        scheduler = cs.get_job_once_scheduler(first)
        await scheduler.schedule_once("job", datetime.now(UTC) + timedelta(hours=1))
        assert [j.key for j in await cs.get_job_once_scheduler(second).list_scheduled_jobs()] == [
            "job"
        ]

    async with (
        await cs.open_store("memory://") as first,
        await cs.open_store("memory://") as second,
    ):
        one, two = cs.Mutex(first, "m"), cs.Mutex(second, "m")
        assert await one.acquire(blocking=False)
        assert await two.acquire(blocking=False)  # private: unrelated data
        await one.release()
        await two.release()


async def test_durable_data_survives_reopening(store_url: str, namespace: str) -> None:
    """SQLite files and memory://NAME (within the process) keep jobs across reopening."""
    run_at = datetime.now(UTC) + timedelta(hours=1)
    async with await cs.open_store(store_url, namespace=namespace) as first:
        await cs.get_job_once_scheduler(first).schedule_once("persisted", run_at, {"a": 1})
        token = None
        mutex = cs.Mutex(first, "fence")
        async with mutex:
            token = mutex.token
    async with await cs.open_store(store_url, namespace=namespace) as second:
        listed = await cs.get_job_once_scheduler(second).list_scheduled_jobs()
        assert listed == [cs.JobOnceMetadata("persisted", run_at, {"a": 1})]
        mutex = cs.Mutex(second, "fence")
        async with mutex:
            assert token is not None
            assert mutex.token is not None
            assert mutex.token > token


# -- lifecycle ---------------------------------------------------------------------------


async def test_store_is_a_context_manager(store_url: str, namespace: str) -> None:
    opened = await cs.open_store(store_url, namespace=namespace)
    async with opened as entered:
        assert entered is opened
        assert not opened.closed
        assert await opened._ops.list_jobs() == []
    assert opened.closed


async def test_operations_after_close_raise_store_unavailable(
    store_url: str, namespace: str
) -> None:
    opened = await cs.open_store(store_url, namespace=namespace)
    scheduler = cs.get_job_once_scheduler(opened)
    await opened.close()
    with pytest.raises(cs.StoreUnavailableError):
        await opened._ops.list_jobs()
    with pytest.raises(cs.StoreUnavailableError):
        await scheduler.schedule_once("late", datetime.now(UTC))
    with pytest.raises(cs.StoreUnavailableError):
        await scheduler.list_scheduled_jobs()
    with pytest.raises(cs.StoreUnavailableError):
        await scheduler.cancel("late")
    scheduler.set_callback(print)
    with pytest.raises(cs.StoreUnavailableError):
        await scheduler.start()
    assert not scheduler.started


async def test_close_is_idempotent_and_stops_the_scheduler(store_url: str, namespace: str) -> None:
    opened = await cs.open_store(store_url, namespace=namespace)
    scheduler = cs.get_job_once_scheduler(opened)
    scheduler.set_callback(print)
    await scheduler.start()
    assert scheduler.started
    await opened.close()
    assert opened.closed
    assert not scheduler.started
    await opened.close()
    assert opened.closed


async def test_close_stops_recurring_jobs_and_ends_held_leases(
    store_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing a store stops everything built on it: a recurring job stops (its running
    callback finishing first), a held mutex ends (released in the store, its holder told),
    and nothing keeps retrying the closed store."""
    opened = await cs.open_store(store_url, namespace=namespace)
    runs: list[float] = []
    finished = threading.Event()

    def tick() -> None:
        runs.append(time.monotonic())
        time.sleep(0.2)
        finished.set()

    job = cs.schedule(opened, "tick", cs.wait_for_interval(timedelta(seconds=0.05)), tick)
    lost = threading.Event()
    mutex = cs.Mutex(opened, "held", ttl=30, on_lost=lost.set)
    assert await mutex.acquire()
    assert await eventually(lambda: bool(runs))
    await opened.close()
    assert finished.is_set(), "close() returned before the running callback finished"
    assert opened.closed
    assert not mutex.locked()
    assert await eventually(lost.is_set), "the holder was not told its lease ended"
    with pytest.raises(cs.LockLostError):
        mutex.check()
    with pytest.raises(cs.LockLostError):
        await mutex.release()
    async with await cs.open_store(store_url, namespace=namespace) as other:
        assert await cs.Mutex(other, "held").acquire(blocking=False), "the lease was not freed"
    count = len(runs)
    caplog.clear()
    await shim.sleep(0.3)
    assert len(runs) == count, "the recurring job ran after close()"
    assert "retrying" not in caplog.text, caplog.text
    assert await job.close(timeout=0)  # already stopped; idempotent


async def test_acquire_on_a_closed_store_raises(store_url: str, namespace: str) -> None:
    opened = await cs.open_store(store_url, namespace=namespace)
    holder = cs.Mutex(opened, "busy", ttl=30)
    assert await holder.acquire()
    async with await cs.open_store(store_url, namespace=namespace) as other:
        waiter = cs.Mutex(other, "busy")
        result: list[BaseException | bool] = []

        async def wait() -> None:
            try:
                result.append(await waiter.acquire(timeout=20))
            except cs.StoreUnavailableError as exc:
                result.append(exc)

        task = shim.spawn(wait, name="waiter")
        await shim.sleep(0.1)
        await other.close()
        assert await shim.join(task, 5), "a waiter kept retrying a closed store"
        assert isinstance(result[0], cs.StoreUnavailableError), result
    with pytest.raises(cs.StoreUnavailableError):
        await cs.Mutex(other, "free").acquire(timeout=1)
    await opened.close()


@pytest.mark.parametrize("where", ["recurring", "one-shot"])
async def test_close_from_inside_callbacks_does_not_wait_for_itself(
    store_url: str, namespace: str, where: str
) -> None:
    """``store.close()`` (and so ``stop()``/``job.close()``) from a running callback
    returns at once instead of waiting for that callback; the store ends up closed."""
    opened = await cs.open_store(store_url, namespace=namespace)
    returned = threading.Event()

    async def close_from_callback(*_: Any) -> None:
        await opened.close()
        returned.set()

    if where == "recurring":
        cs.schedule(opened, "closer", cs.wait_for_interval(timedelta(hours=1)), close_from_callback)
    else:
        scheduler = cs.get_job_once_scheduler(opened)
        scheduler.set_callback(close_from_callback)
        await scheduler.start()
        await scheduler.schedule_once("closer", datetime.now(UTC))
    assert await eventually(returned.is_set, timeout=10), f"close() hung in a {where} job"
    assert opened.closed
    await opened.close()


async def test_scheduler_stop_from_inside_a_callback_returns(
    store_url: str, namespace: str
) -> None:
    """Regression: ``stop()`` called by a one-shot callback waited for that callback."""
    async with await cs.open_store(store_url, namespace=namespace) as opened:
        scheduler = cs.get_job_once_scheduler(opened)
        stopped: list[bool] = []

        async def stop_from_callback(key: str, props: Any) -> None:
            stopped.append(await scheduler.stop(3))

        scheduler.set_callback(stop_from_callback)
        await scheduler.start()
        await scheduler.schedule_once("stopper", datetime.now(UTC))
        assert await eventually(lambda: bool(stopped), timeout=10)
        assert stopped == [True]


async def test_identity_defaults_to_host_and_pid(store_url: str, namespace: str) -> None:
    async with await cs.open_store(store_url, namespace=namespace) as opened:
        assert opened.identity == f"{socket.gethostname()}:{os.getpid()}"
    async with await cs.open_store(store_url, namespace=namespace, identity="web-3") as named:
        assert named.identity == "web-3"
    with pytest.raises(ValueError, match="identity"):
        await cs.open_store(store_url, namespace=namespace, identity="")


async def test_the_public_surface_of_a_store_is_small(store_url: str, namespace: str) -> None:
    async with await cs.open_store(store_url, namespace=namespace) as opened:
        public = {name for name in dir(opened) if not name.startswith("_")}
        assert public == {"url", "namespace", "identity", "close", "closed"}


async def test_repr_and_url_redact_the_password() -> None:
    name = f"redact-{uuid.uuid4().hex}"
    async with await cs.open_store(f"memory://user:s3cret-pw@{name}", namespace="ns") as opened:
        for text in (repr(opened), str(opened), opened.url):
            assert "s3cret-pw" not in text
            assert "***" in text
        assert name in repr(opened)
        assert "ns" in repr(opened)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret-pw@127.0.0.1:1/0",
        "rediss://:s3cret-pw@127.0.0.1:1/0",
        "unix:///nonexistent/clustersync-test.sock",
        "postgresql://user:s3cret-pw@127.0.0.1:1/db",
        "postgres://user:s3cret-pw@127.0.0.1:1/db",
    ],
)
async def test_server_stores_fail_with_library_errors_only(url: str) -> None:
    """Redis and PostgreSQL stores arrive in a later version: until then opening one is a
    ConfigurationError; afterwards, an unreachable server is a StoreUnavailableError.
    Either way it is a clustersync error (never a raw driver error) without the
    password in its message."""
    with pytest.raises((cs.ConfigurationError, cs.StoreUnavailableError)) as excinfo:
        await open_and_use(url)
    assert "s3cret-pw" not in str(excinfo.value)


async def open_and_use(url: str) -> None:
    store = await cs.open_store(url)
    try:  # a lazily connecting store must fail on its first operation
        await store._ops.list_jobs()
    finally:
        await store.close()


# -- errors ------------------------------------------------------------------------------


def test_error_hierarchy() -> None:
    expected_bases: dict[type[Exception], tuple[type[Exception], ...]] = {
        cs.ConfigurationError: (ValueError,),
        cs.StoreUnavailableError: (ConnectionError,),
        cs.NotLockedError: (RuntimeError,),
        cs.DuplicateJobError: (KeyError,),
        cs.SchedulerError: (RuntimeError,),
        cs.LockLostError: (),
    }
    for error, builtins in expected_bases.items():
        assert issubclass(error, cs.ClusterSyncError)
        for builtin in builtins:
            assert issubclass(error, builtin), (error, builtin)
    assert issubclass(cs.ClusterSyncError, Exception)
    assert not issubclass(cs.LockLostError, RuntimeError | ValueError | ConnectionError)
    # One error tree for both APIs.
    threading_api = importlib.import_module("clustersync")
    asyncio_api = importlib.import_module("clustersync.aio")
    for name in exceptions.__all__:
        assert getattr(threading_api, name) is getattr(exceptions, name)
        assert getattr(asyncio_api, name) is getattr(exceptions, name)


def test_duplicate_job_error_names_the_key() -> None:
    error = cs.DuplicateJobError("remind:42")
    assert error.key == "remind:42"
    assert "remind:42" in str(error)
    with pytest.raises(KeyError):
        raise error
