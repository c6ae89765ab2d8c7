"""Helpers of the dashboard tests: a realistic cluster to look at (threading API), the
``clustersync dashboard`` command as a real process, and Chromium for the browser test."""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import clustersync as cs
from tests.servers import in_ci

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
CHROMIUM = "/usr/bin/chromium"
#: The flags that work for root on a loopback-only machine (Playwright adds --headless).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.02)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env.pop("CLUSTERSYNC_URL", None)
    env.update(extra)
    return env


# -- a cluster to look at ------------------------------------------------------------------


@dataclass
class Cluster:
    """Two instances (``web-1``, ``worker-1``) sharing a namespace, with held mutexes, an
    election leader, recurring jobs (one failing, one paused, one running right now),
    one-shot jobs that ran (two of them failed for good after their :data:`RETRY`
    attempts) and pending one-shot jobs."""

    web: cs.Store
    worker: cs.Store
    mutexes: list[cs.Mutex] = field(default_factory=list)
    jobs: list[cs.Job] = field(default_factory=list)
    election: cs.Election | None = None
    release_running: threading.Event = field(default_factory=threading.Event)
    lost: list[str] = field(default_factory=list)

    #: The pending one-shot jobs: key -> (run_at, props).
    one_shot: dict[str, tuple[datetime, object]] = field(default_factory=dict)
    #: The failed one-shot jobs: key -> their error.
    failed: dict[str, str] = field(default_factory=dict)


#: The worker's one-shot retries: three attempts, 50 ms (then 100 ms) apart at most.
RETRY = cs.Retry(attempts=3, backoff=timedelta(milliseconds=50))
#: One-shot jobs the worker runs at start: key -> (props, error raised on every attempt).
RAN_ONCE: dict[str, tuple[object, str | None]] = {
    "email:welcome:user:1187": ({"user": 1187, "template": "welcome"}, None),
    "remind:user:1001": ({"user": 1001, "template": "trial-ending"}, None),
    "webhook:deliver:ord_1042": (
        {"order": "ord_1042", "url": "https://hooks.partner.example/orders"},
        "ConnectionError: POST https://hooks.partner.example/orders answered 503 Service"
        " Unavailable",
    ),
    "export:crm:2026-12-05": (
        {"day": "2026-12-05", "rows": 18250},
        "TimeoutError: the CRM did not accept the export within 30s",
    ),
}


def _quick() -> None:
    time.sleep(0.05)


def _failing() -> None:
    raise ConnectionError("SMTP server refused the connection: 421 too many connections")


def _run_once(key: str, props: object) -> None:
    time.sleep(0.03)
    error = RAN_ONCE[key][1]
    if error is not None:
        kind, message = error.split(": ", 1)
        raise {"ConnectionError": ConnectionError, "TimeoutError": TimeoutError}[kind](message)


def _run_one_shot_jobs(state: Cluster) -> None:
    """The worker runs :data:`RAN_ONCE` (due now) and stops its scheduler: two jobs end
    as failed, and the runs are remembered."""
    scheduler = cs.get_job_once_scheduler(state.worker, retry=RETRY)
    scheduler.set_callback(_run_once)
    scheduler.start()
    try:
        now = datetime.now(UTC)
        scheduler.schedule_many([(key, now, props) for key, (props, _) in RAN_ONCE.items()])
        state.failed = {key: error for key, (_, error) in RAN_ONCE.items() if error}

        def done() -> bool:
            failed = {job.key for job in scheduler.list_failed_jobs()}
            return failed == set(state.failed) and not scheduler.list_scheduled_jobs()

        wait_for(done, 30, "the one-shot jobs to run (and two to fail)")
    finally:
        scheduler.stop()


@contextlib.contextmanager
def cluster(url: str, namespace: str, *, one_shot: int = 60) -> Iterator[Cluster]:
    """Start the cluster on ``url``; stop it on exit (the running job is released)."""
    web = cs.open_store(url, namespace=namespace, identity="web-1")
    worker = cs.open_store(url, namespace=namespace, identity="worker-1")
    state = Cluster(web, worker)

    def long_run() -> None:
        state.release_running.wait(60)

    try:
        for store, name, earlier in (
            (web, "billing-export", 41),
            (worker, "search-index-rebuild", 6),
        ):
            mutex = cs.Mutex(store, name, on_lost=functools.partial(state.lost.append, name))
            for _ in range(earlier):  # earlier holds: a fencing token that has moved on
                with mutex:
                    pass
            assert mutex.acquire(timeout=10)
            state.mutexes.append(mutex)
        minutes = timedelta(minutes=1)
        schedules: list[tuple[cs.Store, str, cs.NextWaitInterval, Callable[[], None]]] = [
            (web, "cache.refresh-rates", cs.wait_for_interval(5 * minutes), _quick),
            (worker, "cache.refresh-rates", cs.wait_for_interval(5 * minutes), _quick),
            (web, "billing.invoice-run", cs.wait_for_rounded_interval(60 * minutes), _quick),
            (worker, "emails.digest", cs.wait_for_interval(15 * minutes), _failing),
            (worker, "reports.nightly", cs.wait_for_cron("0 2 * * *", tz="Europe/Paris"), _quick),
            (worker, "search.reindex", cs.wait_for_interval(30 * minutes), long_run),
            (web, "sessions.cleanup", cs.wait_for_interval(10 * minutes), _quick),
        ]
        for store, key, next_wait, callback in schedules:
            state.jobs.append(cs.schedule(store, key, next_wait, callback))

        def settled() -> bool:
            jobs = {job.key: job for job in cs.list_recurring_jobs(web)}
            return len(jobs) == 6 and all(
                job.last_started is not None
                and (job.key == "search.reindex" or job.last_finished is not None)
                for job in jobs.values()
            )

        wait_for(settled, 20, "every recurring job to run once")
        cs.pause_recurring_job(web, "sessions.cleanup")
        state.election = cs.Election(worker, "reports-leader")
        state.election.start()
        assert state.election.wait_until_leader(timeout=10)
        _run_one_shot_jobs(state)

        now = datetime.now(UTC)
        batch: list[tuple[str, datetime, object]] = []
        for i in range(one_shot):
            user = 1000 + 7 * i
            if i % 3 == 0:
                props: object = {"user": user, "template": "trial-ending"}
                batch.append((f"remind:user:{user}", now + timedelta(minutes=5 + 3 * i), props))
            elif i % 3 == 1:
                props = {"customer": f"cus_{user:06d}", "amount_cents": 1900 + i, "currency": "EUR"}
                batch.append((f"invoice:2026-12:{user}", now + timedelta(hours=1 + i), props))
            else:
                props = {"url": "https://hooks.example.com/orders", "event": "order.paid"}
                batch.append((f"webhook:retry:{user:08x}", now + timedelta(seconds=40 + i), props))
        cs.get_job_once_scheduler(web).schedule_many(batch)
        state.one_shot = {key: (run_at, props) for key, run_at, props in batch}
        yield state
    finally:
        state.release_running.set()
        if state.election is not None:
            state.election.stop(timeout=10)
        for job in state.jobs:
            job.close(timeout=10)
        for mutex in state.mutexes:
            if mutex.locked():
                mutex.release()
        web.close()
        worker.close()


# -- the command, for real -----------------------------------------------------------------


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[str]
    banner: str

    def get(self, path: str, **headers: str) -> tuple[int, str, dict[str, str]]:
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), dict(error.headers)

    def post(self, path: str, body: bytes, **headers: str) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


@contextlib.contextmanager
def dashboard_command(
    url: str, namespace: str, *args: str, cwd: Path | None = None
) -> Iterator[Served]:
    """``python -m clustersync dashboard --port 0`` on ``url`` (in ``cwd``); SIGINT on
    exit."""
    command = [sys.executable, "-m", "clustersync", "--url", url, "--namespace", namespace]
    process = subprocess.Popen(
        [*command, "dashboard", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        cwd=cwd,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        try:
            banner = lines.get(timeout=20)
        except queue.Empty:
            process.kill()
            _, err = process.communicate(timeout=10)
            raise AssertionError(f"the dashboard did not start: {err}") from None
        address = banner.split(" on ", 1)[1].split("/ ", 1)[0]
        yield Served(address, process, banner)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(5)
        stdout.close()
        if process.stderr is not None:
            process.stderr.close()


# -- the browser ---------------------------------------------------------------------------


def require_chromium() -> str:
    """The Chromium binary; skips without it, except in CI (``CI=true``), where the test
    fails: scripts/install-servers.sh installs it."""
    if os.path.exists(CHROMIUM) and shutil.which(CHROMIUM):
        return CHROMIUM
    message = f"{CHROMIUM} is missing: run scripts/install-servers.sh (apt-get install chromium)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
