"""What the tests of the examples (``examples/``) share: real processes in their own
process groups, the examples' JSON-lines event logs, a small HTTP client and the checks
of recurring runs and one-shot firings.

Every example appends one JSON line per event to the file named by ``EVENT_LOG``:
``{"event": ..., "pid": ..., "time": <Unix seconds>, ...}``. The processes run on this
host, so their ``time`` values are comparable.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import pytest

from tests.servers import _group_alive, _kill_group

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: Generous bound for anything that should happen "soon" on a loaded 2-core machine.
SOON = 60.0

Event = dict[str, Any]
T = TypeVar("T")


class Service:
    """A command (a server and its workers) in a process group of its own, its output in
    ``log``. ``stop()`` sends ``SIGTERM`` to the leader (a graceful shutdown) and kills the
    whole group if it takes longer than ``timeout``; leaving the ``with`` block stops it
    and makes sure no process of the group is left."""

    def __init__(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path
    ) -> None:
        self.argv = list(argv)
        self.log = log
        with log.open("ab") as output:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = SOON) -> int:
        """Graceful stop; returns the leader's exit status (negative: killed by a signal)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(self.pid)
                self.proc.wait()
                pytest.fail(f"{self.argv[:4]} did not stop within {timeout:.0f} s after SIGTERM")
        status = self.proc.returncode
        _kill_group(self.pid)  # a worker left behind by a crashed leader
        return status

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                self.stop()
        finally:
            if self.proc.poll() is None or _group_alive(self.pid):
                _kill_group(self.pid)
            self.proc.wait()


def run(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float = SOON
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion in a process group of its own (killed as a whole if it
    outlives ``timeout``)."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"{list(argv)} did not finish within {timeout:.0f} s:\n{out}\n{err}")
    finally:
        _kill_group(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def python_env(**extra: str) -> dict[str, str]:
    """This environment, with buffered output off and ``extra`` set."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env.pop("PYTHONPATH", None)  # the examples run from their own folders
    return env


def wait_until(
    probe: Callable[[], T | Literal[False] | None],
    what: str,
    timeout: float = SOON,
    diagnostics: Callable[[], str] = str,
) -> T:
    """Poll ``probe`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnostics()}")
        time.sleep(0.05)


# -- event logs ------------------------------------------------------------------------------


def read_events(path: Path, *kinds: str) -> list[Event]:
    """The complete lines of an event log (of the given kinds, if any), in file order."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    events = [json.loads(line) for line in text.split("\n")[:-1] if line]
    return [e for e in events if not kinds or e["event"] in kinds]


@dataclass(frozen=True)
class Run:
    """One run of a recurring job: its process, start and end (None: never finished)."""

    pid: int
    start: float
    end: float | None


def recurring_runs(events: Iterable[Event], start: str, end: str) -> list[Run]:
    """The runs logged as ``start``/``end`` event pairs (paired per process), by start."""
    open_runs: dict[int, float] = {}
    runs: list[Run] = []
    for event in events:
        pid = event["pid"]
        if event["event"] == start:
            assert pid not in open_runs, f"process {pid} started a run inside another"
            open_runs[pid] = event["time"]
        elif event["event"] == end:
            runs.append(Run(pid, open_runs.pop(pid), event["time"]))
    runs += [Run(pid, began, None) for pid, began in open_runs.items()]
    return sorted(runs, key=lambda r: r.start)


#: Slack between clocks read in different processes (the store's and the callback's).
CLOCK_SLACK = 0.05


def check_recurring(runs: Sequence[Run], interval: float) -> str:
    """Assert that every run finished, that no two runs overlapped and that each started
    at least ``interval`` after the previous one finished (``wait_for_interval``): so at most
    ``span / interval + 1`` runs in total, whatever the number of processes. Returns a
    summary: runs, span, runs per process."""
    assert runs, "the recurring job never ran"
    assert all(run.end is not None for run in runs), f"a run never finished: {runs}"
    for before, after in itertools.pairwise(runs):
        assert before.end is not None
        assert after.start >= before.end + interval - CLOCK_SLACK, (
            f"runs overlap or come too soon: {before} then {after}"
        )
    span = runs[-1].start - runs[0].start
    assert len(runs) <= span / interval + 1
    per_process = Counter(run.pid for run in runs)
    return f"{len(runs)} runs in {span:.1f} s, by {len(per_process)} processes {dict(per_process)}"


def firings(events: Iterable[Event], kind: str) -> dict[str, list[Event]]:
    """The events of ``kind`` by their ``key``."""
    fired: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event["event"] == kind:
            fired[event["key"]].append(event)
    return dict(fired)


# -- HTTP ------------------------------------------------------------------------------------


def http(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """``(status, decoded JSON body or None)``; error statuses are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw) if raw else None


def answers(url: str) -> bool:
    """Whether ``GET url`` answers 200."""
    try:
        return http("GET", url, timeout=2.0)[0] == 200
    except OSError:
        return False
