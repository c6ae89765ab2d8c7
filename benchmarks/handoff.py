"""Mutex handoff latency, and the raw round trip of the same store, on SQLite, Redis or
PostgreSQL.

Usage::

    .venv/bin/python benchmarks/handoff.py --backend sqlite     # a temporary SQLite file
    .venv/bin/python benchmarks/handoff.py --backend redis      # a private redis-server
    .venv/bin/python benchmarks/handoff.py --backend postgres   # a private PostgreSQL
    .venv/bin/python benchmarks/handoff.py --url redis://127.0.0.1:6379/0
    .venv/bin/python benchmarks/handoff.py --backend redis --replica --min-replicas 1

With ``--backend redis|postgres`` the benchmark starts a private server on loopback
(``tests/servers.py``: a free port, a temporary directory, removed at the end; PostgreSQL
with ``fsync``/``synchronous_commit`` off like the test servers unless ``--durable``). With
``--url`` it uses that store, in a fresh namespace (what it writes there stays behind).
``--replica`` gives the private Redis a replica (the store talks to the master), and
``--min-replicas N`` opens the store with ``min_replicas=N`` (every write waits for N
replicas: the cost of ``WAIT``).

Measures, on one store:

- **cross-process handoff**: process A holds the lock while process B is already blocked
  in ``acquire()``; A takes ``time.monotonic()`` just before ``release()``, B right after
  ``acquire()`` returns (CLOCK_MONOTONIC is shared by the processes of a host). The roles
  alternate every round; before each release the holder waits until the waiter has said
  it is about to block, plus ``--settle`` seconds, so that the waiter is truly waiting.
- **racing handoff** (``--race-rounds``): the same, but the holder releases 0-2 ms after
  the waiter starts ``acquire()`` — the release races the waiter's registration for
  change notifications, which is where a lost wake-up would show (as a long outlier).
- **uncontended** acquire + release in one process, back to back ("hot") and after
  20-80 ms of idle ("cold").
- **in-process handoff**: the same protocol between two threads sharing one store object
  (each with its own ``Mutex``), where the release notifies the waiter directly.
- **raw round trip** of the store with its own driver, outside clustersync, hot and cold:
  Redis ``PING`` (redis-py), PostgreSQL ``SELECT 1`` (psycopg, autocommit), SQLite
  ``SELECT 1`` (sqlite3, on the same file) — the floor under every clustersync operation.

Prints a table (p50, p90, p99, max in ms and the number of samples) and one JSON line
starting with ``JSON:``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import clustersync

if TYPE_CHECKING:
    from tests.servers import RedisServer

ROOT = Path(__file__).resolve().parents[1]
MUTEX = "bench-handoff"
BACKENDS = ("sqlite", "redis", "postgres")
#: Idle time before each "cold" sample (seconds).
COLD_IDLE = (0.02, 0.08)

Stats = dict[str, float | int]


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of non-empty ``samples``."""
    ordered = sorted(samples)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summary(samples: list[float]) -> Stats:
    """Milliseconds: p50, p90, p99, max, mean; and the number of samples."""
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50) * 1000, 3),
        "p90_ms": round(percentile(samples, 90) * 1000, 3),
        "p99_ms": round(percentile(samples, 99) * 1000, 3),
        "max_ms": round(max(samples) * 1000, 3),
        "mean_ms": round(statistics.fmean(samples) * 1000, 3),
    }


def backend_of(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("redis", "rediss", "unix"):
        return "redis"
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    raise SystemExit(f"unsupported URL scheme {scheme!r}: use sqlite, redis or postgres")


@dataclass(frozen=True)
class Plan:
    """What one handoff measurement does."""

    rounds: int
    settle: float  # seconds the holder waits after the waiter said it is about to block
    race: bool = False  # release 0-2 ms after the waiter starts instead


# -- the handoff protocol (the same for two processes or two threads) --------------------


class Lockable(Protocol):
    """What the handoff protocol needs of a lock: clustersync's ``Mutex``, or the
    adapters of the peer libraries in ``bench_locks.py``."""

    def acquire(self) -> object: ...

    def release(self) -> None: ...


def play_handoff(
    mutex: Lockable, peer: Connection, plan: Plan, starts_holding: bool
) -> list[float]:
    """Play ``rounds`` handoffs against the peer; return this side's latencies (seconds).

    Round ``i`` is handed from the side holding the lock to the other one; roles
    alternate. The waiter sends ``"blocking"`` just before ``acquire()``; the holder waits
    for it, sleeps ``plan.settle`` (or 0-2 ms when racing), stamps the time, releases, and
    sends the stamp. The new holder confirms with ``"got"`` before the old one may try to
    acquire again (otherwise it could take the lock back before the waiter wakes).
    """
    rng = random.Random()
    latencies: list[float] = []
    if starts_holding:
        mutex.acquire()
        peer.send("held")
    else:
        assert peer.recv() == "held"
    holding = starts_holding
    for _ in range(plan.rounds):
        if holding:
            assert peer.recv() == "blocking"
            time.sleep(rng.uniform(0, 0.002) if plan.race else plan.settle)
            released_at = time.monotonic()
            mutex.release()
            peer.send(released_at)
            assert peer.recv() == "got"
        else:
            peer.send("blocking")
            mutex.acquire()
            acquired_at = time.monotonic()
            peer.send("got")
            released_at = peer.recv()
            latencies.append(acquired_at - released_at)
        holding = not holding
    if holding:
        mutex.release()
    return latencies


@dataclass(frozen=True)
class Target:
    """The store a measurement runs on."""

    url: str
    namespace: str


def handoff_process(
    target: Target, peer: Connection, parent: Connection, plan: Plan, first: bool
) -> None:
    """Entry point of one handoff process (spawned): reports its latencies to ``parent``."""
    with clustersync.open_store(target.url, namespace=target.namespace) as store:
        mutex = clustersync.Mutex(store, MUTEX, ttl=15.0)
        parent.send(play_handoff(mutex, peer, plan, first))


def cross_process(url: str, namespace: str, plan: Plan) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    a_end, b_end = ctx.Pipe()
    results = [ctx.Pipe(duplex=False) for _ in range(2)]
    procs = [
        ctx.Process(
            target=handoff_process,
            args=(Target(url, namespace), end, result[1], plan, first),
            name=f"handoff-{'AB'[not first]}",
        )
        for end, result, first in ((a_end, results[0], True), (b_end, results[1], False))
    ]
    for proc in procs:
        proc.start()
    try:
        deadline = time.monotonic() + plan.rounds * (plan.settle + 0.5) + 60
        latencies: list[float] = []
        for receiver, _ in results:
            while not receiver.poll(0.5):
                failed = [p.name for p in procs if p.exitcode not in (None, 0)]
                if failed:
                    raise RuntimeError(f"handoff process {failed} failed (see its traceback)")
                if time.monotonic() > deadline:
                    raise RuntimeError("the handoff processes did not report in time")
            latencies.extend(receiver.recv())
        return latencies
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


def in_process(url: str, namespace: str, plan: Plan) -> list[float]:
    a_end, b_end = multiprocessing.Pipe()
    latencies: list[float] = []
    with clustersync.open_store(url, namespace=namespace) as store:

        def side(end: Connection, first: bool) -> None:
            mutex = clustersync.Mutex(store, MUTEX + "-threads", ttl=15.0)
            latencies.extend(play_handoff(mutex, end, plan, first))

        threads = [
            threading.Thread(target=side, args=(a_end, True)),
            threading.Thread(target=side, args=(b_end, False)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return latencies


# -- single-client timings ------------------------------------------------------------------


def timed(
    operation: Callable[[], object], rounds: int, idle: tuple[float, float] | None
) -> list[float]:
    """Time ``operation`` ``rounds`` times: back to back, or after a random idle in
    ``idle`` (seconds) before each call. One untimed call first (connections, scripts)."""
    rng = random.Random()
    operation()
    samples: list[float] = []
    for _ in range(rounds):
        if idle is not None:
            time.sleep(rng.uniform(*idle))
        start = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - start)
    return samples


def uncontended(
    url: str, namespace: str, rounds: int, idle: tuple[float, float] | None
) -> list[float]:
    with clustersync.open_store(url, namespace=namespace) as store:
        mutex = clustersync.Mutex(store, MUTEX + "-solo", ttl=15.0)

        def acquire_release() -> None:
            mutex.acquire()
            mutex.release()

        return timed(acquire_release, rounds, idle)


@contextlib.contextmanager
def raw_client(url: str) -> Iterator[tuple[str, Callable[[], object]]]:
    """The store's cheapest request with its own driver: (description, call)."""
    backend = backend_of(url)
    if backend == "redis":
        import redis

        client = redis.Redis.from_url(url)
        try:
            yield "Redis PING (redis-py)", client.ping
        finally:
            client.close()
    elif backend == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            yield "PostgreSQL SELECT 1 (psycopg)", lambda: conn.execute("SELECT 1").fetchone()
    else:
        path = url.removeprefix("sqlite:///")
        lite = sqlite3.connect(path, isolation_level=None)
        try:
            yield "SQLite SELECT 1 (sqlite3)", lambda: lite.execute("SELECT 1").fetchone()
        finally:
            lite.close()


# -- stores --------------------------------------------------------------------------------


@contextlib.contextmanager
def store_url(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """The URL to benchmark and a description of where it comes from."""
    if args.url:
        yield args.url, "given URL"
        return
    if args.backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="clustersync-bench-") as tmp:
            path = Path(args.path) if args.path else Path(tmp) / "bench.db"
            yield f"sqlite:///{path.absolute()}", f"SQLite file {path}"
        return
    sys.path.insert(0, str(ROOT))  # tests/servers.py: the private test servers
    from tests.servers import PostgresServer, RedisServer

    if args.backend == "redis":
        with RedisServer(persistence=args.durable) as redis_srv, contextlib.ExitStack() as stack:
            aof = "AOF everysec" if args.durable else "no persistence"
            origin = f"private redis-server on port {redis_srv.port} ({aof}"
            if args.replica:
                replica = stack.enter_context(replica_of(redis_srv, durable=args.durable))
                origin += f", replica on port {replica.port}"
            yield redis_srv.url, origin + ")"
    else:
        with PostgresServer(fsync=args.durable) as pg_srv:
            sync = "on" if args.durable else "off"
            yield (
                pg_srv.url,
                f"private PostgreSQL on port {pg_srv.port} (fsync/synchronous_commit {sync})",
            )


@contextlib.contextmanager
def replica_of(master: RedisServer, *, durable: bool) -> Iterator[RedisServer]:
    """A private replica of ``master``, in sync when it is yielded."""
    import redis
    from tests.servers import LOOPBACK, RedisServer

    args = ["--replicaof", LOOPBACK, str(master.port), "--repl-diskless-sync-delay", "0"]
    with RedisServer(persistence=durable, extra_args=args) as replica:
        with redis.Redis.from_url(replica.url, decode_responses=True) as client:
            deadline = time.monotonic() + 30
            while client.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise SystemExit("the replica did not sync within 30 s")
                time.sleep(0.05)
        yield replica


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="store URL (sqlite:///, redis://, postgresql://)")
    where.add_argument(
        "--backend",
        choices=BACKENDS,
        default="sqlite",
        help="start a private store of this kind (default: sqlite)",
    )
    parser.add_argument("--rounds", type=int, default=200, help="handoffs to measure")
    parser.add_argument("--race-rounds", type=int, default=None, help="default: --rounds")
    parser.add_argument("--settle", type=float, default=0.03, help="seconds before a release")
    parser.add_argument("--hot-rounds", type=int, default=1000, help="back-to-back samples")
    parser.add_argument("--cold-rounds", type=int, default=100, help="samples after idle")
    parser.add_argument("--path", help="with --backend sqlite: the file (default: temporary)")
    parser.add_argument(
        "--durable",
        action="store_true",
        help="private servers: PostgreSQL fsync on, Redis AOF (default: like the tests)",
    )
    parser.add_argument(
        "--replica", action="store_true", help="--backend redis: give the server a replica"
    )
    parser.add_argument(
        "--min-replicas",
        type=int,
        default=0,
        help="Redis: open the store with min_replicas=N (writes wait for N replicas)",
    )
    args = parser.parse_args(argv)
    race_rounds = args.rounds if args.race_rounds is None else args.race_rounds
    namespace = f"bench-{uuid.uuid4().hex[:12]}"

    with store_url(args) as (raw_url, place):
        backend = backend_of(raw_url)
        url, origin = raw_url, place
        if args.min_replicas:
            url += ("&" if "?" in url else "?") + f"min_replicas={args.min_replicas}"
            origin += f"; min_replicas={args.min_replicas}"
        clustersync.open_store(url, namespace=namespace).close()  # create the schema once
        results: dict[str, Stats] = {}
        results["cross_process"] = summary(
            cross_process(url, namespace, Plan(args.rounds, args.settle))
        )
        if race_rounds:
            results["cross_process_racing"] = summary(
                cross_process(url, namespace, Plan(race_rounds, 0.0, True))
            )
        results["in_process_threads"] = summary(
            in_process(url, namespace, Plan(args.rounds, args.settle))
        )
        results["uncontended_hot"] = summary(uncontended(url, namespace, args.hot_rounds, None))
        results["uncontended_cold"] = summary(
            uncontended(url, namespace, args.cold_rounds, COLD_IDLE)
        )
        with raw_client(raw_url) as (raw_what, raw_call):
            results["raw_rtt_hot"] = summary(timed(raw_call, args.hot_rounds, None))
            results["raw_rtt_cold"] = summary(timed(raw_call, args.cold_rounds, COLD_IDLE))

    print(
        f"{backend} mutex handoff: {origin}; {args.rounds} rounds, "
        f"settle {args.settle * 1000:.0f} ms; raw round trip: {raw_what}; "
        f"cold = after {COLD_IDLE[0] * 1000:.0f}-{COLD_IDLE[1] * 1000:.0f} ms idle"
    )
    print(f"{'measurement':<30}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>10}  (ms)")
    for name, stats in results.items():
        print(
            f"{name:<30}{stats['n']:>6}{stats['p50_ms']:>9.3f}{stats['p90_ms']:>9.3f}"
            f"{stats['p99_ms']:>9.3f}{stats['max_ms']:>10.3f}"
        )
    record = {
        "benchmark": "handoff",
        "backend": backend,
        "durable": bool(args.durable) if not args.url and backend != "sqlite" else None,
        "rounds": args.rounds,
        "replica": bool(args.replica),
        "min_replicas": args.min_replicas,
        "raw_rtt": raw_what,
        **results,
    }
    print("JSON: " + json.dumps(record, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
