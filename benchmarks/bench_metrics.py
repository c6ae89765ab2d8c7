"""What observability costs on the hot path: an uncontended ``Mutex`` acquire + release.

::

    .venv/bin/python benchmarks/bench_metrics.py [--baseline REV] [--against REV] [--rounds 7]

Three variants run in child processes, interleaved round by round on the same store so
that machine noise hits them alike:

- ``baseline`` — the library at ``REV`` (default: the last commit before the
  observability hooks), extracted with ``git archive``;
- ``off`` — this checkout (or ``--against REV``), metrics not enabled (the default for
  users);
- ``on`` — the same after ``enable_metrics()`` (Prometheus, default buckets).

``--against 526c1d2`` (the commit that added the hooks) measures the hooks alone; without
it, ``off / baseline`` also counts whatever else changed since the baseline.

Stores: in-process memory (the hooks' cost is largest there, relative to the work), a
SQLite file, and a private Redis and PostgreSQL (``tests/servers.py``). The OpenTelemetry
API is installed in all three; an uncontended acquisition makes no span.

Prints a table of medians (µs per acquire + release) and the ratios ``off / baseline``
(the cost of the disabled hooks) and ``on / off`` (the cost of recording), and writes
``benchmarks/results/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "metrics.json"
#: The last commit before the observability hooks (one-shot retries landed there).
DEFAULT_BASELINE = "41c8fa6"
VARIANTS = ("baseline", "off", "on")


def child(url: str, namespace: str, variant: str, pairs: int, batches: int) -> None:
    """Run in a child process: print the µs per acquire + release of each batch."""
    import clustersync

    if variant == "on":
        from prometheus_client import CollectorRegistry

        clustersync.enable_metrics(CollectorRegistry())
    with clustersync.open_store(url, namespace=namespace) as store:
        mutex = clustersync.Mutex(store, "hot")
        for _ in range(pairs // 10):  # warm up: connections, caches, the renewer
            mutex.acquire()
            mutex.release()
        per_batch = []
        for _ in range(batches):
            started = time.perf_counter()
            for _ in range(pairs):
                mutex.acquire()
                mutex.release()
            per_batch.append((time.perf_counter() - started) / pairs * 1e6)
    print(json.dumps(per_batch))


def extract(revision: str, into: Path) -> Path:
    """The ``src`` tree of ``revision``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "archive", revision, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def measure(src: Path, url: str, variant: str, pairs: int, batches: int) -> list[float]:
    namespace = f"bench-{variant}-{time.monotonic_ns()}"
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [sys.executable, __file__, "--child", url, namespace, variant, str(pairs), str(batches)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    result: list[float] = json.loads(out.strip().splitlines()[-1])
    return result


def _postgres_database(server: Any, dbname: str) -> str:
    """The URL of a new database ``dbname`` on the private PostgreSQL ``server``."""
    with server.socket_connect() as admin:
        admin.execute(f'CREATE DATABASE "{dbname}" OWNER "{server.user}"')
    return str(server.url).rsplit("/", 1)[0] + "/" + dbname


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision")
    parser.add_argument(
        "--against",
        default=None,
        help="git revision measured off and on instead of this checkout (e.g. the commit"
        " that added the hooks, to measure them alone)",
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=2000, help="acquire+release per batch")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--stores", default="memory,sqlite,redis,postgres")
    parser.add_argument("--json", default=str(RESULTS), help="where the results go")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        url, namespace, variant, pairs, batches = args.child
        child(url, namespace, variant, int(pairs), int(batches))
        return 0

    sys.path.insert(0, str(ROOT))
    from tests.servers import PostgresServer, RedisServer

    stores = args.stores.split(",")
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {
            "baseline": extract(args.baseline, Path(tmp) / "baseline"),
            "off": ROOT / "src",
            "on": ROOT / "src",
        }
        if args.against:
            sources["off"] = sources["on"] = extract(args.against, Path(tmp) / "against")
        servers: list[Any] = []
        # A store per variant where the schema is versioned (SQLite, PostgreSQL): the
        # baseline refuses a schema that a newer version migrated.
        urls: dict[str, dict[str, str]] = {}
        try:
            for name in stores:
                if name == "memory":
                    urls[name] = dict.fromkeys(VARIANTS, "memory://bench")
                elif name == "sqlite":
                    urls[name] = {v: f"sqlite:///{tmp}/bench-{v}.db" for v in VARIANTS}
                elif name == "redis":
                    servers.append(RedisServer().__enter__())
                    urls[name] = dict.fromkeys(VARIANTS, servers[-1].url)
                elif name == "postgres":
                    server = PostgresServer().__enter__()
                    servers.append(server)
                    urls[name] = {v: _postgres_database(server, f"bench_{v}") for v in VARIANTS}
                else:
                    parser.error(f"unknown store {name!r}")
            for name in stores:
                results[name] = {variant: [] for variant in VARIANTS}
                for round_ in range(args.rounds):
                    # Rotate the order so that no variant always runs first.
                    order = VARIANTS[round_ % 3 :] + VARIANTS[: round_ % 3]
                    for variant in order:
                        batches = measure(
                            sources[variant], urls[name][variant], variant, args.pairs, args.batches
                        )
                        # The fastest batch: noise (other processes) only ever adds time.
                        results[name][variant].append(min(batches))
        finally:
            for server in servers:
                server.__exit__(None, None, None)

    table: dict[str, dict[str, float]] = {}
    print(
        f"µs per uncontended acquire + release: median over {args.rounds} rounds of the"
        " fastest batch of each"
    )
    print(f"{'store':10} {'baseline':>9} {'off':>9} {'on':>9} {'off/base':>9} {'on/off':>8}")
    for name, by_variant in results.items():
        medians = {variant: statistics.median(v) for variant, v in by_variant.items()}
        off_ratio = medians["off"] / medians["baseline"]
        on_ratio = medians["on"] / medians["off"]
        table[name] = {**medians, "off_over_baseline": off_ratio, "on_over_off": on_ratio}
        print(
            f"{name:10} {medians['baseline']:9.1f} {medians['off']:9.1f} {medians['on']:9.1f}"
            f" {off_ratio:9.3f} {on_ratio:8.3f}"
        )
    output = Path(args.json)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "baseline": args.baseline,
                "against": args.against or "this checkout",
                "rounds": args.rounds,
                "pairs": args.pairs,
                "batches": args.batches,
                "load": os.getloadavg(),
                "raw": results,
                "medians": table,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
