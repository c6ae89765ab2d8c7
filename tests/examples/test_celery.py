"""examples/celery_app: three real ``celery worker --pool prefork -c 2`` processes on a
broker they share without a server (kombu's SQLAlchemy transport on SQLite). Every pool
process runs the clustersync "beat" (six in all), yet each period's task is enqueued once
and executed once: no period twice, none skipped."""

from __future__ import annotations

import itertools
import signal
import sys
import time
from collections import Counter
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import pytest

from tests.examples.conftest import example_backends
from tests.examples.support import EXAMPLES, Service, python_env, read_events, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKERS = 3
CONCURRENCY = 2
PERIOD = 1.0  # DIGEST_PERIOD_SECONDS in the test (the example's default is an hour)
PERIODS = 6  # how many periods the test watches


def worker_argv(n: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "celery_app", "worker",
        "--pool", "prefork", "--concurrency", str(CONCURRENCY),
        "--hostname", f"w{n}@%h", "--loglevel", "INFO",
        # The SQLAlchemy transport has no broadcast: no gossip, mingle or heartbeat (they
        # only serve monitoring and remote control).
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip


@pytest.mark.parametrize("backend", example_backends()[:1])
def test_each_period_is_enqueued_once(tmp_path: Path, store_url: str, namespace: str) -> None:
    events_path = tmp_path / "events.jsonl"
    env = python_env(
        CELERY_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        CLUSTERSYNC_URL=store_url,
        CLUSTERSYNC_NAMESPACE=namespace,
        DIGEST_PERIOD_SECONDS=str(PERIOD),
        EVENT_LOG=str(events_path),
    )
    with ExitStack() as stack:

        def start(n: int) -> Service:
            log = tmp_path / f"worker{n}.log"
            return stack.enter_context(Service(worker_argv(n), cwd=EXAMPLES, env=env, log=log))

        # The first worker creates the broker's tables and queue; workers starting at the
        # same moment on a fresh SQLite broker would race to insert the same queue row.
        workers = [start(0)]
        wait_until(lambda: " ready." in workers[0].output(), "the first worker")
        workers += [start(n) for n in range(1, WORKERS)]

        def diagnostics() -> str:
            logs = "\n".join(w.output()[-3000:] for w in workers)
            return logs + "\n" + "\n".join(map(str, read_events(events_path)))

        wait_until(
            lambda: len(read_events(events_path, "beat-started")) >= WORKERS * CONCURRENCY,
            "every pool process to start the schedule",
            diagnostics=diagnostics,
        )
        ready = time.time()
        time.sleep(PERIODS * PERIOD)

        def all_sent() -> bool:
            enqueued = Counter(e["period"] for e in read_events(events_path, "enqueued"))
            executed = Counter(e["period"] for e in read_events(events_path, "digest"))
            return enqueued == executed

        wait_until(all_sent, "the enqueued tasks to run", diagnostics=diagnostics)
        # The schedule keeps sending until the workers stop: a task sent from here on may
        # still be in the broker at the shutdown (kept there for the next worker).
        settled = time.time()
        for worker in workers:  # a warm shutdown: pool processes close their stores
            worker.proc.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.stop()
            assert "Traceback" not in worker.output(), diagnostics()

    events = read_events(events_path)
    beats = {e["pid"] for e in events if e["event"] == "beat-started"}
    enqueued = Counter(e["period"] for e in events if e["event"] == "enqueued")
    executed = Counter(e["period"] for e in events if e["event"] == "digest")
    assert all(count == 1 for count in enqueued.values()), f"a period enqueued twice: {enqueued}"
    assert not executed - enqueued, "a task ran that was never enqueued"
    sent_at = {e["period"]: e["time"] for e in events if e["event"] == "enqueued"}
    left = enqueued - executed
    assert all(sent_at[period] >= settled for period in left), f"never executed: {left}"
    # Every period once all workers run; while they start, a slow first send (broker
    # tables created, SQLite busy) may end after the next period began, which is then
    # skipped (wait_for_rounded_interval counts from the end of the previous run).
    starts = sorted(datetime.fromisoformat(period).timestamp() for period in enqueued)
    steady = [start for start in starts if start >= ready]
    gaps = [b - a for a, b in itertools.pairwise(steady)]
    assert all(gap == PERIOD for gap in gaps), f"a period was skipped: {starts}"
    assert len(steady) >= PERIODS, starts
    by = Counter(e["pid"] for e in events if e["event"] == "enqueued")
    skipped = round((starts[-1] - starts[0]) / PERIOD) + 1 - len(starts)
    print(
        f"\ncelery: {WORKERS} workers x {CONCURRENCY} pool processes ({len(beats)} running the "
        f"schedule): {len(starts)} periods ({len(steady)} in a row after start-up, {skipped} "
        f"skipped during it), each enqueued and executed once; enqueued by {len(by)} "
        f"processes {dict(by)}"
    )
