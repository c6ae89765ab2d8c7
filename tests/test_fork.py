"""A threading-API store opened, and used, before ``os.fork()`` works in the child as if
opened there (what ``gunicorn --preload`` and multiprocessing's fork do): leases are
renewed, wake-ups arrive, and the scheduler and recurring jobs started before the fork
run in the child. Holds taken before the fork stay the parent's. An asyncio store refuses
to be used in the child.

Regression: in the child, a ``Mutex(ttl=1)`` was never renewed (another instance took it
at 1.8 s, ``on_lost`` never came) and wake-ups fell back to the 2 s cap.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import clustersync as cs
from clustersync import aio
from tests.conftest import shared_backends


@pytest.fixture(params=shared_backends())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _write(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())


class Child:
    """A forked child running ``body``; it reports through a pipe and its exit status."""

    def __init__(self, body: Callable[[Callable[[str], None]], None]) -> None:
        read_fd, write_fd = os.pipe()
        with warnings.catch_warnings():  # Python 3.12+: "multi-threaded process forks"
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            os.close(read_fd)
            status = 0
            try:
                body(lambda line: _write(write_fd, line))
            except BaseException:
                traceback.print_exc()
                status = 1
            os._exit(status)
        os.close(write_fd)
        self.pid = pid
        self._reader = os.fdopen(read_fd, "r")

    def expect(self, line: str, timeout: float = 15.0) -> None:
        """Wait for the child to report ``line``."""
        deadline = time.monotonic() + timeout
        got = ""
        while time.monotonic() < deadline:
            got = self._reader.readline().strip()
            if got == line:
                return
            if not got:
                break
        self.exit_status()
        pytest.fail(f"the child reported {got!r} instead of {line!r}")

    def exit_status(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    return os.waitstatus_to_exitcode(status)
                time.sleep(0.02)
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            pytest.fail("the child did not finish")
        finally:
            self._reader.close()


@contextlib.contextmanager
def two_stores(store_url: str, namespace: str) -> Iterator[tuple[cs.Store, cs.Store]]:
    """The store that will be forked (warmed up: renewer, change feed and connections in
    use) and another instance."""
    with (
        cs.open_store(store_url, namespace=namespace) as forked,
        cs.open_store(store_url, namespace=namespace) as other,
    ):
        warm = cs.Mutex(forked, "warm-up")
        assert warm.acquire()
        warm.release()
        yield forked, other


def test_leases_are_renewed_in_the_child(store_url: str, namespace: str) -> None:
    with two_stores(store_url, namespace) as (forked, other):

        def body(report: Callable[[str], None]) -> None:
            lost: list[bool] = []
            mutex = cs.Mutex(forked, "child", ttl=1.0, on_lost=lambda: lost.append(True))
            assert mutex.acquire(timeout=5)
            report("acquired")
            time.sleep(2.5)
            mutex.check()
            assert mutex.locked()
            assert not lost
            mutex.release()

        child = Child(body)
        child.expect("acquired")
        time.sleep(1.8)
        assert not cs.Mutex(other, "child").acquire(blocking=False), (
            "the child's lease was not renewed: another instance took it"
        )
        assert child.exit_status() == 0


def test_wake_ups_reach_the_child(store_url: str, namespace: str) -> None:
    with two_stores(store_url, namespace) as (forked, other):
        holder = cs.Mutex(other, "handoff", ttl=30)
        assert holder.acquire()

        def body(report: Callable[[str], None]) -> None:
            waiter = cs.Mutex(forked, "handoff", ttl=30)
            report("waiting")
            assert waiter.acquire(timeout=10)
            report(f"{time.monotonic():.6f}")
            waiter.release()

        child = Child(body)
        child.expect("waiting")
        time.sleep(0.3)  # the child is blocked in acquire by now
        released = time.monotonic()
        holder.release()
        acquired = float(child._reader.readline())
        assert acquired - released < 1.0, (
            f"the child woke {acquired - released:.2f}s after the release (no wake-up)"
        )
        assert child.exit_status() == 0


def test_holds_taken_before_the_fork_stay_the_parents(
    store_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    with two_stores(store_url, namespace) as (forked, other):
        mutex = cs.Mutex(forked, "parent", ttl=2.0)
        assert mutex.acquire()
        token = mutex.token

        def body(report: Callable[[str], None]) -> None:
            assert not mutex.locked()
            with pytest.raises(cs.LockLostError, match="parent process"):
                mutex.check()
            with pytest.raises(cs.LockLostError, match="parent process"):
                mutex.release()
            report("done")

        child = Child(body)
        child.expect("done")
        assert child.exit_status() == 0
        time.sleep(2.5)  # longer than the ttl: the parent's renewals go on
        mutex.check()
        assert mutex.token == token
        assert not cs.Mutex(other, "parent").acquire(blocking=False), "the child freed it"
        mutex.release()
        # The child's copies of the connections did not disturb the parent's.
        assert "reconnecting" not in caplog.text, caplog.text
        waiter = cs.Mutex(other, "parent")
        assert waiter.acquire(timeout=5)
        waiter.release()


def test_scheduler_and_recurring_jobs_started_before_the_fork_run_in_the_child(
    store_url: str, namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"

    def record(what: str) -> None:
        with log.open("a") as file:
            file.write(f"{os.getpid()} {what}\n")

    with two_stores(store_url, namespace) as (forked, other):
        scheduler = cs.get_job_once_scheduler(forked)
        scheduler.set_callback(lambda key, props: record(key))
        scheduler.start()
        job = cs.schedule(
            forked, "tick", cs.wait_for_interval(timedelta(seconds=0.1)), lambda: record("tick")
        )

        def body(report: Callable[[str], None]) -> None:
            report("forked")
            deadline = time.monotonic() + 15
            mine = f"{os.getpid()} "
            while time.monotonic() < deadline:  # until both ran here
                lines = log.read_text().splitlines() if log.exists() else []
                done = {line.split(" ", 1)[1] for line in lines if line.startswith(mine)}
                if {"fired-in-child", "tick"} <= done:
                    return
                time.sleep(0.05)

        child = Child(body)
        child.expect("forked")
        job.close()  # from now on only the child runs them
        scheduler.stop()
        cs.get_job_once_scheduler(other).schedule_once("fired-in-child", datetime.now(UTC))
        assert child.exit_status() == 0
        lines = log.read_text().splitlines()
        in_child = {line.split(" ", 1)[1] for line in lines if line.startswith(f"{child.pid} ")}
        assert "fired-in-child" in in_child, lines
        assert "tick" in in_child, lines


def test_a_forked_child_never_believes_it_leads(store_url: str, namespace: str) -> None:
    """The parent's leadership stays the parent's; an election started before the fork
    campaigns in the child as a new candidate, and leads once the parent resigns."""
    with two_stores(store_url, namespace) as (forked, other):
        events: list[str] = []
        election = cs.Election(
            forked,
            "leader",
            ttl=2.0,
            on_elected=lambda term: events.append(f"{os.getpid()} elected {term}"),
            on_revoked=lambda: events.append(f"{os.getpid()} revoked"),
        )
        election.start()
        assert election.wait_until_leader(timeout=10)
        term = election.term
        assert term is not None

        def body(report: Callable[[str], None]) -> None:
            assert not election.is_leader
            assert election.term is None
            report("not leader")
            assert election.wait_until_leader(timeout=15), "the child never campaigned"
            assert election.term is not None
            assert election.term > term
            mine = [event for event in events if event.startswith(f"{os.getpid()} ")]
            assert mine == [f"{os.getpid()} elected {election.term}"], events
            report("leads")
            assert election.stop(timeout=10)

        child = Child(body)
        child.expect("not leader")
        time.sleep(0.5)
        assert election.is_leader, "the child took the parent's leadership"
        assert election.term == term
        info = cs.Election(other, "leader").leader()
        assert info is not None
        assert info.term == term
        assert election.stop(timeout=10)
        child.expect("leads")
        assert child.exit_status() == 0
        assert events == [f"{os.getpid()} elected {term}", f"{os.getpid()} revoked"]


async def test_an_asyncio_store_refuses_the_child(store_url: str, namespace: str) -> None:
    async with await aio.open_store(store_url, namespace=namespace) as store:

        def body(report: Callable[[str], None]) -> None:
            # The parent's event loop is "running" in this copy of its thread: drive the
            # coroutine by hand; it fails at its first use of the store, before any wait.
            acquiring = aio.Mutex(store, "m").acquire(blocking=False)
            with pytest.raises(cs.ConfigurationError, match=r"os\.fork\(\)"):
                acquiring.send(None)
            report("refused")

        child = Child(body)
        child.expect("refused")
        assert child.exit_status() == 0
        mutex = aio.Mutex(store, "m")  # the parent's store is unaffected
        assert await mutex.acquire(timeout=5)
        await mutex.release()


def test_namespaces_are_fresh(namespace: str) -> None:
    """(The fixtures give every test its own namespace, so children never collide.)"""
    assert namespace != f"ns-{uuid.uuid4().hex[:12]}"
