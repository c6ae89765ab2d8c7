"""Shared helpers of ``benchmarks/run.py``: statistics, rounds, worker processes, machine.

Worker processes come from a ``forkserver`` whose server imports the benchmark modules and
drivers once (``start_forkserver``): a worker starts in a few milliseconds and inherits
no thread or connection of the parent.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from handoff import percentile

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent

Json = dict[str, Any]

_CTX: ForkServerContext | None = None


def start_forkserver() -> ForkServerContext:
    """The multiprocessing context of every worker (a forkserver with the modules loaded)."""
    global _CTX  # noqa: PLW0603 - one forkserver per run
    if _CTX is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(
            ["bench_common", "bench_locks", "bench_jobs", "clustersync", "redis", "psycopg"]
        )
        _CTX = ctx
    return _CTX


def ctx() -> ForkServerContext:
    return start_forkserver()


# -- statistics ---------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def stats_ms(samples: Sequence[float]) -> Json:
    """p50/p90/p99/max/mean in ms of samples in seconds (empty: only ``n``)."""
    if not samples:
        return {"n": 0}
    data = list(samples)
    return {
        "n": len(data),
        "p50_ms": ms(percentile(data, 50)),
        "p90_ms": ms(percentile(data, 90)),
        "p99_ms": ms(percentile(data, 99)),
        "max_ms": ms(max(data)),
        "min_ms": ms(min(data)),
        "mean_ms": ms(statistics.fmean(data)),
    }


def median_of_rounds(rounds: Sequence[Json]) -> Json:
    """The median over rounds of every numeric field the rounds share."""
    if not rounds:
        return {}
    out: Json = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds if isinstance(r.get(key), int | float)]
        if values and len(values) == len(rounds):
            out[key] = round(statistics.median(values), 4)
    out["rounds"] = len(rounds)
    return out


def jain(counts: Sequence[float]) -> float:
    """Jain's fairness index: 1 when every worker got the same share, 1/n at worst."""
    total = sum(counts)
    squares = sum(c * c for c in counts)
    if squares == 0:
        return 0.0
    return round(total * total / (len(counts) * squares), 4)


def rotated(items: Sequence[str], round_no: int) -> list[str]:
    """``items`` in an order that changes every round (interleaving across rounds)."""
    order = list(items)
    random.Random(round_no).shuffle(order)
    return order


def idle(low: float = 0.02, high: float = 0.08) -> None:
    time.sleep(random.uniform(low, high))


# -- worker processes ---------------------------------------------------------------------


def start_process(target: Callable[..., None], *args: Any, name: str) -> BaseProcess:
    proc = ctx().Process(target=target, args=args, name=name, daemon=True)
    proc.start()
    return proc


def stop_processes(procs: Sequence[BaseProcess], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


@contextlib.contextmanager
def processes(procs: list[BaseProcess], timeout: float = 5.0) -> Iterator[list[BaseProcess]]:
    """Join (then kill) ``procs`` when the block ends, whatever happens in it."""
    try:
        yield procs
    finally:
        stop_processes(procs, timeout)


def rss_mb(pid: int) -> float:
    """Resident set size of a process (Linux ``/proc``), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


# -- the machine --------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(postgres_bindir: Path | None) -> Json:
    pg = "unknown"
    if postgres_bindir is not None:
        pg = _first_line([str(postgres_bindir / "postgres"), "--version"])
    redis_server = shutil.which("redis-server")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "redis_server": _first_line([redis_server, "--version"]) if redis_server else "missing",
        "postgres": pg,
        "load_average_at_start": load_average(),
        "packages": {
            name: package_version(name)
            for name in (
                "clustersync",
                "redis",
                "hiredis",
                "psycopg",
                "psycopg-binary",
                "python-redis-lock",
                "pottery",
                "apscheduler",
                "sqlalchemy",
                "procrastinate",
                "matplotlib",
            )
        },
    }
