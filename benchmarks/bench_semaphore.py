"""Semaphore contention: 4 processes loop acquire -> critical section -> release on one
``clustersync.Semaphore`` with ``limit=2``, on SQLite, Redis and PostgreSQL (the private
servers of ``tests/servers.py``), in the style of scenario 4 of ``benchmarks/run.py``,
next to ``limit=1`` and to ``clustersync.Mutex`` in the same harness (the baseline)::

    .venv/bin/python benchmarks/bench_semaphore.py [--seconds 5] [--rounds 3]

Per round and store: acquisitions per second (all processes), Jain's fairness index over
the per-process counts, min/max, and safety violations (more than ``limit`` processes
inside at once, or a token seen twice, checked in shared memory). Prints a Markdown table
(medians over rounds) and writes ``benchmarks/results/semaphore.json``.

The peers of the ``bench`` group (redis-py's ``Lock``, python-redis-lock, pottery's
``Redlock``, PostgreSQL advisory locks) are mutexes: the Mutex rows of scenario 4 compare
with them, and the Mutex row here relates the semaphore to those.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import clustersync

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "semaphore.json"
PROCESSES = 4
#: What runs in each store: label -> semaphore limit (None: a Mutex).
CONTENDERS = {"Semaphore limit=2": 2, "Semaphore limit=1": 1, "Mutex": None}
#: Shared memory: [inside now, violations, tokens seen...] (a ring of recent tokens).
INSIDE, VIOLATIONS = 0, 1
RING = 4096


def jain(counts: list[int]) -> float:
    """Jain's fairness index: 1 when every worker got the same share, 1/n at worst."""
    squares = sum(c * c for c in counts)
    return round(sum(counts) ** 2 / (len(counts) * squares), 4) if squares else 0.0


def worker(
    url: str,
    namespace: str,
    limit: int | None,
    shared: Any,
    seen: Any,
    duration: float,
    parent: Connection,
) -> None:
    store = clustersync.open_store(url, namespace=namespace)
    sem: clustersync.Semaphore | clustersync.Mutex
    if limit is None:
        sem = clustersync.Mutex(store, "bench")
    else:
        sem = clustersync.Semaphore(store, "bench", limit=limit)
    count = 0
    try:
        parent.send("ready")
        start_at = parent.recv()
        time.sleep(max(0.0, start_at - time.monotonic()))
        end = start_at + duration
        while time.monotonic() < end:
            sem.acquire()
            token = sem.token
            assert token is not None
            with shared.get_lock():
                shared[INSIDE] += 1
                if shared[INSIDE] > (limit or 1):
                    shared[VIOLATIONS] += 1
                if seen[token % RING] == token:  # the same token handed out twice
                    shared[VIOLATIONS] += 1
                seen[token % RING] = token
            time.sleep(0.0005)  # the critical section
            with shared.get_lock():
                shared[INSIDE] -= 1
            sem.release()
            count += 1
        parent.send(count)
    finally:
        store.close()


def one_round(ctx: Any, url: str, limit: int | None, seconds: float) -> dict[str, Any]:
    shared = ctx.Array("i", 2)
    seen = ctx.Array("q", RING, lock=False)
    namespace = f"bench-sem-{uuid.uuid4().hex[:8]}"
    pipes, procs = [], []
    for index in range(PROCESSES):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(
            target=worker,
            args=(url, namespace, limit, shared, seen, seconds, theirs),
            name=f"sem-{index}",
            daemon=True,
        )
        proc.start()
        pipes.append(mine)
        procs.append(proc)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    start_at = time.monotonic() + 0.2
    for pipe in pipes:
        pipe.send(start_at)
    counts = [int(pipe.recv()) for pipe in pipes]
    for proc in procs:
        proc.join(10)
    return {
        "acq_per_s": round(sum(counts) / seconds, 1),
        "jain": jain(counts),
        "min_max": round(min(counts) / max(counts), 3) if max(counts) else 0.0,
        "violations": int(shared[VIOLATIONS]),
        "counts": counts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # tests/servers.py: the private test servers
    from tests.servers import PostgresServer, RedisServer

    ctx = multiprocessing.get_context("forkserver")
    results: dict[str, Any] = {}
    with (
        RedisServer() as redis_srv,
        PostgresServer() as pg_srv,
        tempfile.TemporaryDirectory(prefix="clustersync-bench-") as tmp,
    ):
        stores = {
            "SQLite": f"sqlite:///{Path(tmp).absolute()}/bench.db",
            "Redis": redis_srv.url,
            "PostgreSQL": pg_srv.url,
        }
        for round_no in range(args.rounds):
            for store, url in stores.items():
                for label, limit in CONTENDERS.items():
                    key = f"{store} | {label}"
                    results.setdefault(key, []).append(one_round(ctx, url, limit, args.seconds))
                    print(f"round {round_no + 1} {key}: {results[key][-1]}", flush=True)
    summary = {
        store: {
            key: statistics.median(r[key] for r in rounds)
            for key in ("acq_per_s", "jain", "min_max")
        }
        | {"violations": sum(r["violations"] for r in rounds), "rounds": rounds}
        for store, rounds in results.items()
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\n{PROCESSES} processes, {args.seconds:g} s x {args.rounds} rounds")
    print("| store | contender | acq/s | Jain | min/max | violations |")
    print("|---|---|---|---|---|---|")
    for store, row in summary.items():
        print(
            f"| {store} | {row['acq_per_s']:.0f} | {row['jain']} | {row['min_max']}"
            f" | {row['violations']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
