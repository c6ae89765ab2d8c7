"""The store opened at import under a real ``gunicorn --preload`` (opened and used in
the master, then forked into the workers) works in every worker: a lease taken in a
worker is renewed there, and the one-shot scheduler started in the master fires jobs in
the workers.

Regression: a worker's ``Mutex(ttl=1)`` was never renewed, so another instance took it
while the worker still believed it held it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import clustersync as cs
from tests.conftest import kind_of, shared_backends
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=shared_backends())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def gunicorn(store_url: str, namespace: str, tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    """``gunicorn --preload -w 2`` serving tests/apps/preload_app.py: its base URL, the
    scheduler's log file and the master's pid."""
    port = free_port()
    log = tmp_path / "fired.log"
    log.touch()
    env = dict(
        os.environ,
        CLUSTERSYNC_URL=store_url,
        APP_NAMESPACE=namespace,
        APP_LOG=str(log),
        PYTHONPATH=str(ROOT),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "--workers",
            "2",
            "--threads",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "5",
            "tests.apps.preload_app:app",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start: {process.stderr}") from None
                time.sleep(0.1)
        yield base, log, process.pid
    finally:
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        try:
            _, errors = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            _, errors = process.communicate()
        assert "Traceback" not in errors, errors


def _get(url: str, timeout: float = 30) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        body: bytes = answer.read()
    return body.decode()


def test_a_worker_renews_its_lease(
    gunicorn: tuple[str, Path, int], store_url: str, namespace: str
) -> None:
    base, _, _ = gunicorn
    answer: list[str] = []
    request = threading.Thread(
        target=lambda: answer.append(_get(f"{base}/hold?name=w&ttl=1&seconds=3")), daemon=True
    )
    with cs.open_store(store_url, namespace=namespace) as other:
        request.start()
        time.sleep(1.8)  # past the ttl: only renewals in the worker keep the lease
        assert not cs.Mutex(other, "w").acquire(blocking=False), (
            "another instance took the lease the worker still held"
        )
        request.join(30)
    assert answer, "no answer from the worker"
    assert answer[0].startswith("held "), answer


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def test_the_scheduler_started_before_the_fork_fires_in_the_workers(
    gunicorn: tuple[str, Path, int], store_url: str, namespace: str, backend: str
) -> None:
    base, log, master = gunicorn
    workers = {int(_get(base + "/").split()[1]) for _ in range(4)}
    # Freeze the master (whose own scheduler, started at import, also runs): what fires
    # now fires in the workers, from the schedulers re-created there after the fork. (Not
    # on SQLite: a process frozen inside a write transaction blocks every other writer.)
    freeze = kind_of(backend).reach == "cluster"
    if freeze:
        os.kill(master, signal.SIGSTOP)
    try:
        with cs.open_store(store_url, namespace=namespace) as other:
            scheduler = cs.get_job_once_scheduler(other)
            for n in range(6):
                scheduler.schedule_once(f"job-{n}", datetime.now(UTC))
        deadline = time.monotonic() + 15
        fired: list[list[str]] = []
        while time.monotonic() < deadline and len(fired) < 6:
            time.sleep(0.1)
            fired = [line.split() for line in log.read_text().splitlines() if line]
    finally:
        os.kill(master, signal.SIGCONT)
    assert sorted(key for _, key in fired) == [f"job-{n}" for n in range(6)], fired
    firing = {int(pid) for pid, _ in fired}
    assert all(_parent(pid) == master for pid in workers), workers
    if freeze:
        assert master not in firing
        assert all(_parent(pid) == master for pid in firing), (firing, master)
