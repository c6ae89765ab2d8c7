"""Multi-process soak of every durable store under faults, checked by the safety checker.

Per store (SQLite file; private Redis with ``appendonly yes``/``appendfsync always``;
private PostgreSQL with ``fsync``/``synchronous_commit`` on), worker processes
(``soak_worker.py``) share one namespace:

- *holders* take two mutexes over and over (ttl 1 s) and write to a shared fenced
  resource with their tokens, twice per hold;
- *schedulers* run a one-shot scheduler (claim ttl 5 s) and a recurring job, while this
  test schedules one-shot jobs due within the next second.

Meanwhile the test injects faults in turn: SIGKILL of a holder holding a lock, SIGSTOP of a
holder for 1.6 × its ttl then SIGCONT, SIGKILL of a scheduler in the middle of a one-shot
callback, and restarts of the server (Redis: SHUTDOWN or SIGKILL; PostgreSQL: fast or
immediate shutdown — both safe with the durable settings above). Killed workers are
replaced. Then every scheduled job must fire, the workers stop, and the checker
(``clustersync.testing.checker``) verifies all holds, fenced writes, one-shot firings and
recurring runs.

Default: a short run (seconds) per store. ``CLUSTERSYNC_SOAK=1``: at least 10,000 checked
acquisitions per store (capped at 20 minutes per store), with figures printed and, if
``CLUSTERSYNC_SOAK_REPORT`` names a file, written there as JSON (see
docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

import clustersync as cs
from clustersync.testing.checker import (
    FenceWrite,
    Firing,
    HoldLog,
    Report,
    Run,
    SharedFencedResource,
    check,
)
from tests.conftest import shared_backends
from tests.servers import PostgresServer, RedisServer, ServerStarter

from .conftest import soak_mode

pytestmark = pytest.mark.slow
T = TypeVar("T")

WORKER = Path(__file__).with_name("soak_worker.py")
MUTEX_NAMES = ["soak-a", "soak-b"]
MUTEX_TTL = 1.0
CLAIM_TTL = 5.0
JOB_TTL = 5.0
#: Generous, for a loaded 2-core machine.
PATIENCE = 60.0


@dataclass(frozen=True)
class Budget:
    min_seconds: float
    max_seconds: float
    target_holds: int
    job_rate: float  # one-shot jobs scheduled per second
    fault_every: float
    holders: int = 3
    schedulers: int = 2


SHORT = Budget(min_seconds=8, max_seconds=25, target_holds=300, job_rate=5, fault_every=1.5)
SOAK = Budget(min_seconds=180, max_seconds=1200, target_holds=10_000, job_rate=3, fault_every=2)


def budget() -> Budget:
    return SOAK if soak_mode() else SHORT


@pytest.fixture(params=shared_backends())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


# -- workers and their logs ----------------------------------------------------------------


class Worker:
    """One worker process and the events of its log read so far."""

    def __init__(self, name: str, role: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.role = role
        self.proc = proc
        self.log = log
        self.events: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""
        self.killed_at: float | None = None

    def poll(self) -> list[dict[str, Any]]:
        """Read the events logged since the last call (complete lines only)."""
        try:
            with self.log.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        new = [json.loads(line) for line in lines]
        self.events += new
        return new

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def last(self, *kinds: str) -> dict[str, Any] | None:
        for event in reversed(self.events):
            if event["event"] in kinds:
                found: dict[str, Any] = event
                return found
        return None

    @property
    def holding(self) -> bool:
        """Whether the last hold event logged is an acquisition not yet ended."""
        last = self.last("acquired", "hold")
        return last is not None and last["event"] == "acquired"


@dataclass
class Soak:
    """One soak run on one store: workers, faults and everything to check."""

    kind: str
    url: str
    namespace: str
    directory: Path
    server: RedisServer | PostgresServer | None
    budget: Budget
    workers: list[Worker] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    #: (kind, start, end) of every fault injected, reference clock.
    fault_log: list[tuple[str, float, float]] = field(default_factory=list)
    scheduled: set[str] = field(default_factory=set)
    counter: Iterator[int] = field(default_factory=itertools.count)
    rng: random.Random = field(default_factory=lambda: random.Random(0x50A4))
    #: The workers' leases: mutexes, one-shot claims, the recurring job.
    mutex_ttl: float = MUTEX_TTL
    claim_ttl: float = CLAIM_TTL
    job_ttl: float = JOB_TTL
    #: Longest pause of a holder between its two writes of a hold.
    hold: float = 0.003

    @property
    def fence_path(self) -> Path:
        return self.directory / "fence.journal"

    @property
    def stop_path(self) -> Path:
        return self.directory / "stop"

    # -- workers ---------------------------------------------------------------------------

    def spawn(self, role: str, **overrides: Any) -> Worker:
        """Start a worker of ``role``; ``overrides`` replace entries of its config."""
        name = f"{role[0]}{next(self.counter)}"
        log = self.directory / f"{name}.events"
        config: dict[str, Any] = {
            "url": self.url,
            "namespace": self.namespace,
            "name": name,
            "log": str(log),
            "stop": str(self.stop_path),
            "lifetime": self.budget.max_seconds + 600,
        }
        if role == "holder":
            config |= {
                "names": MUTEX_NAMES,
                "ttl": self.mutex_ttl,
                "fence": str(self.fence_path),
                "hold": self.hold,
            }
        else:
            config |= {
                "claim_ttl": self.claim_ttl,
                "job_ttl": self.job_ttl,
                "interval": 0.25,
                "work": 0.03,
            }
        config |= overrides
        stderr = (self.directory / f"{name}.stderr").open("wb")
        with stderr:
            proc = subprocess.Popen(
                [sys.executable, str(WORKER), role, json.dumps(config)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        worker = Worker(name, role, proc, log)
        self.workers.append(worker)
        return worker

    def live(self, role: str) -> list[Worker]:
        return [w for w in self.workers if w.role == role and w.alive and w.killed_at is None]

    def poll(self) -> None:
        for worker in self.workers:
            worker.poll()

    def kill(self, worker: Worker) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.proc.pid, signal.SIGCONT)
            worker.proc.kill()
        worker.proc.wait(timeout=PATIENCE)
        worker.killed_at = time.monotonic()  # after its death: a safe end for its holds

    def kill_all(self) -> None:
        for worker in self.workers:
            if worker.alive:
                self.kill(worker)

    def diagnostics(self) -> str:
        parts = []
        for worker in self.workers:
            err = (self.directory / f"{worker.name}.stderr").read_text(errors="replace")
            if err.strip():
                parts.append(f"--- {worker.name} stderr:\n{err[-3000:]}")
        return "\n".join(parts)

    # -- one-shot jobs ---------------------------------------------------------------------

    def schedule_job(self, store: cs.Store) -> None:
        key = f"job-{len(self.scheduled)}"
        run_at = datetime.now(UTC) + timedelta(seconds=self.rng.uniform(0, 1.0))
        props = {"work": self.rng.uniform(0.02, 0.4)}
        jobs = cs.get_job_once_scheduler(store)
        deadline = time.monotonic() + PATIENCE
        failed = False
        while True:
            try:
                jobs.schedule_once(key, run_at, props)
                break
            except cs.DuplicateJobError:
                assert failed, f"{key} scheduled twice"
                break  # stored by the attempt whose answer was lost
            except cs.StoreUnavailableError:
                failed = True
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.scheduled.add(key)

    def firings(self) -> list[tuple[Worker, dict[str, Any]]]:
        return [(w, e) for w in self.workers for e in w.events if e["event"] == "fired"]

    def unfired(self) -> set[str]:
        return self.scheduled - {e["key"] for _, e in self.firings()}

    def in_flight(self, worker: Worker) -> bool:
        started = Counter(e["key"] for e in worker.events if e["event"] == "fired")
        done = Counter(e["key"] for e in worker.events if e["event"] == "finished")
        return started != done

    # -- faults ----------------------------------------------------------------------------

    def holding(self) -> Worker | None:
        """A live holder whose last event says it holds a mutex (polls up to 1 s)."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            self.poll()
            busy = [w for w in self.live("holder") if w.holding]
            if busy:
                return self.rng.choice(busy)
            time.sleep(0.0005)
        return None

    def fault_kill_holder(self) -> None:
        victim = self.holding() or self.rng.choice(self.live("holder"))
        self.kill(victim)
        self.faults["SIGKILL holder"] += 1
        self.spawn("holder")

    def fault_stop_holder(self) -> None:
        victim = self.holding() or self.rng.choice(self.live("holder"))
        victim.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(MUTEX_TTL * 1.6)
        finally:
            victim.proc.send_signal(signal.SIGCONT)
        self.faults["SIGSTOP holder past its ttl"] += 1

    def fault_kill_scheduler(self) -> None:
        deadline = time.monotonic() + 3.0
        victim = None
        while victim is None and time.monotonic() < deadline:
            self.poll()
            busy = [w for w in self.live("scheduler") if self.in_flight(w)]
            victim = self.rng.choice(busy) if busy else None
            if victim is None:
                time.sleep(0.01)
        kind = "SIGKILL scheduler mid-callback"
        if victim is None:
            victim = self.rng.choice(self.live("scheduler"))
            kind = "SIGKILL scheduler (idle)"
        self.kill(victim)
        self.faults[kind] += 1
        self.spawn("scheduler")

    def fault_restart(self) -> None:
        server = self.server
        assert server is not None
        crash = self.faults["restart"] % 2 == 1
        self.faults["restart"] += 1
        if isinstance(server, RedisServer):
            if crash:
                server.kill()
            else:
                server.stop()
            self.faults["Redis SIGKILL + restart" if crash else "Redis SHUTDOWN + restart"] += 1
        else:
            server.stop("immediate" if crash else "fast")
            name = "PostgreSQL immediate (crash)" if crash else "PostgreSQL fast"
            self.faults[name + " shutdown + restart"] += 1
        time.sleep(0.3)
        server.start()

    def faults_in_turn(self) -> Iterator[str]:
        kinds = ["kill_holder", "stop_holder", "kill_scheduler"]
        if self.server is not None:
            kinds.append("restart")
        return itertools.cycle(kinds)

    def inject(self, kind: str) -> None:
        began = time.monotonic()
        getattr(self, f"fault_{kind}")()
        self.fault_log.append((kind, began, time.monotonic()))

    def explain(self, violations: list[str]) -> str:
        """The faults and events around the first violations, for the failure message."""
        lines = [*violations[:20], "faults (kind, start, end):"]
        lines += [f"  {kind} {start:.6f} {end:.6f}" for kind, start, end in self.fault_log]
        lines.append(
            "killed: "
            + ", ".join(
                f"{w.name}@{w.killed_at:.6f}" for w in self.workers if w.killed_at is not None
            )
        )
        return "\n".join(lines) + "\n" + self.diagnostics()[-6000:]

    # -- the checked records ---------------------------------------------------------------

    def holds(self, writes: list[FenceWrite]) -> list[HoldLog]:
        """Every acquisition logged. A holder killed before logging the end of a hold may
        have released it already: its hold ends with its last action, the last fenced
        write it made with that token (it was killed before acting again)."""
        last_write = {(w.holder, w.name, w.token): w.at for w in writes}
        holds = []
        for worker in self.workers:
            if worker.role != "holder":
                continue
            ended = {(e["name"], e["token"]): e for e in worker.events if e["event"] == "hold"}
            for event in worker.events:
                if event["event"] != "acquired":
                    continue
                done = ended.get((event["name"], event["token"]))
                if done is not None:
                    end, lost = done["end"], done["lost"]
                else:  # killed while holding, or before logging the end of the hold
                    assert worker.killed_at is not None, f"{worker.name} never ended a hold"
                    key = (worker.name, event["name"], event["token"])
                    end, lost = last_write.get(key, event["start"]), False
                holds.append(
                    HoldLog(event["name"], event["token"], event["start"], end, worker.name, lost)
                )
        return holds

    def one_shot(self) -> tuple[list[Firing], dict[str, list[float]]]:
        firings = [Firing(e["key"], w.name, e["start"]) for w, e in self.firings()]
        crashes = {w.name: [w.killed_at] for w in self.workers if w.killed_at is not None}
        return firings, crashes

    def check(self) -> tuple[Report, list[Firing]]:
        """Judge every hold, fenced write, one-shot firing and recurring run logged (the
        workers have stopped); also returns the firings."""
        writes = SharedFencedResource.read(self.fence_path)
        firings, crashes = self.one_shot()
        report = check(
            holds=self.holds(writes),
            writes=writes,
            scheduled=self.scheduled,
            firings=firings,
            crashes=crashes,
            runs=self.runs(),
            raise_on_violation=False,
        )
        assert report.holds is not None
        assert report.writes is not None
        assert report.jobs is not None
        assert report.runs is not None
        return report, firings

    def runs(self) -> list[Run]:
        runs = []
        for worker in self.workers:
            if worker.role != "scheduler":
                continue
            ended = {e["start"]: e["end"] for e in worker.events if e["event"] == "run"}
            for event in worker.events:
                if event["event"] == "run_start":
                    # A run whose end was never logged was cut short by the kill (or its
                    # end not logged yet): its last sign of life is its start.
                    end = ended.get(event["start"], event["start"])
                    assert end != event["start"] or worker.killed_at is not None
                    runs.append(Run("soak-tick", event["start"], end, worker.name))
        return runs


def when_available(call: Callable[[], T]) -> T:
    """``call()``, retried while the store restarts."""
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            return call()
        except cs.StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def run_soak(soak: Soak, request: pytest.FixtureRequest) -> dict[str, Any]:
    b = soak.budget
    began = time.monotonic()
    for _ in range(b.holders):
        soak.spawn("holder")
    for _ in range(b.schedulers):
        soak.spawn("scheduler")
    deadline = time.monotonic() + PATIENCE
    while not all(w.last("ready") for w in soak.workers):
        soak.poll()
        for worker in soak.workers:
            assert worker.alive, f"{worker.name} died:\n{soak.diagnostics()}"
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)

    with cs.open_store(soak.url, namespace=soak.namespace) as store:
        faults = soak.faults_in_turn()
        started = time.monotonic()
        next_fault = started + b.fault_every
        next_job = started
        while True:
            now = time.monotonic()
            soak.poll()
            acquired = sum(1 for w in soak.workers for e in w.events if e["event"] == "acquired")
            elapsed = now - started
            if elapsed >= b.max_seconds or (
                elapsed >= b.min_seconds and acquired >= b.target_holds
            ):
                break
            if now >= next_job:
                soak.schedule_job(store)
                next_job = now + 1 / b.job_rate
            if now >= next_fault:
                soak.inject(next(faults))
                next_fault = time.monotonic() + b.fault_every
            for worker in soak.workers:
                if worker.killed_at is None and not worker.alive:
                    pytest.fail(f"{worker.name} died on its own:\n{soak.diagnostics()}")
            time.sleep(0.02)
        fault_phase = time.monotonic() - started

        # Drain: every scheduled job fires and completes (a run killed mid-callback runs
        # again once its claim expires): the store holds no job at all any more.
        deadline = time.monotonic() + CLAIM_TTL + PATIENCE
        while (
            soak.unfired()
            or any(soak.in_flight(w) for w in soak.live("scheduler"))
            or when_available(store._ops.next_job_delay) is not None
        ):
            assert time.monotonic() < deadline, f"never fired: {sorted(soak.unfired())}"
            time.sleep(0.1)
            soak.poll()
        soak.stop_path.touch()
        for worker in soak.workers:
            if worker.alive:
                try:
                    worker.proc.wait(timeout=PATIENCE)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"{worker.name} did not stop:\n{soak.diagnostics()}")
                assert worker.proc.returncode == 0, f"{worker.name}:\n{soak.diagnostics()}"
        soak.poll()
        pending = when_available(cs.get_job_once_scheduler(store).list_scheduled_jobs)

    report, _ = soak.check()
    assert report.holds is not None
    assert report.writes is not None
    assert report.jobs is not None
    assert report.runs is not None
    figures: dict[str, Any] = {
        "store": soak.kind,
        "mode": "soak" if soak_mode() else "short",
        "seconds": round(time.monotonic() - began, 1),
        "fault_phase_seconds": round(fault_phase, 1),
        "acquisitions_checked": report.holds.holds,
        "target_reached": report.holds.holds >= b.target_holds,
        "holds_lost_and_told": report.holds.lost,
        "overlaps_allowed_lost_and_told": report.holds.told_overlaps,
        "fenced_writes_accepted": report.writes.accepted,
        "fenced_writes_rejected": report.writes.rejected,
        "one_shot_scheduled": report.jobs.scheduled,
        "one_shot_fired": report.jobs.fired,
        "one_shot_lost": report.jobs.lost,
        "one_shot_run_twice_after_crash": report.jobs.run_twice,
        "one_shot_pending_at_end": len(pending),
        "recurring_runs": report.runs.runs,
        "faults": {k: v for k, v in sorted(soak.faults.items()) if k != "restart"},
        "violations": len(report.violations),
    }
    print(f"\nsoak figures: {json.dumps(figures)}")
    save_figures(figures)
    assert report.violations == [], soak.explain(report.violations)
    assert pending == []
    assert report.holds.holds >= min(b.target_holds, 100), "too few acquisitions to judge"
    return figures


def save_figures(figures: dict[str, Any]) -> None:
    path = os.environ.get("CLUSTERSYNC_SOAK_REPORT")
    if not path:
        return
    target = Path(path)
    data: dict[str, Any] = json.loads(target.read_text()) if target.exists() else {}
    data[figures["store"]] = figures
    target.write_text(json.dumps(data, indent=2) + "\n")


@pytest.mark.timeout(budget().max_seconds + 600)
def test_soak_under_faults(
    backend: str,
    tmp_path: Path,
    namespace: str,
    private_server: ServerStarter,
    request: pytest.FixtureRequest,
) -> None:
    server: RedisServer | PostgresServer | None = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'soak.db'}"
    elif backend in ("redis", "redis-notify"):
        server = private_server(
            RedisServer(persistence=True, extra_args=["--appendfsync", "always"])
        )
        url = server.url + ("?handoff=notify" if backend == "redis-notify" else "")
    else:
        server = private_server(PostgresServer(fsync=True))
        url = server.url + ("?handoff=advisory" if backend == "postgres-advisory" else "")
    soak = Soak(backend, url, namespace, tmp_path, server, budget())
    try:
        run_soak(soak, request)
    finally:
        soak.kill_all()
