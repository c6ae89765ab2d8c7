"""Failovers of Redis Sentinel and Redis Cluster under load, judged by the safety checker.

Per topology (a private :class:`~tests.topologies.RedisSentinel` or
:class:`~tests.topologies.RedisClusterTopology`), two configurations run side by side, in
two namespaces served by the same master:

- ``min_replicas=1``: every write waits for the replica (``WAIT``);
- ``async``: asynchronous replication, the Redis default.

In each, worker processes (``soak_worker.py``) take two mutexes (ttl 2 s) over and over
and write to a shared fenced resource with their tokens — one of them holds for up to 3 s,
across renewals — and run one-shot schedulers and a recurring job. The test process
schedules one-shot jobs due within a second (they must fire) and far in the future (they
must still be stored at the end: an acknowledged write a failover lost is missing), and
probes the store every 20 ms (the unavailability window of a fault is the longest time
without an answer around it).

Faults, in turn: a forced failover (``SENTINEL FAILOVER``, after which the old master
stays a writable master for ~10 s until Sentinel demotes it; ``CLUSTER FAILOVER``),
SIGKILL of the master (restarted afterwards as a replica), and the master frozen with
``DEBUG SLEEP`` past the ttl (a failover happens meanwhile).

Asserted in both configurations: fencing tokens of a name never repeat and never go
backwards, no stale fenced write is accepted, the holders, schedulers and the waiting
acquires carry on after every failover. Asserted with ``min_replicas=1``: no violation of
any kind (a holder whose lease did not survive was told before anyone else wrote), every
acknowledged one-shot job is still there or fired exactly once. Measured in both (printed
as ``failover figures: {...}``, and written to the file ``CLUSTERSYNC_FAILOVER_REPORT``
names): unavailability per fault, acknowledged jobs lost, holds lost and told, checker
violations. Default: one round of each fault; ``CLUSTERSYNC_SOAK=1``: ten rounds (the
figures of docs/reliability.md).

Also here: tokens stay above every token handed out when the promoted replica lost the
old master's last writes (its replica was paused while they were made).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import clustersync as cs
from clustersync.stores.redis.sync import key_prefix
from clustersync.testing.checker import Firing
from tests.topologies import (
    RedisClusterTopology,
    RedisNode,
    RedisSentinel,
    Topology,
    TopologyStarter,
    wait_until,
)

from .conftest import soak_mode
from .test_soak import MUTEX_NAMES, SHORT, Soak, when_available

pytestmark = pytest.mark.slow

ROUNDS = 10 if soak_mode() else 1
#: Of each test; also the workers' lifetime (their watchdog's, the soak's is made for
#: shorter runs: ten Sentinel rounds take about seven minutes on a quiet machine).
TIMEOUT = 3600 if soak_mode() else 600
FAULTS = ("failover", "kill", "freeze")
MUTEX_TTL = 2.0
#: A freeze of the master past the mutexes' ttl (and past the failover detection).
FREEZE_SECONDS = 4.0
#: A recurring job's run survives a failover (its lease is longer than one).
JOB_TTL = 10.0
CLAIM_TTL = 5.0
PROBE_EVERY = 0.02
FEED_EVERY = 0.05
#: Generous, for a loaded 2-core machine.
PATIENCE = 60.0
#: The configurations, by label: the query added to the topology's URL.
CONFIGS = {"min_replicas=1": "?min_replicas=1", "async": ""}


@dataclass
class Config:
    """One configuration of a run: its workers (a :class:`Soak` for the bookkeeping) and
    what the test process records."""

    label: str
    run: Soak
    store: cs.Store | None = None
    #: far-future job key -> when its scheduling was acknowledged.
    far: dict[str, float] = field(default_factory=dict)
    #: due job key -> when its scheduling was acknowledged.
    acked: dict[str, float] = field(default_factory=dict)
    #: times (reference clock) the probe got an answer.
    answers: list[float] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


class Failovers:
    """A topology, its faults, and the two configurations running on it."""

    def __init__(self, topology: Topology, key: str, configs: list[Config]) -> None:
        self.topology = topology
        self.key = key  # of the namespaces' slot (Cluster)
        self.configs = configs
        self.stop = threading.Event()
        #: (fault, start, end) of every fault, reference clock.
        self.log: list[tuple[str, float, float]] = []

    # -- load ------------------------------------------------------------------------------

    def start(self) -> None:
        for config in self.configs:
            spawn = functools.partial(config.run.spawn, lifetime=TIMEOUT)
            spawn("holder")
            spawn("holder")
            # Holds across renewals, on a mutex of its own and one of the others.
            spawn("holder", hold=3.0, names=["long", MUTEX_NAMES[1]])
            spawn("scheduler")
            spawn("scheduler")
        deadline = time.monotonic() + PATIENCE
        for config in self.configs:
            run = config.run
            while not all(w.last("ready") for w in run.workers):
                run.poll()
                for worker in run.workers:
                    assert worker.alive, f"{worker.name} died:\n{run.diagnostics()}"
                assert time.monotonic() < deadline, "workers did not start"
                time.sleep(0.05)
            config.store = cs.open_store(run.url, namespace=run.namespace)
            for target in (self.feed, self.probe):
                thread = threading.Thread(target=self.guard, args=(config, target), daemon=True)
                thread.start()
                config.threads.append(thread)

    def guard(self, config: Config, target: Callable[[Config], None]) -> None:
        try:
            target(config)
        except BaseException as exc:
            config.errors.append(exc)

    def feed(self, config: Config) -> None:
        """One-shot jobs due within a second (fired by the workers) and a day later
        (counted at the end), each retried until acknowledged."""
        assert config.store is not None
        jobs = cs.get_job_once_scheduler(config.store)
        n = 0
        while not self.stop.is_set():
            due = f"due-{n}"
            schedule(jobs, due, datetime.now(UTC) + timedelta(seconds=0.1 + (n % 10) / 20))
            config.run.scheduled.add(due)
            config.acked[due] = time.monotonic()
            far = f"far-{n}"
            schedule(jobs, far, datetime.now(UTC) + timedelta(days=1))
            config.far[far] = time.monotonic()
            n += 1
            time.sleep(FEED_EVERY)

    def probe(self, config: Config) -> None:
        """Acquire and release a mutex every 20 ms; note when the store answered."""
        assert config.store is not None
        mutex = cs.Mutex(config.store, "probe", ttl=5)
        while not self.stop.is_set():
            try:
                if mutex.acquire(blocking=False):
                    mutex.release()
                config.answers.append(time.monotonic())
            except cs.ClusterSyncError:
                pass
            time.sleep(PROBE_EVERY)

    # -- faults ----------------------------------------------------------------------------

    def inject(self, fault: str) -> None:
        topology = self.topology
        topology_stable(topology)
        began = time.monotonic()
        if isinstance(topology, RedisSentinel):
            if fault == "failover":
                topology.failover()  # Sentinel demotes the old master itself (~10 s)
            elif fault == "kill":
                topology.kill_master()
                topology.restart_old_master()
            else:
                old = topology.master
                freeze = topology.freeze_master(FREEZE_SECONDS)
                topology.wait_for_new_master(old.address)
                freeze.join()
                topology.wait_for_stable()
        else:
            assert isinstance(topology, RedisClusterTopology)
            if fault == "failover":
                topology.failover(self.key)
            elif fault == "kill":
                topology.kill_master_of(self.key)
                topology.restart_killed()
            else:
                freeze = topology.freeze_master_of(self.key, FREEZE_SECONDS)
                topology.wait_for_new_master_of(self.key, freeze.node)
                freeze.join()
                topology.wait_for_stable()
        self.log.append((fault, began, time.monotonic()))
        time.sleep(1.0)  # the clients settle on the new master
        for config in self.configs:
            config.run.poll()
            for worker in config.run.workers:
                assert worker.alive, f"{worker.name} died:\n{config.run.diagnostics()}"
            assert not config.errors, config.errors

    # -- the end ---------------------------------------------------------------------------

    def resumed(self) -> None:
        """Every holder acquires again after the last fault (waiting acquires resume)."""
        last_fault_end = max(end for _, _, end in self.log)
        deadline = time.monotonic() + PATIENCE
        for config in self.configs:
            for worker in config.run.workers:
                if worker.role != "holder":
                    continue
                while not any(
                    e["event"] == "acquired" and e["start"] > last_fault_end for e in worker.events
                ):
                    assert time.monotonic() < deadline, (
                        f"{config.label}: {worker.name} did not acquire again after the"
                        f" last fault:\n{config.run.diagnostics()}"
                    )
                    time.sleep(0.05)
                    config.run.poll()

    def finish(self) -> dict[str, Any]:
        self.resumed()
        self.stop.set()
        for config in self.configs:
            for thread in config.threads:
                thread.join(PATIENCE)
            assert not config.errors, config.errors
        figures: dict[str, Any] = {
            "topology": self.topology.kind,
            "rounds": ROUNDS,
            "faults": [fault for fault, _, _ in self.log],
            "fault_seconds": [round(end - start, 2) for _, start, end in self.log],
        }
        for config in self.configs:
            figures[config.label] = self.judge(config)
        return figures

    def judge(self, config: Config) -> dict[str, Any]:
        run = config.run
        assert config.store is not None
        strict = config.label != "async"
        # Due jobs fire (those the failover lost never do: wait until nothing moves).
        quiet_since, fired = time.monotonic(), -1
        while run.unfired():
            run.poll()
            now_fired = len(run.scheduled) - len(run.unfired())
            if now_fired != fired:
                quiet_since, fired = time.monotonic(), now_fired
            if time.monotonic() - quiet_since > CLAIM_TTL + 5:
                break
            time.sleep(0.1)
        present = {
            job.key
            for job in when_available(cs.get_job_once_scheduler(config.store).list_scheduled_jobs)
        }
        far_lost = sorted(set(config.far) - present)
        config.store.close()
        run.stop_path.touch()
        for worker in run.workers:
            try:
                worker.proc.wait(timeout=PATIENCE)
            except subprocess.TimeoutExpired:
                worker.proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack
                time.sleep(1.0)
                events = "\n".join(json.dumps(e) for e in worker.events[-20:])
                pytest.fail(
                    f"{config.label}: {worker.name} did not stop; its last events:\n{events}\n"
                    + run.diagnostics()
                )
            assert worker.proc.returncode == 0, f"{worker.name}:\n{run.diagnostics()}"
        run.poll()
        report, firings = run.check()
        assert report.holds is not None
        assert report.writes is not None
        assert report.jobs is not None
        violations = report.violations
        token_violations = [v for v in violations if "token" in v.split(":", maxsplit=1)[0]]
        figures = {
            "acquisitions_checked": report.holds.holds,
            "holds_lost_and_told": report.holds.lost,
            "on_lost_calls": sum(
                1 for w in run.workers for e in w.events if e["event"] == "on_lost"
            ),
            "fenced_writes_accepted": report.writes.accepted,
            "fenced_writes_rejected": report.writes.rejected,
            "due_jobs_acknowledged": report.jobs.scheduled,
            "due_jobs_never_fired": report.jobs.lost,
            "due_jobs_run_twice": report.jobs.run_twice,
            "far_jobs_acknowledged": len(config.far),
            "far_jobs_lost": len(far_lost),
            "token_violations": len(token_violations),
            "violations": len(violations),
            "violation_kinds": dict(Counter(_kind_of(v) for v in violations)),
            "losses_by_fault": self.losses(config, far_lost, report.jobs.repeated, firings),
            "unavailable_seconds": {
                fault: [round(gap, 2) for gap in self.gaps(config, fault)] for fault in FAULTS
            },
        }
        explain = run.explain(violations) + f"\nfar jobs lost: {far_lost[:20]}"
        if violations and not strict:
            print(f"\n{config.label} (measured, not asserted):\n" + "\n".join(violations[:10]))
        # Both: tokens never repeat or go backwards, and nobody stopped working.
        assert token_violations == [], explain
        assert report.writes.accepted > 0
        if strict:
            assert violations == [], explain
            assert far_lost == [], explain
            assert report.jobs.lost == 0
        return figures

    def fault_at(self, moment: float) -> str:
        """The fault an event at ``moment`` follows (the last one injected up to a second
        after it: the clients may notice a fault before its helper starts timing it)."""
        found = "before any fault"
        for kind, start, _ in self.log:
            if start - 1.0 <= moment:
                found = kind
        return found

    def losses(
        self,
        config: Config,
        far_lost: list[str],
        repeated: Mapping[str, int],
        firings: list[Firing],
    ) -> dict[str, dict[str, int]]:
        """Per fault: acknowledged far jobs lost (by when they were acknowledged), due
        jobs never fired (by when they were acknowledged) and run twice (by their second
        run)."""
        found: dict[str, Counter[str]] = {}
        for key in far_lost:
            found.setdefault(self.fault_at(config.far[key]), Counter())["far_jobs_lost"] += 1
        fired = {f.key for f in firings}
        for key in sorted(config.run.scheduled - fired):
            moment = config.acked.get(key, 0.0)
            found.setdefault(self.fault_at(moment), Counter())["due_jobs_never_fired"] += 1
        for key in repeated:
            second = sorted(f.start for f in firings if f.key == key)[1]
            found.setdefault(self.fault_at(second), Counter())["due_jobs_run_twice"] += 1
        return {fault: dict(counts) for fault, counts in found.items()}

    def gaps(self, config: Config, fault: str) -> list[float]:
        """Per fault of that kind: the longest time without an answer to the probe that
        overlaps the fault (from its injection to a stable topology)."""
        answers = sorted(config.answers)
        found = []
        for kind, start, end in self.log:
            if kind != fault:
                continue
            gap = 0.0
            for before, after in itertools.pairwise(answers):
                if after >= start and before <= end:
                    gap = max(gap, after - before)
            found.append(gap)
        return found


def _kind_of(violation: str) -> str:
    """The kind of a checker violation, for the figures."""
    for kind in (
        "fired again",
        "never fired",
        "overlapping holds",
        "rejected",
        "stale write",
        "token",
        "overlap",
    ):
        if kind in violation:
            return kind
    return violation.split(":", maxsplit=1)[0]


def schedule(jobs: cs.JobOnceScheduler, key: str, run_at: datetime) -> None:
    """``schedule_once``, retried until acknowledged (an identical job stored by an
    attempt whose answer was lost is accepted again)."""
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            jobs.schedule_once(key, run_at, {"work": 0.01})
            return
        except cs.StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def topology_stable(topology: Topology) -> None:
    if isinstance(topology, RedisSentinel | RedisClusterTopology):
        topology.wait_for_stable()


def same_master_namespaces(topology: Topology, count: int) -> list[str]:
    """``count`` new namespaces whose keys live on the same master (Cluster: the same
    slot owner; Sentinel: there is one master)."""
    first = f"fo-{uuid.uuid4().hex[:10]}"
    found = [first]
    if isinstance(topology, RedisClusterTopology):
        home = topology.master_of(key_prefix(first))
        while len(found) < count:
            candidate = f"fo-{uuid.uuid4().hex[:10]}"
            if topology.master_of(key_prefix(candidate)) is home:
                found.append(candidate)
    else:
        found += [f"fo-{uuid.uuid4().hex[:10]}" for _ in range(count - 1)]
    return found


def save_figures(figures: dict[str, Any]) -> None:
    path = os.environ.get("CLUSTERSYNC_FAILOVER_REPORT")
    if not path:
        return
    target = Path(path)
    data: dict[str, Any] = json.loads(target.read_text()) if target.exists() else {}
    data[figures["topology"]] = figures
    target.write_text(json.dumps(data, indent=2) + "\n")


def summary(figures: dict[str, Any]) -> str:
    """One line per configuration and fault: unavailability p50/max."""
    lines = []
    for label in CONFIGS:
        for fault, gaps in figures[label]["unavailable_seconds"].items():
            if gaps:
                lines.append(
                    f"  {label} {fault}: unavailable p50 {statistics.median(gaps):.2f} s,"
                    f" max {max(gaps):.2f} s over {len(gaps)}"
                )
    return "\n".join(lines)


@pytest.fixture
def configs(tmp_path: Path) -> Iterator[Callable[[Topology, list[str]], list[Config]]]:
    made: list[Config] = []

    def make(topology: Topology, namespaces: list[str]) -> list[Config]:
        url = getattr(topology, "url")  # noqa: B009 - every Redis topology has one
        for (label, query), namespace in zip(CONFIGS.items(), namespaces, strict=True):
            directory = tmp_path / label.replace("=", "-")
            directory.mkdir()
            run = Soak(
                "redis",
                url + query,
                namespace,
                directory,
                None,
                SHORT,
                mutex_ttl=MUTEX_TTL,
                claim_ttl=CLAIM_TTL,
                job_ttl=JOB_TTL,
                hold=0.05,
            )
            made.append(Config(label, run))
        return made[-len(namespaces) :]

    yield make
    for config in made:
        with contextlib.suppress(Exception):
            if config.store is not None:
                config.store.close()
        config.run.kill_all()


def run_failovers(topology: Topology, key: str, configs: list[Config]) -> dict[str, Any]:
    failovers = Failovers(topology, key, configs)
    failovers.start()
    time.sleep(1.0)
    for _ in range(ROUNDS):
        for fault in FAULTS:
            failovers.inject(fault)
    figures = failovers.finish()
    print(f"\nfailover figures: {json.dumps(figures)}\n{summary(figures)}")
    save_figures(figures)
    return figures


@pytest.mark.timeout(TIMEOUT)
def test_sentinel_failovers_under_load(
    private_topology: TopologyStarter,
    configs: Callable[[Topology, list[str]], list[Config]],
) -> None:
    topology = private_topology(RedisSentinel())
    namespaces = same_master_namespaces(topology, len(CONFIGS))
    run_failovers(topology, "", configs(topology, namespaces))


@pytest.mark.timeout(TIMEOUT)
def test_cluster_failovers_under_load(
    private_topology: TopologyStarter,
    configs: Callable[[Topology, list[str]], list[Config]],
) -> None:
    topology = private_topology(RedisClusterTopology())
    namespaces = same_master_namespaces(topology, len(CONFIGS))
    run_failovers(topology, key_prefix(namespaces[0]), configs(topology, namespaces))


# -- tokens above everything handed out, when the last writes were lost --------------------


def _lose_the_last_writes(
    replica: RedisNode, master: RedisNode, write: Callable[[], None]
) -> float:
    """Pause ``replica`` and cut its link (what it received before stays in its socket),
    ``write`` on the master (acknowledged, never replicated), kill the master, resume the
    replica. Returns when the master died."""
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        with master.client() as client:
            assert int(client.execute_command("CLIENT", "KILL", "TYPE", "replica")) == 1
        write()
        master.kill()
        return time.monotonic()
    finally:
        os.kill(replica.pid, signal.SIGCONT)


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
@pytest.mark.timeout(120)
def test_tokens_stay_above_the_tokens_a_failover_lost(
    kind: str, private_topology: TopologyStarter
) -> None:
    topology: RedisSentinel | RedisClusterTopology = private_topology(
        RedisSentinel() if kind == "sentinel" else RedisClusterTopology()
    )
    namespace = f"lost-{uuid.uuid4().hex[:8]}"
    fence = key_prefix(namespace) + "f:m:m"
    with cs.open_store(topology.url, namespace=namespace) as store:
        mutex = cs.Mutex(store, "m", ttl=5)
        with mutex:
            first = mutex.token
        topology.wait_replicated()
        if isinstance(topology, RedisSentinel):
            master = topology.master
            replica = topology.replicas[0]
        else:
            master = topology.master_of(fence)
            replica = topology.replicas_of(master)[0]
        lost: list[int] = []

        def write() -> None:
            for _ in range(20):
                with mutex:
                    assert mutex.token is not None
                    lost.append(mutex.token)

        _lose_the_last_writes(replica, master, write)
        if isinstance(topology, RedisSentinel):
            topology.wait_for_new_master(master.address)
        else:
            wait_until(
                lambda: replica.role()[0] == "master", timeout=30, what="the replica's promotion"
            )
        with replica.client() as client:
            assert client.get(fence) == str(first), "the promoted replica lost the last tokens"
        assert mutex.acquire(timeout=30)
        try:
            assert mutex.token is not None
            assert mutex.token > max(lost), (mutex.token, lost)
        finally:
            mutex.release()
    assert lost == sorted(set(lost))
