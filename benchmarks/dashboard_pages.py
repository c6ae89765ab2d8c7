"""How long the dashboard's pages take with 10,000 and 1,000,000 pending one-shot jobs.

    .venv/bin/python benchmarks/dashboard_pages.py            # SQLite, PostgreSQL, Redis
    .venv/bin/python benchmarks/dashboard_pages.py --stores sqlite --sizes 10000 --repeat 10

Each store (a temporary SQLite file; private PostgreSQL and Redis servers from
``tests/servers.py`` on loopback, like the tests: no fsync, no persistence) gets 10 held
mutexes, 5 recurring jobs and N pending one-shot jobs under four key prefixes, stored
with the backend's ``put_jobs`` in batches of 10,000; for the next size the same store
gets more jobs. Then the dashboard (``create_app`` over an asyncio store) answers
requests in-process through httpx's ASGI transport: no network, so the times are the
dashboard's work plus the store's. Each row is the median and p95 of ``--repeat``
requests after two warm-up requests, as an open page refreshing itself sees them (an
expensive ``count_jobs`` is reused a while: "overview, first request" is a new dashboard
each time); the store calls below the pages are timed alone. No one-shot job runs or
fails: the failed page is its empty state, and the recent runs are the recurring jobs'
first runs.
Results: a Markdown table on stdout, and JSON in ``--json`` (default
``benchmarks/results/dashboard_pages.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from clustersync import aio
from clustersync.dashboard import create_app
from clustersync.stores.contract import NewJob

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = ("export:", "invoice:", "remind:", "webhook:")
BATCH = 10_000
YEAR_US = 365 * 86400 * 1_000_000


def key_of(index: int) -> str:
    return f"{PREFIXES[index % len(PREFIXES)]}{index:08d}"


@contextlib.contextmanager
def store_url(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="clustersync-dash-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    sys.path.insert(0, str(ROOT))  # tests/servers.py: the private test servers
    from tests.servers import PostgresServer, RedisServer

    server = RedisServer() if kind == "redis" else PostgresServer()
    with server:
        yield server.url


async def fill(store: aio.Store, start: int, stop: int) -> float:
    """Store jobs ``start``..``stop`` (keys of :func:`key_of`); the seconds it took."""
    now_us = await store._ops.now_us()
    began = time.perf_counter()
    for low in range(start, stop, BATCH):
        batch = [
            NewJob(key_of(i), now_us + 60_000_000 + (i * 7919) % YEAR_US, f'{{"i": {i}}}')
            for i in range(low, min(stop, low + BATCH))
        ]
        await store._ops.put_jobs(batch)
    return time.perf_counter() - began


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> dict[str, float]:
    for _ in range(2):
        await call()
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.95))], 2),
    }


async def measure(store: aio.Store, size: int, repeat: int) -> dict[str, dict[str, float]]:
    middle = key_of(size // 2)
    results: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(store)), base_url="http://127.0.0.1"
    ) as client:

        def page(path: str, **headers: str) -> Callable[[], Awaitable[Any]]:
            async def get() -> None:
                response = await client.get(path, headers=headers)
                response.raise_for_status()

            return get

        async def cold_overview() -> None:
            # A new dashboard: nothing cached (an expensive count is reused for a while).
            transport = httpx.ASGITransport(app=create_app(store))
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as fresh:
                (await fresh.get("/")).raise_for_status()

        pages = {
            "overview, first request": cold_overview,
            "overview": page("/"),
            "overview (live refresh)": page("/", **{"X-Clustersync-Fragment": "1"}),
            "one-shot jobs: first page": page("/jobs"),
            "one-shot jobs: a page in the middle": page(f"/jobs?after={middle}"),
            "one-shot jobs: prefix 'webhook:'": page("/jobs?prefix=webhook:"),
            "one-shot jobs: 200 per page": page("/jobs?limit=200"),
            "locks": page("/locks"),
            "recurring jobs": page("/recurring"),
            "failed jobs": page("/failed"),
        }
        for name, call in pages.items():
            results[name] = await timed(call, repeat)
    ops = store._ops
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "store: count_jobs()": ops.count_jobs,
        "store: list_jobs_page('', None, 50)": lambda: ops.list_jobs_page("", None, 50),
        "store: next_job_delay()": ops.next_job_delay,
        "store: list_leases()": ops.list_leases,
        "store: recent_runs(12)": lambda: ops.recent_runs(12),
        "store: list_failed_jobs()": ops.list_failed_jobs,
    }
    for name, call in calls.items():
        results[name] = await timed(call, repeat)
    return results


async def bench_store(kind: str, sizes: list[int], repeat: int) -> dict[str, Any]:
    report: dict[str, Any] = {}
    with store_url(kind) as url:
        store = await aio.open_store(url, namespace="bench", identity="bench")
        mutexes = [aio.Mutex(store, f"lock-{i}", ttl=60) for i in range(10)]
        for mutex in mutexes:
            assert await mutex.acquire(timeout=10)

        async def nothing() -> None:
            pass

        jobs = [
            aio.schedule(store, f"job-{i}", aio.wait_for_interval(timedelta(hours=1)), nothing)
            for i in range(5)
        ]
        try:
            stored = 0
            for size in sizes:
                took = await fill(store, stored, size)
                stored = size
                assert await store._ops.count_jobs() == size
                print(f"{kind}: {size:,} jobs stored (+{took:.1f}s)", file=sys.stderr)
                report[str(size)] = await measure(store, size, repeat)
        finally:
            for job in jobs:
                await job.close()
            for mutex in mutexes:
                await mutex.release()
            await store.close()
    return report


def table(results: dict[str, dict[str, Any]], sizes: list[int]) -> str:
    kinds = list(results)
    header = "| request | " + " | ".join(f"{kind} {size:,}" for kind in kinds for size in sizes)
    lines = [header + " |", "|---|" + "---:|" * (len(kinds) * len(sizes))]
    names = list(next(iter(results[kinds[0]].values())))
    for name in names:
        cells = []
        for kind in kinds:
            for size in sizes:
                sample = results[kind][str(size)][name]
                cells.append(f"{sample['median_ms']:.1f} ({sample['p95_ms']:.1f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,postgres,redis")
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/dashboard_pages.json"))
    args = parser.parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    load_before = os.getloadavg()
    results = {
        kind: asyncio.run(bench_store(kind, sizes, args.repeat)) for kind in args.stores.split(",")
    }
    load = [round(value, 1) for value in (*load_before, *os.getloadavg())]
    print(f"median (p95) in ms; load average before {load[:3]}, after {load[3:]}\n")
    print(table(results, sizes))
    machine = f"{platform.machine()}, {platform.python_version()}, {platform.platform()}"
    Path(args.json).write_text(
        json.dumps(
            {"machine": machine, "repeat": args.repeat, "load": load, "results": results},
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
