"""Processes SIGKILLed in the middle of SQLite write transactions.

Two worker processes (``tests/processes/worker.py``, scenario ``hammer``) write to one
SQLite file as fast as they can — batches of one-shot jobs with ``schedule_many``, due
jobs that their schedulers claim and complete, mutex acquisitions — and are killed at a
random moment, round after round, on the same file. After every kill the database must
be consistent:

- it opens, and ``PRAGMA integrity_check`` says ``ok``;
- no partial batch of ``schedule_many`` is visible: each batch is all there or absent,
  and a batch the worker saw committed is all there (durable across a process crash);
- locks keep working and fencing tokens keep increasing across the crashes;
- at the end, every due job a worker saw stored has fired (none lost to a crash).

``CLUSTERSYNC_SOAK=1`` runs more rounds.
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

import clustersync
from tests.conftest import selected_backends
from tests.processes.harness import Cluster, Worker

from .conftest import soak_mode

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "sqlite" not in selected_backends(), reason="sqlite not in CLUSTERSYNC_TEST_BACKENDS"
    ),
]

ROUNDS = 40 if soak_mode() else 8
BATCH = 40
_FAR_KEY = re.compile(r"^(w\d+-r\d+)-(\d+)-(\d+)$")


def integrity(path: Path) -> list[str]:
    """``PRAGMA integrity_check`` of the file, read by a plain sqlite3 connection (which
    also recovers the write-ahead log a killed writer left behind)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
    finally:
        conn.close()


def events(workers: list[Worker], kind: str) -> list[dict[str, object]]:
    return [e for w in workers for e in w.events(kind)]


@pytest.mark.timeout(300 if soak_mode() else 120)
def test_sigkill_mid_write_leaves_the_database_consistent(tmp_path: Path) -> None:
    path = tmp_path / "cluster.db"
    url = f"sqlite:///{path}"
    namespace = "crash"
    cluster = Cluster(tmp_path, url, namespace, "sqlite")
    rng = random.Random()
    highest_token = 0
    committed: set[str] = set()  # batches a worker saw committed
    in_flight: set[str] = set()  # batches being written when the worker died
    due: set[str] = set()  # due jobs a worker saw stored
    fired: set[str] = set()
    try:
        with clustersync.open_store(url, namespace=namespace):
            pass  # create the schema before the first round
        for round_ in range(ROUNDS):
            workers = [
                cluster.spawn(
                    f"w{i}-r{round_}",
                    "hammer",
                    prefix=f"w{i}-r{round_}",
                    batch=BATCH,
                    mutex="m",
                    ttl=1.0,
                    claim_ttl=1.0,
                )
                for i in range(2)
            ]
            for worker in workers:
                cluster.wait_for(worker, "ready")
            # Let them write for a random while, then kill them at different moments.
            time.sleep(rng.uniform(0.1, 0.6))
            for worker in workers:
                worker.kill()
                time.sleep(rng.uniform(0.0, 0.05))

            assert integrity(path) == ["ok"], f"round {round_}"
            # Complete lines only: a line cut by the kill is not an event.
            for worker in workers:
                begun = {e["n"] for e in worker.events("batch")}
                done = {e["n"] for e in worker.events("batched")}
                committed |= {f"{worker.name}-{n}" for n in done}
                in_flight |= {f"{worker.name}-{n}" for n in begun - done}
            due |= {str(e["key"]) for e in events(workers, "due")}
            fired |= {str(e["key"]) for e in events(workers, "fired")}
            by_worker = [[int(e["token"]) for e in w.events("token")] for w in workers]
            tokens = [token for worker_tokens in by_worker for token in worker_tokens]

            with clustersync.open_store(url, namespace=namespace) as store:
                pending = clustersync.get_job_once_scheduler(store).list_scheduled_jobs()
                sizes: Counter[str] = Counter()
                for job in pending:
                    match = _FAR_KEY.match(job.key)
                    if match:
                        sizes[f"{match[1]}-{match[2]}"] += 1
                partial = {batch: n for batch, n in sizes.items() if n != BATCH}
                assert partial == {}, f"round {round_}: partial batches {partial}"
                missing = committed - sizes.keys()
                assert missing == set(), f"round {round_}: committed batches lost {missing}"
                assert sizes.keys() <= committed | in_flight

                # Tokens grew within each worker and across rounds; the lock still works
                # (the killed holder's lease expires after its 1 s ttl).
                for worker_tokens in by_worker:
                    assert worker_tokens == sorted(set(worker_tokens)), f"round {round_}"
                if tokens:
                    assert min(tokens) > highest_token, f"round {round_}: token went back"
                    highest_token = max(tokens)
                mutex = clustersync.Mutex(store, "m", ttl=5.0)
                assert mutex.acquire(timeout=10), f"round {round_}: the lock is stuck"
                assert mutex.token is not None
                assert mutex.token > highest_token
                highest_token = mutex.token
                mutex.release()

        # Nothing lost: every due job a worker saw stored fires (claims of the killed
        # schedulers expire after 1 s and are taken over by this one).
        with clustersync.open_store(url, namespace=namespace) as store:
            scheduler = clustersync.get_job_once_scheduler(store, claim_ttl=1.0)
            late: set[str] = set()
            scheduler.set_callback(lambda key, props: late.add(key))
            scheduler.start()

            def leftover() -> list[str]:
                jobs = scheduler.list_scheduled_jobs()
                return [job.key for job in jobs if not _FAR_KEY.match(job.key)]

            deadline = time.monotonic() + 30
            while due - fired - late or leftover():
                if time.monotonic() > deadline:
                    pytest.fail(f"due jobs lost: {sorted(due - fired - late)[:10]}")
                time.sleep(0.05)
            assert scheduler.stop(timeout=10)
    finally:
        cluster.kill_all()
    assert integrity(path) == ["ok"]
    print(
        f"sqlite crash: {2 * ROUNDS} SIGKILLs, {len(in_flight)} mid-batch, {len(committed)}"
        f" batches committed, {len(due)} due jobs all fired, last token {highest_token}"
    )
    # The kills did land in the middle of writes (a batch begun but not seen committed).
    assert in_flight, "no kill hit a schedule_many in flight"
    assert len(committed) >= ROUNDS, "the workers hardly wrote anything"
