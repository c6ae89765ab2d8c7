"""Harness of the multi-process tests: start workers (``worker.py``) on one durable store
(SQLite file, Redis or PostgreSQL server) and namespace, read their event logs, send them
commands and signals, and kill them all at the end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest

WORKER = Path(__file__).with_name("worker.py")
#: Generous default for anything a worker must do "soon" on a loaded 2-core machine.
SOON = 20.0

Event = dict[str, Any]


class Worker:
    """One worker process and its event log."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path, stderr: Path):
        self.name = name
        self.proc = proc
        self.log = log
        self.stderr = stderr

    def __repr__(self) -> str:
        return f"<Worker {self.name} pid={self.proc.pid} rc={self.proc.poll()}>"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, kind: str | None = None) -> list[Event]:
        """The events logged so far (complete lines only), optionally of one kind."""
        try:
            text = self.log.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        lines = text.split("\n")[:-1]  # the last piece is empty or still being written
        events = [json.loads(line) for line in lines]
        return [e for e in events if kind is None or e["event"] == kind]

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=SOON)

    def diagnostics(self) -> str:
        try:
            err = self.stderr.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            err = ""
        return (
            f"--- {self!r} events:\n"
            + "\n".join(json.dumps(e) for e in self.events())
            + f"\n--- {self.name} stderr:\n{err[-4000:]}"
        )


class Cluster:
    """Workers sharing one store (``url``) and namespace; ``directory`` holds their event
    logs, stderr and the command files."""

    def __init__(self, directory: Path, url: str, namespace: str, backend: str) -> None:
        self.dir = directory
        self.url = url
        if backend == "sqlite":
            assert url.startswith("sqlite:////"), url  # an absolute path: any cwd works
        self.namespace = namespace
        self.backend = backend
        self.workers: list[Worker] = []

    def spawn(
        self, name: str, scenario: str, *, env: Mapping[str, str] | None = None, **cfg: Any
    ) -> Worker:
        """Start a worker playing ``scenario`` with ``cfg``; ``env`` replaces its
        environment (e.g. to run it under libfaketime)."""
        log = self.dir / f"{name}.events"
        stderr = self.dir / f"{name}.stderr"
        config = {"url": self.url, "namespace": self.namespace, "log": str(log), **cfg}
        with open(stderr, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(WORKER), scenario, json.dumps(config)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=env,
            )
        worker = Worker(name, proc, log, stderr)
        self.workers.append(worker)
        return worker

    def path(self, name: str) -> str:
        """A command file path (the worker acts once the test creates it)."""
        return str(self.dir / f"cmd-{name}")

    def command(self, name: str) -> None:
        Path(self.path(name)).touch()

    def wait_for(
        self,
        worker: Worker,
        kind: str,
        timeout: float = SOON,
        where: Callable[[Event], bool] = lambda _: True,
        count: int = 1,
    ) -> list[Event]:
        """Wait until ``worker`` logged ``count`` events of ``kind`` matching ``where``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in worker.events(kind) if where(e)]
            if len(found) >= count:
                return found
            if worker.proc.poll() is not None:
                found = [e for e in worker.events(kind) if where(e)]  # logged before exiting
                if len(found) >= count:
                    return found
                self.fail(f"{worker.name} exited (rc={worker.proc.returncode}) before {kind!r}")
            if time.monotonic() > deadline:
                self.fail(f"{worker.name}: no {count}x {kind!r} within {timeout}s")
            time.sleep(0.005)

    def wait_exit(self, worker: Worker, timeout: float = SOON) -> int:
        try:
            return worker.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"{worker.name} did not exit within {timeout}s")

    def fail(self, message: str) -> NoReturn:
        pytest.fail(message + "\n" + self.diagnostics(), pytrace=False)

    def diagnostics(self) -> str:
        return "\n".join(w.diagnostics() for w in self.workers)

    def kill_all(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # don't leave one stopped
                    worker.signal(signal.SIGCONT)
            worker.kill()
