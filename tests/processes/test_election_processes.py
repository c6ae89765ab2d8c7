"""Election and Semaphore across real OS processes sharing one durable store.

The leader writes its term to a fenced resource shared by the processes (a journal file,
:class:`~clustersync.testing.checker.SharedFencedResource`) while it leads; leaders are
killed (SIGKILL), paused (SIGSTOP past their ttl) and resign. The checker then proves
that no two leaderships overlapped unless the older one was lost and its leader told
(``on_revoked``), and that the resource never accepted a stale term. Handoff times
(resign, crash) are printed (``pytest -s``) for docs/guide/election.md.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from clustersync.testing.checker import (
    HoldLog,
    SharedFencedResource,
    check_holds,
    check_slot_holds,
    check_writes,
)

from .harness import SOON, Cluster, Worker

pytestmark = pytest.mark.slow

TTL = 1.0


def latest_term(workers: list[Worker]) -> tuple[Worker, dict[str, Any]] | None:
    """The worker with the highest term elected so far, and that event."""
    best: tuple[Worker, dict[str, Any]] | None = None
    for worker in workers:
        for event in worker.events("elected"):
            if best is None or event["term"] > best[1]["term"]:
                best = (worker, event)
    return best


def next_leader(cluster: Cluster, workers: list[Worker], after: int) -> tuple[Worker, Any]:
    """Wait until some worker is elected with a term above ``after``."""
    deadline = time.monotonic() + SOON
    while time.monotonic() < deadline:
        found = latest_term(workers)
        if found is not None and found[1]["term"] > after:
            return found
        time.sleep(0.005)
    cluster.fail(f"no leader with a term above {after} within {SOON}s")


def same_term(term: int) -> Callable[[dict[str, Any]], bool]:
    return lambda event: bool(event["term"] == term)


def leaderships(worker: Worker, killed_at: float | None) -> list[HoldLog]:
    """The leaderships of one worker, from its events: from ``elected`` to its
    resignation, or to ``on_revoked`` (lost, told), or to its death."""
    holds: list[HoldLog] = []
    open_: dict[str, Any] | None = None
    for event in worker.events():
        kind = event["event"]
        if kind == "elected":
            open_ = event
        elif kind in ("resigning", "revoked") and open_ is not None:
            lost = kind == "revoked" and not event["resigned"]
            holds.append(
                HoldLog("leader", open_["term"], open_["t"], event["t"], worker.name, lost)
            )
            open_ = None
    if open_ is not None:
        assert killed_at is not None, f"{worker.name} still led at the end"
        holds.append(HoldLog("leader", open_["term"], open_["t"], killed_at, worker.name))
    return holds


def test_leaders_never_overlap_under_kills_pauses_and_resignations(cluster: Cluster) -> None:
    resource = cluster.dir / "resource.journal"

    def candidate(name: str) -> Worker:
        return cluster.spawn(
            name,
            "campaign",
            election="lead",
            ttl=TTL,
            resource=str(resource),
            resign=cluster.path(f"resign-{name}"),
            exit=cluster.path("exit"),
            rest=0.3,
            lifetime=120,
        )

    workers = [candidate(f"c{i}") for i in range(3)]
    for worker in workers:
        cluster.wait_for(worker, "ready")
    killed: dict[str, float] = {}
    handoffs: dict[str, list[float]] = {"resign": [], "crash": []}
    leader, elected = next_leader(cluster, workers, 0)
    spare = 3
    for action in ["resign", "kill", "stop", "resign", "kill", "resign", "stop", "resign"]:
        term = elected["term"]
        if action == "resign":
            cluster.command(f"resign-{leader.name}")
            resigning = cluster.wait_for(leader, "resigning", where=same_term(term))
            leader, elected = next_leader(cluster, workers, term)
            handoffs["resign"].append(elected["t"] - resigning[0]["t"])
        elif action == "kill":
            killed_at = time.monotonic()
            leader.signal(signal.SIGKILL)
            leader.proc.wait(timeout=SOON)
            killed[leader.name] = killed_at
            workers.append(candidate(f"c{spare}"))
            spare += 1
            leader, elected = next_leader(cluster, workers, term)
            handoffs["crash"].append(elected["t"] - killed_at)
        else:  # pause the leader past its ttl
            paused = leader
            paused.signal(signal.SIGSTOP)
            try:
                leader, elected = next_leader(cluster, workers, term)
                time.sleep(0.5)
            finally:
                paused.signal(signal.SIGCONT)
            cluster.wait_for(paused, "revoked", where=same_term(term))
    cluster.command("exit")
    for worker in workers:
        if worker.name not in killed:
            cluster.wait_for(worker, "stopped")

    holds = [h for w in workers for h in leaderships(w, killed.get(w.name))]
    report = check_holds(holds)
    writes = SharedFencedResource.read(resource)
    written = check_writes(writes, holds)
    assert report.holds >= 9
    assert report.lost >= 2, "the paused leaders were told they lost"
    assert written.accepted > 0
    terms = sorted(h.token for h in holds)
    assert terms == sorted(set(terms))
    for what, samples in handoffs.items():
        print(  # the figures of docs/guide/election.md
            f"\n[{cluster.backend}] {what} handoff: n={len(samples)}"
            f" p50={statistics.median(samples) * 1000:.1f} ms"
            f" max={max(samples) * 1000:.1f} ms"
        )
    assert max(handoffs["resign"]) < 1.5, handoffs
    assert max(handoffs["crash"]) < TTL + 1.5, handoffs


def test_semaphore_never_exceeds_its_limit_under_kills_and_pauses(cluster: Cluster) -> None:
    limit = 2

    def contender(name: str) -> Worker:
        return cluster.spawn(
            name,
            "slots",
            semaphore="pool",
            limit=limit,
            ttl=TTL,
            hold=0.05,
            exit=cluster.path("exit"),
            lifetime=120,
        )

    workers = [contender(f"s{i}") for i in range(4)]
    for worker in workers:
        cluster.wait_for(worker, "ready")
    time.sleep(1.0)

    def holding() -> Worker:
        """A worker inside its hold now (its latest event is ``acquired``)."""
        deadline = time.monotonic() + SOON
        while time.monotonic() < deadline:
            for worker in workers:
                events = worker.events()
                if worker.proc.poll() is None and events and events[-1]["event"] == "acquired":
                    return worker
            time.sleep(0.002)
        cluster.fail("nobody held a slot")

    killed: dict[str, float] = {}
    victim = holding()
    killed[victim.name] = time.monotonic()
    victim.signal(signal.SIGKILL)
    victim.proc.wait(timeout=SOON)
    workers.append(contender("s4"))
    time.sleep(1.0)
    paused = holding()
    paused.signal(signal.SIGSTOP)
    try:
        time.sleep(2.5 * TTL)
    finally:
        paused.signal(signal.SIGCONT)
    cluster.wait_for(paused, "hold", where=lambda e: e["lost"])
    time.sleep(1.0)
    cluster.command("exit")

    holds: list[HoldLog] = []
    for worker in workers:
        if worker.name not in killed:
            cluster.wait_exit(worker)
        started: dict[str, Any] | None = None
        for event in worker.events():
            if event["event"] == "acquired":
                started = event
            elif event["event"] == "hold":
                holds.append(
                    HoldLog(
                        "pool",
                        event["token"],
                        event["start"],
                        event["end"],
                        worker.name,
                        event["lost"],
                    )
                )
                started = None
        if started is not None and worker.name in killed:
            end = killed[worker.name]
            holds.append(HoldLog("pool", started["token"], started["start"], end, worker.name))
    report = check_slot_holds(holds, limit)
    assert report.holds > 20
    assert report.lost >= 1, "the paused holder was told it lost its slot"
    overlapping = 0
    ordered = sorted(holds, key=lambda h: h.start)
    for index, hold in enumerate(ordered):
        overlapping = max(overlapping, sum(1 for h in ordered[:index] if h.end > hold.start) + 1)
    assert overlapping >= 2, "the slots were never used at once"
