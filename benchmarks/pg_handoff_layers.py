"""Where the time of a PostgreSQL handoff goes, layer by layer.

Usage::

    .venv/bin/python benchmarks/pg_handoff_layers.py [--rounds 200] [--repeat 2]

Starts a private PostgreSQL (``tests/servers.py``) and times the handoff between two
processes — the holder takes ``time.monotonic()`` just before releasing, the waiter,
already blocked, right after its acquire returns (CLOCK_MONOTONIC is shared by the
processes of a host) — for four locks, each adding one layer to the previous:

1. ``advisory``: plain session-level advisory locks (``pg_advisory_lock`` /
   ``pg_advisory_unlock``), the lock most PostgreSQL users compare with;
2. ``advisory+row``: the same, plus a lease row written in the same calls (a plain
   ``INSERT … ON CONFLICT`` after the lock, an ``UPDATE`` before the unlock): what a
   durable fencing token and expiry add;
3. ``functions``: clustersync's own queue functions (``handoff="advisory"``), called
   with psycopg directly;
4. ``mutex``: ``clustersync.Mutex`` on a store opened with ``handoff="advisory"``.

Prints p50 and p90 per lock and round (milliseconds).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
import zlib
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from tests.servers import PostgresServer  # noqa: E402

import clustersync  # noqa: E402
from clustersync.stores.postgres import sql as q  # noqa: E402

KEY = zlib.crc32(b"layers")
TTL_US = 15_000_000
ROW_FUNCTIONS = """
CREATE TABLE IF NOT EXISTS layers_leases (name text PRIMARY KEY, owner text,
    token bigint NOT NULL, expires_us bigint NOT NULL);
CREATE OR REPLACE FUNCTION layers_acquire(p_owner text, p_key bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE now_us bigint; t bigint;
BEGIN
    PERFORM pg_advisory_lock(p_key);
    now_us := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    INSERT INTO layers_leases AS l VALUES ('x', p_owner, now_us, now_us + 15000000)
    ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,
        token = GREATEST(l.token + 1, excluded.token), expires_us = excluded.expires_us
    WHERE l.owner IS NULL OR l.expires_us <= now_us
    RETURNING token INTO t;
    RETURN t;
END $$;
CREATE OR REPLACE FUNCTION layers_release(p_owner text, p_token bigint, p_key bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE layers_leases SET owner = NULL, expires_us = 0
    WHERE name = 'x' AND owner = p_owner AND token = p_token;
    PERFORM pg_advisory_unlock(p_key);
    RETURN FOUND;
END $$;
"""


class Advisory:
    def __init__(self, url: str, who: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True, prepare_threshold=5)

    def acquire(self) -> None:
        self.conn.execute("SELECT pg_advisory_lock(%s)", (KEY,)).fetchone()

    def release(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (KEY,)).fetchone()


class AdvisoryRow(Advisory):
    def __init__(self, url: str, who: str) -> None:
        super().__init__(url, who)
        self.who, self.count, self.owner, self.token = who, 0, "", 0

    def acquire(self) -> None:
        self.count += 1
        self.owner = f"{self.who}:{self.count}"
        row = self.conn.execute("SELECT layers_acquire(%s, %s)", (self.owner, KEY)).fetchone()
        assert row is not None
        assert row[0] is not None
        self.token = row[0]

    def release(self) -> None:
        args = (self.owner, self.token, KEY)
        self.conn.execute("SELECT layers_release(%s, %s, %s)", args).fetchone()


class Functions(AdvisoryRow):
    def acquire(self) -> None:
        self.count += 1
        self.owner = f"{self.who}:{self.count}"
        args = ("layers", "x", self.owner, TTL_US, KEY, 5000)
        row = self.conn.execute(q.QUEUE_ACQUIRE, args).fetchone()
        assert row is not None
        assert row[0]
        assert row[1] is not None
        self.token = row[1]

    def release(self) -> None:
        args = ("layers", "x", self.owner, self.token, "layers", KEY)
        self.conn.execute(q.QUEUE_RELEASE, args).fetchone()


class Mutex:
    def __init__(self, url: str, who: str) -> None:
        self.store = clustersync.open_store(url, namespace="layers", handoff="advisory")
        self.mutex = clustersync.Mutex(self.store, "x")

    def acquire(self) -> None:
        self.mutex.acquire()

    def release(self) -> None:
        self.mutex.release()


LOCKS: dict[str, type[Any]] = {
    "advisory": Advisory,
    "advisory+row": AdvisoryRow,
    "functions": Functions,
    "mutex": Mutex,
}


def side(kind: str, url: str, peer: Connection, rounds: int, first: bool, results: Any) -> None:
    """One process: alternately the holder (releases when the other blocks) and the
    waiter (records the handoff in ms)."""
    lock = LOCKS[kind](url, "a" if first else "b")
    samples: list[float] = []
    holding = first
    if holding:
        lock.acquire()
    peer.send("up")
    peer.recv()
    for _ in range(rounds):
        if holding:
            peer.recv()  # the other one is about to block
            time.sleep(0.02)
            released_at = time.monotonic()
            lock.release()
            peer.send(released_at)
            peer.recv()
        else:
            peer.send("blocking")
            lock.acquire()
            samples.append((time.monotonic() - peer.recv()) * 1000)
            peer.send("got it")
        holding = not holding
    if holding:
        lock.release()
    results.put(samples)


def handoff(kind: str, url: str, rounds: int) -> list[float]:
    """Handoff times (ms) of ``rounds`` handoffs between two processes."""
    results: Any = mp.Queue()
    ours, theirs = mp.Pipe()
    procs = [
        mp.Process(target=side, args=(kind, url, ours, rounds, True, results)),
        mp.Process(target=side, args=(kind, url, theirs, rounds, False, results)),
    ]
    for proc in procs:
        proc.start()
    samples = sorted(results.get() + results.get())
    for proc in procs:
        proc.join()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with PostgresServer() as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(ROW_FUNCTIONS)
            for statement in [*q.SCHEMA, *q.QUEUE_FUNCTIONS]:
                conn.execute(statement)
        for _ in range(args.repeat):
            for kind in LOCKS:
                samples = handoff(kind, server.url, args.rounds)
                p50 = statistics.median(samples)
                p90 = samples[int(len(samples) * 0.9)]
                print(f"{kind:13} handoff p50 {p50:.3f} ms  p90 {p90:.3f} ms  n={len(samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
