"""PostgreSQL failovers under the safety checker: worker processes keep taking locks and
running jobs through the multi-host URL of a primary and a streaming standby while the
primary is SIGKILLed and the standby promoted, again and again (the killed node comes
back as the new standby each time).

The workers are those of the soak (``soak_worker.py``): three *holders* take two mutexes
(ttl 1 s) over and over and write twice per hold to a shared fenced resource; two
*schedulers* run a one-shot scheduler (claim ttl 5 s) and a recurring job, while this
test schedules one-shot jobs due within the next second. Every hold, fenced write,
firing and recurring run is judged by ``clustersync.testing.checker``.

Each failover is made lossy on purpose: the standby stops receiving WAL :data:`LAG`
seconds before the primary is killed (as if replication lagged that much at the crash),
and jobs keep being scheduled meanwhile. With synchronous replication those writes wait
for the standby and are never acknowledged (their callers retry on the new primary);
with asynchronous replication they are acknowledged and lost.

- **Synchronous replication** (``synchronous_commit=on`` with the standby in
  ``synchronous_standby_names``): nothing acknowledged is lost, so the checker must find
  no violation at all: no overlap, no token twice or backwards, no stale write
  accepted, every scheduled job fired, none fired twice.
- **Asynchronous replication**: a failover may lose the primary's last writes. What the
  contract still promises is asserted: no token handed out twice or going backwards
  (tokens are max(previous + 1, the server's clock)), no stale fenced write accepted,
  recurring runs and holds resume. What lost writes may cost — overlapping holds whose
  older holder was not told (its acquisition was lost and it released before its next
  renewal), jobs lost or run again — is counted, not failed.

Figures (printed, and written to ``CLUSTERSYNC_SOAK_REPORT`` if set): the unavailability
window of each failover (from the SIGKILL to the first acquisition after it, any
holder), acquisitions checked, jobs lost and run twice, job lateness. Default: 3
failovers per mode; ``CLUSTERSYNC_SOAK=1``: 12 (the figures of docs/reliability.md).
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import clustersync as cs
from clustersync.testing.checker import SharedFencedResource, check
from tests.test_postgres_ha import detach_standby
from tests.topologies import PostgresReplicated, TopologyStarter

from .conftest import soak_mode
from .test_soak import CLAIM_TTL, PATIENCE, Budget, Soak, save_figures, when_available

pytestmark = pytest.mark.slow

FAILOVERS = 12 if soak_mode() else 3
#: Seconds of normal work between failovers (after the standby was rebuilt).
BETWEEN = 1.5
#: How far behind the standby is when the primary dies (seconds of writes it misses).
LAG = 0.3
BUDGET = Budget(min_seconds=0, max_seconds=600, target_holds=0, job_rate=5, fault_every=0)
#: The longest unavailability window accepted (generous: a loaded 2-core machine).
WINDOW_LIMIT = 10.0
#: Violations a lost write explains (asynchronous replication): an acquisition, release
#: or job change acknowledged by the old primary and missing on the new one.
LOST_WRITE_EFFECTS = (
    r"overlapping holds: ",  # a lost acquisition: its holder released before a renewal
    r"write of token .* rejected \(a newer token wrote first\) but its hold was never told",
    r"one-shot job .* never fired$",  # a lost schedule
    r"one-shot job .* fired again on ",  # a lost claim or completion
    r"recurring job .*: concurrent runs ",  # a lost job lease: two instances ran it
)


def lost_write_effect(violation: str) -> bool:
    return any(re.match(pattern, violation) for pattern in LOST_WRITE_EFFECTS)


@dataclass
class Failovers(Soak):
    """A soak whose only fault is a failover of ``topology``."""

    topology: PostgresReplicated | None = None
    #: Reference time of each SIGKILL of the primary, and of each promotion.
    kills: list[float] = field(default_factory=list)
    promotions: list[float] = field(default_factory=list)
    #: Wall-clock due time of each job scheduled.
    due: dict[str, float] = field(default_factory=dict)
    #: The test's own store (it schedules the jobs).
    store: cs.Store | None = None

    def faults_in_turn(self) -> Iterator[str]:
        return itertools.repeat("failover")

    def fault_failover(self) -> None:
        topology = self.topology
        assert topology is not None
        store = self.store
        assert store is not None
        detach_standby(topology)
        # Jobs scheduled while the standby misses everything (from another thread: with
        # synchronous replication each call waits until the kill, then retries).
        lagging = threading.Event()

        def schedule() -> None:
            while not lagging.is_set():
                self.schedule_job(store)
                time.sleep(1 / self.budget.job_rate)

        scheduler = threading.Thread(target=schedule, daemon=True)
        scheduler.start()
        time.sleep(LAG)
        lagging.set()
        topology.kill_primary()
        self.kills.append(time.monotonic())
        topology.promote_standby()
        self.promotions.append(time.monotonic())
        scheduler.join(PATIENCE)
        assert not scheduler.is_alive(), "scheduling did not resume after the failover"
        self.faults["SIGKILL primary + promote standby"] += 1

    def schedule_job(self, store: cs.Store) -> None:
        key = f"job-{len(self.scheduled)}"
        run_at = datetime.now(UTC) + timedelta(seconds=self.rng.uniform(0, 1.0))
        props = {"work": self.rng.uniform(0.02, 0.2)}
        jobs = cs.get_job_once_scheduler(store)
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                jobs.schedule_once(key, run_at, props)
                break
            except cs.DuplicateJobError:
                break  # stored by an attempt whose answer was lost
            except cs.StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.scheduled.add(key)
        self.due[key] = run_at.timestamp()

    def windows(self) -> list[float]:
        """Per failover, seconds from the SIGKILL to the next acquisition (any holder)."""
        starts = sorted(
            e["start"] for w in self.workers if w.role == "holder" for e in w.events
            if e["event"] == "acquired"
        )  # fmt: skip
        found = []
        for kill in self.kills:
            after = [start for start in starts if start > kill]
            found.append(after[0] - kill if after else float("inf"))
        return found

    def lateness(self) -> list[float]:
        """Seconds from each job's due time to its first firing (wall clock)."""
        first: dict[str, float] = {}
        for _, event in self.firings():
            first[event["key"]] = min(event["wall"], first.get(event["key"], float("inf")))
        return [first[key] - self.due[key] for key in first if key in self.due]


def work(soak: Failovers, store: cs.Store, seconds: float) -> None:
    """Schedule jobs at the budget's rate for ``seconds``; fail if a worker died."""
    end = time.monotonic() + seconds
    next_job = time.monotonic()
    while time.monotonic() < end:
        if time.monotonic() >= next_job:
            soak.schedule_job(store)
            next_job = time.monotonic() + 1 / soak.budget.job_rate
        soak.poll()
        for worker in soak.workers:
            if not worker.alive:
                pytest.fail(f"{worker.name} died:\n{soak.diagnostics()}")
        time.sleep(0.02)


def run_failovers(soak: Failovers, synchronous: bool) -> dict[str, Any]:
    topology = soak.topology
    assert topology is not None
    began = time.monotonic()
    for _ in range(soak.budget.holders):
        soak.spawn("holder")
    for _ in range(soak.budget.schedulers):
        soak.spawn("scheduler")
    deadline = time.monotonic() + PATIENCE
    while not all(w.last("ready") for w in soak.workers):
        soak.poll()
        assert all(w.alive for w in soak.workers), soak.diagnostics()
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)

    rebuilds = []
    with cs.open_store(soak.url, namespace=soak.namespace) as store:
        soak.store = store
        for _ in range(FAILOVERS):
            work(soak, store, BETWEEN)
            soak.inject("failover")
            work(soak, store, 0.3)
            rebuilds.append(topology.rebuild_standby())
        work(soak, store, BETWEEN)
        # Drain: every job still stored fires and completes (a claim lost with its
        # scheduler's answer expires after CLAIM_TTL). In asynchronous mode a job whose
        # scheduling was lost never fires: it is counted, not awaited.
        deadline = time.monotonic() + CLAIM_TTL + PATIENCE
        while (
            (synchronous and soak.unfired())
            or any(soak.in_flight(w) for w in soak.live("scheduler"))
            or when_available(store._ops.next_job_delay) is not None
        ):
            assert time.monotonic() < deadline, f"never fired: {sorted(soak.unfired())}"
            time.sleep(0.1)
            soak.poll()
        soak.stop_path.touch()
        for worker in soak.workers:
            try:
                worker.proc.wait(timeout=PATIENCE)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{worker.name} did not stop:\n{soak.diagnostics()}")
            assert worker.proc.returncode == 0, f"{worker.name}:\n{soak.diagnostics()}"
        soak.poll()

    writes = SharedFencedResource.read(soak.fence_path)
    holds = soak.holds(writes)
    firings, crashes = soak.one_shot()
    if not synchronous:
        # A lost completion makes a job run again, as a crash of its runner would.
        crashes = {w.name: list(soak.kills) for w in soak.workers if w.role == "scheduler"}
    report = check(
        holds=holds,
        writes=writes,
        scheduled=soak.scheduled,
        firings=firings,
        crashes=crashes,
        runs=soak.runs(),
        raise_on_violation=False,
    )
    assert report.holds is not None
    assert report.writes is not None
    assert report.jobs is not None
    assert report.runs is not None
    excused = [v for v in report.violations if lost_write_effect(v)]
    windows = soak.windows()
    lateness = soak.lateness()
    figures: dict[str, Any] = {
        "store": f"postgres-failover-{'sync' if synchronous else 'async'}",
        "mode": "soak" if soak_mode() else "short",
        "seconds": round(time.monotonic() - began, 1),
        "failovers": len(soak.kills),
        "standby_behind_s": LAG,
        "kill_to_promoted_s": [
            round(p - k, 3) for k, p in zip(soak.kills, soak.promotions, strict=True)
        ],
        "rebuild_standby_s": [round(r, 2) for r in rebuilds],
        "unavailable_s": [round(w, 3) for w in windows],
        "unavailable_p50_s": round(statistics.median(windows), 3),
        "unavailable_max_s": round(max(windows), 3),
        "acquisitions_checked": report.holds.holds,
        "holds_lost_and_told": report.holds.lost,
        "fenced_writes_accepted": report.writes.accepted,
        "fenced_writes_rejected": report.writes.rejected,
        "one_shot_scheduled": report.jobs.scheduled,
        "one_shot_lost": report.jobs.lost,
        "one_shot_run_twice": report.jobs.run_twice,
        "job_lateness_p50_s": round(statistics.median(lateness), 3),
        "job_lateness_max_s": round(max(lateness), 3),
        "recurring_runs": report.runs.runs,
        "violations": len(report.violations),
        "violations_explained_by_lost_writes": len(excused),
    }
    print(f"\nfailover figures: {json.dumps(figures)}")
    save_figures(figures)
    explain = soak.explain(report.violations)
    if synchronous:
        assert report.violations == [], explain
        assert report.jobs.lost == 0, "an acknowledged one-shot job was lost"
    else:
        assert sorted(excused) == sorted(report.violations), explain
    # Waiting acquires resumed after every failover.
    assert max(windows) < WINDOW_LIMIT, windows
    assert report.holds.holds >= 100, "too few acquisitions to judge"
    return figures


@pytest.mark.parametrize("synchronous", [True, False], ids=["sync", "async"])
@pytest.mark.timeout(900 if soak_mode() else 240)
def test_failovers_under_the_checker(
    synchronous: bool, tmp_path: Path, private_topology: TopologyStarter
) -> None:
    topology = private_topology(PostgresReplicated(synchronous=synchronous))
    namespace = f"failover-{'sync' if synchronous else 'async'}"
    soak = Failovers("postgres", topology.url, namespace, tmp_path, None, BUDGET, topology=topology)
    try:
        run_failovers(soak, synchronous)
    finally:
        soak.kill_all()
