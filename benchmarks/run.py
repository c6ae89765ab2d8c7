"""clustersync side by side with peer libraries and the physical limit.

One command::

    benchmarks/setup.sh && .venv-bench/bin/python benchmarks/run.py [--quick]

``setup.sh`` creates ``.venv-bench`` (clustersync with its extras, plus the peers and
tools of the ``bench`` dependency group). ``run.py`` starts a private Redis and a private
PostgreSQL (``tests/servers.py``: loopback, free ports, temporary directories, fsync off
like the tests) and a temporary SQLite file, runs the scenarios with the peers
interleaved in rounds, and writes:

- ``benchmarks/results/latest.json`` — every raw number (per round) and the medians;
- ``docs/benchmarks/*.png`` — one plot per scenario;
- ``docs/benchmarks.md`` — the report: command, machine, versions, raw numbers, ratio
  tables against the peers and the round-trip floor, targets met or missed.

Scenarios (numbers in the report are medians over rounds of per-round percentiles):

1. raw round trip (hot: back to back; cold: after 20-80 ms idle) — the floor;
2. uncontended acquire+release (one process);
3. handoff between two processes (``benchmarks/handoff.py`` protocol, one monotonic clock);
4. contended throughput of 4 processes (acq/s, Jain fairness, safety violations);
5. crash takeover after SIGKILL of the holder (ttl=2 s, and default ttls in full runs);
6. one-shot jobs with 3 scheduler processes: lateness, cross-instance discovery,
   schedule throughput, and scheduler memory / lateness with many pending jobs;
7. recurring job with 3 instances: start skew and interval accuracy.

``--quick`` (about 4 minutes) runs fewer rounds and samples and skips the default-ttl
crash runs and the 100k/1M pending-job runs; a full run takes about 20 minutes on a
2-core machine. ``--only 1,2,3`` runs a subset; ``--report-only`` rewrites the report
and plots from ``latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import queue
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import bench_common as bc
import bench_jobs as bj
import bench_locks as bl
import handoff

ROOT = bc.ROOT
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
COMMAND = "benchmarks/setup.sh && .venv-bench/bin/python benchmarks/run.py"


@dataclass(frozen=True)
class Budget:
    """Rounds and sample counts of one mode."""

    rounds: int
    rtt_hot: int
    rtt_cold: int
    uncontended: int
    handoffs: int
    contended_seconds: float
    crash_rounds: int
    crash_default_ttl: bool
    job_rounds: int
    lateness_jobs: int
    lateness_spread: float
    discovery_jobs: int
    throughput_single: int
    throughput_batch: int
    batch_size: int
    scaling: dict[str, tuple[int, ...]]
    recurring_seconds: float


QUICK = Budget(
    rounds=2,
    rtt_hot=500,
    rtt_cold=25,
    uncontended=300,
    handoffs=30,
    contended_seconds=1.5,
    crash_rounds=1,
    crash_default_ttl=False,
    job_rounds=1,
    lateness_jobs=40,
    lateness_spread=2.0,
    discovery_jobs=20,
    throughput_single=500,
    throughput_batch=5000,
    batch_size=1000,
    scaling={"redis": (10_000,), "postgres": (10_000,), "sqlite": (10_000,)},
    recurring_seconds=5.0,
)
FULL = Budget(
    rounds=3,
    rtt_hot=2000,
    rtt_cold=60,
    uncontended=1000,
    handoffs=80,
    contended_seconds=3.0,
    crash_rounds=3,
    crash_default_ttl=True,
    job_rounds=2,
    lateness_jobs=150,
    lateness_spread=5.0,
    discovery_jobs=60,
    throughput_single=2000,
    throughput_batch=20000,
    batch_size=1000,
    scaling={
        "redis": (10_000, 100_000, 1_000_000),
        "postgres": (10_000, 100_000, 1_000_000),
        "sqlite": (10_000, 100_000),
    },
    recurring_seconds=12.0,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- servers and contenders ---------------------------------------------------------------


@dataclass(frozen=True)
class Stores:
    redis: str
    postgres: str
    sqlite: str

    def url(self, store: str) -> str:
        return str(getattr(self, store))


@contextlib.contextmanager
def private_stores() -> Iterator[tuple[Stores, Path | None]]:
    sys.path.insert(0, str(ROOT))  # tests/servers.py: the private test servers
    from tests.servers import PostgresServer, RedisServer, find_postgres_bindir

    with (
        RedisServer() as redis_srv,
        PostgresServer(settings={"max_connections": "300"}) as pg_srv,
        tempfile.TemporaryDirectory(prefix="clustersync-bench-") as tmp,
    ):
        sqlite_url = f"sqlite:///{Path(tmp).absolute()}/bench.db"
        yield Stores(redis_srv.url, pg_srv.url, sqlite_url), find_postgres_bindir()


def lock_specs(stores: Stores) -> list[bl.LockSpec]:
    return [
        bl.LockSpec(
            "cs-redis", "clustersync", "redis", "clustersync", stores.redis, default_ttl=15
        ),
        bl.LockSpec(
            "cs-redis-notify",
            "clustersync handoff=notify",
            "redis",
            "clustersync",
            stores.redis + "?handoff=notify",
            default_ttl=15,
        ),
        bl.LockSpec("redis-py", "redis-py Lock", "redis", "redis-py", stores.redis),
        bl.LockSpec(
            "python-redis-lock", "python-redis-lock", "redis", "python-redis-lock", stores.redis
        ),
        bl.LockSpec("pottery", "pottery Redlock", "redis", "pottery", stores.redis, default_ttl=10),
        bl.LockSpec(
            "cs-postgres", "clustersync", "postgres", "clustersync", stores.postgres, default_ttl=15
        ),
        bl.LockSpec(
            "cs-postgres-advisory",
            "clustersync handoff=advisory",
            "postgres",
            "clustersync",
            stores.postgres + "?handoff=advisory",
            default_ttl=15,
        ),
        bl.LockSpec("pg-advisory", "advisory lock", "postgres", "pg-advisory", stores.postgres),
        bl.LockSpec(
            "cs-sqlite", "clustersync", "sqlite", "clustersync", stores.sqlite, default_ttl=15
        ),
    ]


def job_specs(stores: Stores) -> list[bj.JobSpec]:
    return [
        bj.JobSpec("cs-redis", "clustersync", "redis", "clustersync", stores.redis),
        bj.JobSpec("cs-postgres", "clustersync", "postgres", "clustersync", stores.postgres),
        bj.JobSpec("cs-sqlite", "clustersync", "sqlite", "clustersync", stores.sqlite),
        bj.JobSpec("apscheduler", "APScheduler 4", "postgres", "apscheduler", stores.postgres),
        bj.JobSpec("procrastinate", "procrastinate", "postgres", "procrastinate", stores.postgres),
    ]


def ns() -> str:
    return "bench-" + uuid.uuid4().hex[:10]


# -- scenario 1: raw round trip -----------------------------------------------------------


def scenario_floors(stores: Stores, budget: Budget) -> bc.Json:
    out: bc.Json = {}
    per_round: dict[str, list[bc.Json]] = {}
    for round_no in range(budget.rounds):
        for store in bc.rotated(["redis", "postgres", "sqlite"], round_no):
            with handoff.raw_client(stores.url(store)) as (what, call):
                hot = handoff.timed(call, budget.rtt_hot, None)
                cold = handoff.timed(call, budget.rtt_cold, handoff.COLD_IDLE)
            out.setdefault(store, {"what": what})
            per_round.setdefault(store + ":hot", []).append(bc.stats_ms(hot))
            per_round.setdefault(store + ":cold", []).append(bc.stats_ms(cold))
    for key, rounds in per_round.items():
        store, kind = key.split(":")
        out[store][kind] = bc.median_of_rounds(rounds)
        out[store][kind + "_rounds"] = rounds
    return out


# -- scenario 2: uncontended --------------------------------------------------------------


def scenario_uncontended(specs: list[bl.LockSpec], budget: Budget) -> bc.Json:
    variants = [*specs]
    for base in [s for s in specs if s.kind == "python-redis-lock"]:
        variants.insert(
            variants.index(base) + 1,
            replace(
                base,
                id="python-redis-lock-noexpiry",
                label="python-redis-lock (no expiry)",
                no_expiry=True,
                renewal=False,
            ),
        )
    locks = {}
    try:
        for variant in variants:
            spec = replace(variant, namespace=ns())
            locks[spec.id] = (spec, bl.open_lock(spec, "uncontended", 15.0))
        rounds: dict[str, list[bc.Json]] = {}
        for round_no in range(budget.rounds):
            for ident in bc.rotated(list(locks), round_no):
                lock = locks[ident][1]

                def acquire_release(lock: bl.LockAdapter = lock) -> None:
                    lock.acquire()
                    lock.release()

                samples = handoff.timed(acquire_release, budget.uncontended, None)
                rounds.setdefault(ident, []).append(bc.stats_ms(samples))
    finally:
        for _, lock in locks.values():
            with contextlib.suppress(Exception):
                lock.close()
    return {
        ident: {
            **_describe(locks[ident][0]),
            **bc.median_of_rounds(per_round),
            "per_round": per_round,
        }
        for ident, per_round in rounds.items()
    }


def _describe(spec: bl.LockSpec) -> bc.Json:
    return {"label": spec.label, "store": spec.store, "kind": spec.kind}


# -- scenario 3: handoff ------------------------------------------------------------------


def handoff_round(spec: bl.LockSpec, plan: handoff.Plan) -> list[float]:
    a_end, b_end = bc.ctx().Pipe()
    results = [bc.ctx().Pipe(duplex=False) for _ in range(2)]
    name = "handoff-" + uuid.uuid4().hex[:6]
    procs = [
        bc.start_process(
            bl.handoff_worker, spec, name, end, res[1], plan, first, name=f"handoff-{spec.id}"
        )
        for end, res, first in ((a_end, results[0], True), (b_end, results[1], False))
    ]
    with bc.processes(procs):
        latencies: list[float] = []
        deadline = time.monotonic() + plan.rounds * (plan.settle + 0.6) + 30
        for receiver, _ in results:
            latencies.extend(_receive(receiver, procs, deadline))
        return latencies


def _receive(conn: Connection, procs: list[Any], deadline: float) -> Any:
    while not conn.poll(0.2):
        failed = [p.name for p in procs if p.exitcode not in (None, 0)]
        if failed:
            raise RuntimeError(f"worker {failed} failed (see its traceback above)")
        if time.monotonic() > deadline:
            raise TimeoutError("workers did not report in time")
    return conn.recv()


def scenario_handoff(specs: list[bl.LockSpec], budget: Budget) -> bc.Json:
    plan = handoff.Plan(budget.handoffs, settle=0.02)
    rounds: dict[str, list[bc.Json]] = {}
    samples: dict[str, list[float]] = {}
    by_id = {s.id: replace(s, namespace=ns()) for s in specs}
    for round_no in range(budget.rounds):
        for ident in bc.rotated(list(by_id), round_no):
            latencies = handoff_round(by_id[ident], plan)
            rounds.setdefault(ident, []).append(bc.stats_ms(latencies))
            samples.setdefault(ident, []).extend(latencies)
    return {
        ident: {
            **_describe(by_id[ident]),
            **bc.median_of_rounds(per_round),
            "per_round": per_round,
            "samples_ms": [bc.ms(x) for x in samples[ident]],
        }
        for ident, per_round in rounds.items()
    }


# -- scenario 4: contended throughput -----------------------------------------------------

WORKERS = 4


def contended_round(spec: bl.LockSpec, seconds: float) -> bc.Json:
    shared = bc.ctx().RawArray("q", 4)
    name = "contended-" + uuid.uuid4().hex[:6]
    pipes = [bc.ctx().Pipe() for _ in range(WORKERS)]
    procs = [
        bc.start_process(
            bl.contended_worker, spec, name, i, shared, seconds, child, name=f"cont-{spec.id}-{i}"
        )
        for i, (_, child) in enumerate(pipes)
    ]
    with bc.processes(procs, timeout=15):
        deadline = time.monotonic() + 60
        for parent, _ in pipes:
            assert _receive(parent, procs, deadline) == "ready"
        start_at = time.monotonic() + 0.2
        for parent, _ in pipes:
            parent.send(start_at)
        counts = [int(_receive(parent, procs, deadline + seconds)) for parent, _ in pipes]
        elapsed = time.monotonic() - start_at
    total = sum(counts)
    return {
        "acq_per_s": round(total / elapsed, 1),
        "jain": bc.jain(counts),
        "min_max": round(min(counts) / max(counts), 4) if max(counts) else 0.0,
        "violations": int(shared[bl.VIOLATIONS]),
        "counts": counts,
        "seconds": round(elapsed, 3),
    }


def scenario_contended(specs: list[bl.LockSpec], budget: Budget) -> bc.Json:
    rounds: dict[str, list[bc.Json]] = {}
    by_id = {s.id: replace(s, namespace=ns()) for s in specs}
    for round_no in range(budget.rounds):
        for ident in bc.rotated(list(by_id), round_no):
            rounds.setdefault(ident, []).append(
                contended_round(by_id[ident], budget.contended_seconds)
            )
    return {
        ident: {
            **_describe(by_id[ident]),
            **bc.median_of_rounds(per_round),
            "violations": sum(r["violations"] for r in per_round),
            "per_round": per_round,
        }
        for ident, per_round in rounds.items()
    }


# -- scenario 5: crash takeover -----------------------------------------------------------


@dataclass
class CrashRun:
    spec: bl.LockSpec
    variant: str
    ttl: float | None
    holder: Any = None
    waiter: Any = None
    holder_conn: Connection | None = None
    waiter_conn: Connection | None = None
    killed_at: float = 0.0


def crash_variants(specs: list[bl.LockSpec], default: bool) -> tuple[list[CrashRun], bc.Json]:
    """The runs of one round, and the peers that cannot take part (with the reason)."""
    runs: list[CrashRun] = []
    cannot: bc.Json = {}
    for spec in specs:
        if spec.kind == "pg-advisory":
            runs.append(CrashRun(spec, "session", None))  # no ttl: freed with the session
            continue
        runs.append(CrashRun(spec, "ttl=2s", 2.0))
        if default:
            if spec.default_ttl is None:
                cannot[spec.id] = "no expiry by default: a crashed holder keeps the lock forever"
            else:
                runs.append(CrashRun(spec, f"default ttl={spec.default_ttl:g}s", spec.default_ttl))
    return runs, cannot


def scenario_crash(specs: list[bl.LockSpec], budget: Budget) -> bc.Json:
    by_id = {s.id: replace(s, namespace=ns()) for s in specs}
    results: dict[str, dict[str, list[float]]] = {}
    cannot: bc.Json = {}
    timeouts: list[str] = []
    for round_no in range(budget.crash_rounds):
        with_default = budget.crash_default_ttl and round_no == 0
        runs, cannot_now = crash_variants(list(by_id.values()), with_default)
        cannot.update(cannot_now)
        # All runs of a round at once: they mostly sleep until a lease expires.
        procs: list[Any] = []
        with bc.processes(procs, timeout=1):
            for run in runs:
                name = "crash-" + uuid.uuid4().hex[:6]
                parent, child = bc.ctx().Pipe()
                run.holder_conn = parent
                run.holder = bc.start_process(
                    bl.crash_holder, run.spec, name, run.ttl, child, name=f"holder-{run.spec.id}"
                )
                procs.append(run.holder)
                assert _receive(parent, procs, time.monotonic() + 30) == "held"
                wparent, wchild = bc.ctx().Pipe()
                run.waiter_conn = wparent
                run.waiter = bc.start_process(
                    bl.crash_waiter, run.spec, name, run.ttl, wchild, name=f"waiter-{run.spec.id}"
                )
                procs.append(run.waiter)
                assert _receive(wparent, procs, time.monotonic() + 30) == "blocking"
            time.sleep(0.3)  # every waiter is blocked in acquire by now
            for run in runs:
                run.killed_at = time.monotonic()
                bl.kill(run.holder.pid)
            longest = max((r.ttl or 0.0) for r in runs)
            deadline = time.monotonic() + longest + 10
            for run in runs:
                assert run.waiter_conn is not None
                label = run.variant
                try:
                    acquired_at = _receive(run.waiter_conn, [run.waiter], deadline)
                except (TimeoutError, RuntimeError):
                    timeouts.append(f"{run.spec.id} {label}")
                    continue
                results.setdefault(run.spec.id, {}).setdefault(label, []).append(
                    acquired_at - run.killed_at
                )
    out: bc.Json = {"cannot": cannot, "timeouts": timeouts, "results": {}}
    for ident, variants in results.items():
        out["results"][ident] = {
            **_describe(by_id[ident]),
            "variants": {
                label: {
                    "median_s": round(sorted(values)[len(values) // 2], 4),
                    "max_s": round(max(values), 4),
                    "samples_s": [round(v, 4) for v in values],
                }
                for label, values in variants.items()
            },
        }
    return out


# -- scenario 6: one-shot jobs ------------------------------------------------------------


class Fires:
    """Every firing reported on the events queue: key -> [(wall, mono, scheduler)]."""

    def __init__(self, events: Any) -> None:
        self.events = events
        self.seen: dict[str, list[tuple[float, float, int]]] = {}

    def wait_for(self, keys: set[str], timeout: float) -> set[str]:
        """Collect until every key fired once (or ``timeout``); the keys still missing."""
        deadline = time.monotonic() + timeout
        missing = {k for k in keys if k not in self.seen}
        while missing and time.monotonic() < deadline:
            try:
                key, wall, mono, index = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.setdefault(key, []).append((wall, mono, index))
            missing.discard(key)
        return missing

    def drain(self, seconds: float) -> None:
        """Collect for ``seconds`` more (to see duplicate firings)."""
        self.wait_for({"never-" + uuid.uuid4().hex}, seconds)


class Cluster:
    """A producer process and up to 3 scheduler processes of one implementation."""

    def __init__(self, spec: bj.JobSpec) -> None:
        self.spec = spec
        self.events = bc.ctx().Queue()
        self.fires = Fires(self.events)
        self.procs: list[Any] = []
        self.schedulers: list[tuple[Any, Connection]] = []
        parent, child = bc.ctx().Pipe()
        self.producer_conn = parent
        self.producer = bc.start_process(bj.producer_process, spec, child, name="producer")
        self.procs.append(self.producer)
        assert _receive(parent, self.procs, time.monotonic() + 60) == "ready"

    def ask(self, *command: Any, timeout: float = 300) -> Any:
        self.producer_conn.send(command)
        return _receive(self.producer_conn, self.procs, time.monotonic() + timeout)

    def start_schedulers(
        self, count: int = 3, target: Callable[..., None] | None = None, *extra: Any
    ) -> None:
        for index in range(count):
            parent, child = bc.ctx().Pipe()
            if target is None:
                proc = bc.start_process(
                    bj.scheduler_process, self.spec, index, self.events, child, None,
                    name=f"scheduler-{index}",
                )  # fmt: skip
            else:
                proc = bc.start_process(
                    target, self.spec, index, self.events, *extra, child, name=f"sched-{index}"
                )
            self.procs.append(proc)
            self.schedulers.append((proc, parent))
        for _, parent in self.schedulers:
            assert _receive(parent, self.procs, time.monotonic() + 60) == "started"

    def stop_schedulers(self) -> None:
        for _, parent in self.schedulers:
            with contextlib.suppress(OSError):
                parent.send("stop")
        for proc, parent in self.schedulers:
            with contextlib.suppress(Exception):
                _receive(parent, [proc], time.monotonic() + 20)
        bc.stop_processes([proc for proc, _ in self.schedulers], 5)
        self.schedulers = []

    def close(self) -> None:
        self.stop_schedulers()
        with contextlib.suppress(OSError):
            self.producer_conn.send(("quit",))
        bc.stop_processes(self.procs, 10)


def one_shot_round(spec: bj.JobSpec, budget: Budget) -> bc.Json:
    out: bc.Json = {}
    cluster = Cluster(spec)
    try:
        single = cluster.ask("throughput", budget.throughput_single, 0)
        batch = cluster.ask("throughput", budget.throughput_batch, budget.batch_size)
        out["throughput_isolated"] = {"single": single, "batch": batch}
        cluster.start_schedulers()
        time.sleep(0.5)
        # lateness
        lead = 0.5
        planned: dict[str, float] = cluster.ask(
            "lateness", budget.lateness_jobs, lead, budget.lateness_spread
        )
        missing = cluster.fires.wait_for(set(planned), lead + budget.lateness_spread + 15)
        late = [cluster.fires.seen[k][0][0] - planned[k] for k in planned if k not in missing]
        out["lateness"] = {
            **bc.stats_ms([max(0.0, x) for x in late]),
            "early": sum(1 for x in late if x < 0),
            "earliest_ms": bc.ms(min(late)) if late else None,
            "missing": len(missing),
            "samples_ms": [bc.ms(x) for x in late],
        }
        # discovery: scheduled by the producer (no scheduler running there), due now
        started: dict[str, float] = cluster.ask("discovery", budget.discovery_jobs)
        missing = cluster.fires.wait_for(set(started), 15)
        disc = [cluster.fires.seen[k][0][1] - started[k] for k in started if k not in missing]
        out["discovery"] = {
            **bc.stats_ms(disc),
            "missing": len(missing),
            "samples_ms": [bc.ms(x) for x in disc],
        }
        # throughput while the 3 schedulers run
        single = cluster.ask("throughput", budget.throughput_single, 0)
        batch = cluster.ask("throughput", budget.throughput_batch, budget.batch_size)
        out["throughput_running"] = {"single": single, "batch": batch}
        cluster.fires.drain(0.5)
        out["duplicates"] = sum(1 for fired in cluster.fires.seen.values() if len(fired) > 1)
    finally:
        cluster.close()
    return out


def scenario_one_shot(specs: list[bj.JobSpec], budget: Budget) -> bc.Json:
    rounds: dict[str, list[bc.Json]] = {}
    errors: dict[str, str] = {}
    for round_no in range(budget.job_rounds):
        for ident in bc.rotated([s.id for s in specs], round_no):
            spec = next(s for s in specs if s.id == ident)
            spec = replace(spec, namespace=ns())
            log(f"  one-shot jobs: {ident} round {round_no + 1}")
            try:
                rounds.setdefault(ident, []).append(one_shot_round(spec, budget))
            except Exception as exc:
                errors[ident] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
    out: bc.Json = {"errors": errors, "results": {}}
    for ident, per_round in rounds.items():
        spec = next(s for s in specs if s.id == ident)
        out["results"][ident] = {
            "label": spec.label,
            "store": spec.store,
            "kind": spec.kind,
            "lateness": _median_section(per_round, "lateness"),
            "discovery": _median_section(per_round, "discovery"),
            "early": sum(r["lateness"]["early"] for r in per_round),
            "earliest_ms": min(
                (
                    r["lateness"]["earliest_ms"]
                    for r in per_round
                    if r["lateness"]["earliest_ms"] is not None
                ),
                default=None,
            ),
            "duplicates": sum(r["duplicates"] for r in per_round),
            "throughput": {
                mode: {
                    kind: _median_rate([r[mode][kind] for r in per_round])
                    for kind in ("single", "batch")
                }
                for mode in ("throughput_isolated", "throughput_running")
            },
            "samples_ms": {
                "lateness": [x for r in per_round for x in r["lateness"]["samples_ms"]],
                "discovery": [x for r in per_round for x in r["discovery"]["samples_ms"]],
            },
            "per_round": [_without_samples(r) for r in per_round],
        }
    return out


def _median_section(rounds: list[bc.Json], section: str) -> bc.Json:
    return bc.median_of_rounds([dict(r[section]) for r in rounds])


def _median_rate(results: list[bc.Json]) -> bc.Json:
    unsupported = [r["unsupported"] for r in results if "unsupported" in r]
    if unsupported:
        return {"unsupported": unsupported[0]}
    return bc.median_of_rounds(results)


def _without_samples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_samples(v) for k, v in value.items() if k != "samples_ms"}
    return value


# -- scenario 6b: pending-job scaling -----------------------------------------------------


def scaling_point(spec: bj.JobSpec, pending: int, budget: Budget) -> bc.Json:
    cluster = Cluster(replace(spec, namespace=ns()))
    try:
        fill = cluster.ask("fill", pending, 5000, timeout=1800)
        cluster.start_schedulers(1)
        time.sleep(1.0)
        scheduler_pid = cluster.schedulers[0][0].pid
        rss_idle = bc.rss_mb(scheduler_pid)
        planned: dict[str, float] = cluster.ask("lateness", 30, 0.3, 1.5)
        missing = cluster.fires.wait_for(set(planned), 20)
        late = [cluster.fires.seen[k][0][0] - planned[k] for k in planned if k not in missing]
        rss_after = bc.rss_mb(scheduler_pid)
    finally:
        cluster.close()
    return {
        "pending": pending,
        "fill": fill,
        "rss_idle_mb": rss_idle,
        "rss_after_mb": rss_after,
        "lateness": {**bc.stats_ms([max(0.0, x) for x in late]), "missing": len(missing)},
        "early": sum(1 for x in late if x < 0),
    }


def scenario_scaling(
    specs: list[bj.JobSpec], budget: Budget, time_left: Callable[[], float]
) -> bc.Json:
    out: bc.Json = {"results": {}, "skipped": []}
    for spec in specs:
        if spec.kind != "clustersync":
            continue
        points = []
        for pending in budget.scaling.get(spec.store, ()):
            # Filling runs at roughly 10-20k jobs/s: skip what would not fit the budget.
            estimate = pending / 8000 + 20
            if estimate > time_left():
                out["skipped"].append(
                    f"{spec.id} {pending:,} pending: ~{estimate:.0f} s would exceed the budget"
                )
                continue
            log(f"  scaling: {spec.id} with {pending:,} pending jobs")
            points.append(scaling_point(spec, pending, budget))
        out["results"][spec.id] = {"label": spec.label, "store": spec.store, "points": points}
    return out


# -- scenario 7: recurring job ------------------------------------------------------------


def recurring_round(spec: bj.JobSpec, budget: Budget, interval: float = 1.0) -> bc.Json:
    cluster = Cluster(spec)
    shared = bc.ctx().RawArray("q", 2)
    key = "tick-" + uuid.uuid4().hex[:6]
    try:
        began = time.time()
        cluster.start_schedulers(3, bj.recurring_process, shared, key, interval)
        time.sleep(budget.recurring_seconds)
        cluster.stop_schedulers()
        ended = time.time()
        cluster.fires.drain(0.2)
    finally:
        cluster.close()
    runs = sorted(wall for fired in cluster.fires.seen.values() for wall, _, _ in fired)
    # Skew: how long after its boundary (a multiple of the interval) each run started;
    # the first run is skipped (clustersync runs a never-run job at once).
    aligned = [t for t in runs if t - began > interval]
    skew = [t - math.floor(t / interval) * interval for t in aligned]
    gaps = [b - a for a, b in itertools.pairwise(aligned)]
    boundaries = math.floor(ended / interval) - math.floor(began / interval) - 1
    return {
        "runs": len(runs),
        "runs_per_interval": round(len(aligned) / boundaries, 3) if boundaries > 0 else None,
        "skew": bc.stats_ms(skew),
        "interval_error": bc.stats_ms([abs(g - interval) for g in gaps]),
        "overlaps": int(shared[1]),
        "instances": sorted({i for fired in cluster.fires.seen.values() for _, _, i in fired}),
    }


def scenario_recurring(specs: list[bj.JobSpec], budget: Budget) -> bc.Json:
    out: bc.Json = {"results": {}, "errors": {}}
    for spec in specs:
        log(f"  recurring: {spec.id}")
        try:
            result = recurring_round(replace(spec, namespace=ns()), budget)
        except Exception as exc:
            out["errors"][spec.id] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            continue
        out["results"][spec.id] = {"label": spec.label, "store": spec.store, **result}
    return out


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 4 minutes instead of 20")
    parser.add_argument("--only", help="comma-separated scenario numbers (default: all)")
    parser.add_argument("--ids", help="comma-separated contender ids (default: all)")
    parser.add_argument("--budget", type=float, help="seconds for the whole run (default: mode)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report only")
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS,
        help="results file (the report is written only for the default one)",
    )
    args = parser.parse_args(argv)

    import bench_report

    if args.report_only:
        bench_report.write(json.loads(args.json.read_text()))
        return 0
    budget = QUICK if args.quick else FULL
    total_budget = args.budget or (240.0 if args.quick else 1200.0)
    only = {int(x) for x in args.only.split(",")} if args.only else set(range(1, 8))
    began = time.monotonic()

    def time_left() -> float:
        return total_budget - (time.monotonic() - began)

    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the private servers are closed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    bc.start_forkserver()
    results: bc.Json = {
        "command": COMMAND + (" --quick" if args.quick else ""),
        "argv": sys.argv[1:] if argv is None else argv,
        "mode": "quick" if args.quick else "full",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "budget": asdict(budget),
        "scenarios": {},
        "errors": {},
        "elapsed_s": {},
    }
    with private_stores() as (stores, pg_bindir):
        results["machine"] = bc.machine_info(pg_bindir)
        locks = lock_specs(stores)
        jobs = job_specs(stores)
        if args.ids:
            wanted = set(args.ids.split(","))
            locks = [s for s in locks if s.id in wanted]
            jobs = [s for s in jobs if s.id in wanted]
        plan: list[tuple[int, str, Callable[[], bc.Json]]] = [
            (1, "floors", lambda: scenario_floors(stores, budget)),
            (2, "uncontended", lambda: scenario_uncontended(locks, budget)),
            (3, "handoff", lambda: scenario_handoff(locks, budget)),
            (4, "contended", lambda: scenario_contended(locks, budget)),
            (6, "one_shot", lambda: scenario_one_shot(jobs, budget)),
            (5, "crash", lambda: scenario_crash(locks, budget)),
            (7, "recurring", lambda: scenario_recurring(jobs, budget)),
            (6, "scaling", lambda: scenario_scaling(jobs, budget, time_left)),
        ]
        for number, name, run in plan:
            if number not in only:
                continue
            log(f"scenario {number}: {name} ({time_left():.0f} s of budget left)")
            start = time.monotonic()
            try:
                results["scenarios"][name] = run()
            except Exception as exc:
                results["errors"][name] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            results["elapsed_s"][name] = round(time.monotonic() - start, 1)
            _save(results, args.json)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["load_average_at_end"] = bc.load_average()
    results["total_s"] = round(time.monotonic() - began, 1)
    _save(results, args.json)
    if args.json == RESULTS:  # a run into another file (e.g. an experiment) keeps the report
        bench_report.write(results)
    log(f"done in {results['total_s']:.0f} s: {args.json}")
    return 0


def _save(results: bc.Json, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
