"""A worker process for the multi-process tests: ``python worker.py SCENARIO CONFIG_JSON``.

Each worker opens the store ``config["url"]`` (SQLite, Redis or PostgreSQL) in namespace
``config["namespace"]`` and plays one scenario with the public threading API (``import
clustersync``). It reports what happens as JSON lines in its own event log
(``config["log"]``), one object per line with at least ``event``, ``pid``, ``t``
(``time.monotonic()``, shared by all processes on the host) and ``wall`` (``time.time()``).
The test drives it through files: a worker waiting for a command polls until the file
``<dir>/<name>`` exists.

A watchdog ends the worker if its parent dies or after ``config["lifetime"]`` seconds,
so a crashed test run leaves no process behind.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clustersync
from clustersync.testing.checker import SharedFencedResource

#: How often a worker looks for a command file.
COMMAND_POLL = 0.005


class Reporter:
    """Appends one JSON object per line to the worker's event log."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the worker
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"event": event, "pid": os.getpid(), "t": time.monotonic(), "wall": time.time()}
        record.update(fields)
        line = json.dumps(record) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()


def wait_for_file(path: Path, timeout: float) -> None:
    """Block until ``path`` exists (a command from the test)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no command file {path} after {timeout}s")
        time.sleep(COMMAND_POLL)


def start_watchdog(lifetime: float) -> None:
    parent = os.getppid()

    def watch() -> None:
        deadline = time.monotonic() + lifetime
        while time.monotonic() < deadline and os.getppid() == parent:
            time.sleep(0.2)
        os._exit(3)

    threading.Thread(target=watch, name="worker-watchdog", daemon=True).start()


# -- scenarios -------------------------------------------------------------------------


def contend(store: clustersync.Store, cfg: dict[str, Any], report: Reporter) -> None:
    """Take the mutex ``cfg["mutex"]`` ``cfg["rounds"]`` times; report each hold."""
    mutex = clustersync.Mutex(store, cfg["mutex"], ttl=cfg.get("ttl", 10.0))
    report("ready")
    wait_for_file(Path(cfg["go"]), 30)
    rng = random.Random(os.getpid())
    for _ in range(cfg["rounds"]):
        mutex.acquire()
        start = time.monotonic()
        token = mutex.token
        time.sleep(cfg.get("hold", 0.0005))  # the tiny critical section
        end = time.monotonic()
        mutex.release()
        report("hold", token=token, start=start, end=end)
        time.sleep(rng.uniform(0, cfg.get("pause", 0.002)))
    report("done")


def hold(store: clustersync.Store, cfg: dict[str, Any], report: Reporter) -> None:
    """Acquire the mutex and keep it (renewing) until the file ``cfg["release"]`` exists;
    then report whether the hold was lost and what ``release()`` did."""
    lost = threading.Event()
    lost_calls: list[float] = []

    def on_lost() -> None:
        lost_calls.append(time.monotonic())
        report("on_lost", calls=len(lost_calls))
        lost.set()

    mutex = clustersync.Mutex(store, cfg["mutex"], ttl=cfg["ttl"], on_lost=on_lost)
    if cfg.get("signal_waiting", False):
        report("waiting")
    mutex.acquire()
    report("acquired", token=mutex.token)
    release_file = Path(cfg["release"]) if cfg.get("release") else None
    wait_lost = cfg.get("wait_lost", 0.0)
    while release_file is None or not release_file.exists():
        if wait_lost and lost.is_set():
            break
        time.sleep(COMMAND_POLL)
    if wait_lost:  # give the renewer the chance to notice a loss (and call on_lost)
        lost.wait(wait_lost)
    locked = mutex.locked()
    try:
        mutex.check()
        check_error = None
    except clustersync.ClusterSyncError as exc:
        check_error = type(exc).__name__
    try:
        mutex.release()
        release_error = None
    except clustersync.ClusterSyncError as exc:
        release_error = type(exc).__name__
    time.sleep(0.2)  # a late second on_lost call would show up in the log
    report(
        "released",
        locked=locked,
        check_error=check_error,
        release_error=release_error,
        on_lost_calls=len(lost_calls),
    )
    wait_for_file(Path(cfg["exit"]), cfg.get("lifetime", 60))


def schedule_once(store: clustersync.Store, cfg: dict[str, Any], report: Reporter) -> None:
    """Start a one-shot scheduler (callback: log, then block if ``cfg["block"]``) and
    optionally schedule ``cfg["job"]`` = {key, delay, props} on it (or each job of the list
    ``cfg["jobs"]``). A job with ``at`` (Unix time) instead of ``delay`` runs at that
    absolute time rather than ``delay`` seconds after this process's ``datetime.now()``."""
    block = cfg.get("block", False)

    def callback(key: str, props: Any) -> None:
        report("fired", key=key, props=props)
        if block:
            threading.Event().wait()  # never returns: the test kills this process
        report("finished", key=key)

    options: dict[str, Any] = {}
    if "claim_ttl" in cfg:
        options["claim_ttl"] = cfg["claim_ttl"]
    scheduler = clustersync.get_job_once_scheduler(store, **options)
    scheduler.set_callback(callback)
    scheduler.start()
    jobs = list(cfg.get("jobs", []))
    if cfg.get("job") is not None:
        jobs.append(cfg["job"])
    for job in jobs:
        if "at" in job:
            run_at = datetime.fromtimestamp(job["at"], UTC)
        else:
            run_at = datetime.now(UTC) + timedelta(seconds=job["delay"])
        scheduler.schedule_once(job["key"], run_at, job["props"])
        report("scheduled", key=job["key"], run_at=run_at.timestamp())
    report("ready")
    wait_for_file(Path(cfg["exit"]), cfg.get("lifetime", 60))
    scheduler.stop()
    report("stopped")


def recurring(store: clustersync.Store, cfg: dict[str, Any], report: Reporter) -> None:
    """Schedule the recurring job ``cfg["key"]`` for ``cfg["duration"]`` seconds."""

    def callback() -> None:
        start = time.monotonic()
        time.sleep(cfg.get("work", 0.02))
        report("run", start=start, end=time.monotonic())

    report("ready")
    wait_for_file(Path(cfg["go"]), 30)
    interval = timedelta(seconds=cfg["interval"])
    job = clustersync.schedule(
        store, cfg["key"], clustersync.wait_for_interval(interval), callback, ttl=5.0
    )
    time.sleep(cfg["duration"])
    closed = job.close(timeout=10)
    report("closed", ok=closed)


def hammer(store: clustersync.Store, cfg: dict[str, Any], report: Reporter) -> None:
    """Write as fast as possible until killed: batches of ``cfg["batch"]`` far-future
    one-shot jobs (``schedule_many``, keys ``PREFIX-N-I``), a due job per batch (``PREFIX-
    due-N``, fired by this process's scheduler) and an acquisition of the mutex
    ``cfg["mutex"]``. Each step is reported before (``batch``) or after (``batched``,
    ``due``, ``token``) it is written, so the test knows what was in flight."""
    prefix, size = cfg["prefix"], cfg["batch"]

    def callback(key: str, props: Any) -> None:
        report("fired", key=key)

    scheduler = clustersync.get_job_once_scheduler(store, claim_ttl=cfg.get("claim_ttl", 1.0))
    scheduler.set_callback(callback)
    scheduler.start()
    mutex = clustersync.Mutex(store, cfg["mutex"], ttl=cfg.get("ttl", 1.0))
    far = datetime.now(UTC) + timedelta(days=365)
    report("ready")
    for n in itertools.count():
        report("batch", n=n)
        scheduler.schedule_many([(f"{prefix}-{n}-{i}", far, {"n": n, "i": i}) for i in range(size)])
        report("batched", n=n)
        scheduler.schedule_once(f"{prefix}-due-{n}", datetime.now(UTC), None)
        report("due", key=f"{prefix}-due-{n}")
        mutex.acquire()
        report("token", token=mutex.token)
        mutex.release()


def failing(store: clustersync.Store, cfg: dict[str, Any], report: Reporter) -> None:
    """A one-shot scheduler with ``Retry(attempts=cfg["attempts"], backoff=cfg["backoff"]
    seconds)`` whose callback reports ``attempt`` (key, attempt number, due time) and then
    raises, unless the attempt is ``cfg["succeed_at"]``; an attempt listed in
    ``cfg["block_at"]`` blocks forever instead (the test kills the process)."""
    succeed_at = cfg.get("succeed_at")
    block_at = set(cfg.get("block_at", []))

    def callback(key: str, props: Any, context: clustersync.JobContext) -> None:
        report("attempt", key=key, attempt=context.attempt, due=context.run_at.timestamp())
        if context.attempt in block_at:
            threading.Event().wait()  # never returns: the test kills this process
        if context.attempt != succeed_at:
            raise RuntimeError(f"attempt {context.attempt} of {key} failed")
        report("succeeded", key=key, attempt=context.attempt)

    retry = clustersync.Retry(
        attempts=cfg["attempts"],
        backoff=timedelta(seconds=cfg["backoff"]),
        max_backoff=timedelta(seconds=cfg.get("max_backoff", 3600)),
    )
    scheduler = clustersync.get_job_once_scheduler(
        store, claim_ttl=cfg.get("claim_ttl", 30.0), retry=retry
    )
    scheduler.set_callback(callback)
    scheduler.start()
    for key in cfg.get("keys", []):
        scheduler.schedule_once(key, datetime.now(UTC), {"key": key})
    report("ready")
    wait_for_file(Path(cfg["exit"]), cfg.get("lifetime", 60))
    scheduler.stop()
    report("stopped")


def campaign(store: clustersync.Store, cfg: dict[str, Any], report: Reporter) -> None:
    """Campaign for the election ``cfg["election"]`` until the file ``cfg["exit"]`` exists.
    While leader, write the term to the shared fenced resource ``cfg["resource"]`` every
    ``cfg["every"]`` seconds (checking ``is_leader`` before each write). The file
    ``cfg["resign"]`` (deleted when seen) makes it resign, then campaign again after
    ``cfg["rest"]`` seconds. Reports ``elected`` (term), ``resigning``, ``revoked`` (term,
    whether it resigned) and each rejected ``write``."""
    resource = SharedFencedResource(cfg["resource"])
    state: dict[str, Any] = {"term": None, "resigned": False}

    def elected(term: int) -> None:
        state["term"], state["resigned"] = term, False
        report("elected", term=term)

    def revoked() -> None:
        report("revoked", term=state["term"], resigned=state["resigned"])

    election = clustersync.Election(
        store, cfg["election"], ttl=cfg["ttl"], on_elected=elected, on_revoked=revoked
    )
    resign_file, exit_file = Path(cfg["resign"]), Path(cfg["exit"])
    election.start()
    report("ready")
    while not exit_file.exists():
        term = election.term
        if term is not None and not resource.write(term, name="leader", holder=str(os.getpid())):
            report("write", term=term, accepted=False)
        if resign_file.exists():
            resign_file.unlink()
            state["resigned"] = True
            report("resigning", term=term)
            election.resign()
            time.sleep(cfg.get("rest", 0.5))
            election.start()
        time.sleep(cfg.get("every", 0.01))
    election.stop()
    report("stopped")


def slots(store: clustersync.Store, cfg: dict[str, Any], report: Reporter) -> None:
    """Take a slot of the semaphore ``cfg["semaphore"]`` (``cfg["limit"]``) again and
    again, for ``cfg["hold"]`` seconds each, until the file ``cfg["exit"]`` exists.
    Reports ``acquired`` (token, start) before the hold and ``hold`` (token, start, end,
    lost) after it; ``lost`` is whether the holder was told it lost the slot."""
    lost = threading.Event()
    sem = clustersync.Semaphore(
        store, cfg["semaphore"], limit=cfg["limit"], ttl=cfg["ttl"], on_lost=lost.set
    )
    exit_file = Path(cfg["exit"])
    report("ready")
    rng = random.Random(os.getpid())
    while not exit_file.exists():
        if not sem.acquire(timeout=1.0):
            continue
        start = time.monotonic()
        report("acquired", token=sem.token, start=start)
        time.sleep(cfg["hold"])
        end = time.monotonic()
        token = sem.token
        try:
            sem.release()
            told = lost.is_set()
        except clustersync.LockLostError:
            told = True
        lost.clear()
        report("hold", token=token, start=start, end=end, lost=told)
        time.sleep(rng.uniform(0, cfg.get("pause", 0.01)))


SCENARIOS = {
    "contend": contend,
    "hold": hold,
    "schedule_once": schedule_once,
    "recurring": recurring,
    "hammer": hammer,
    "failing": failing,
    "campaign": campaign,
    "slots": slots,
}


def main(argv: list[str]) -> int:
    scenario, raw = argv[1], argv[2]
    cfg: dict[str, Any] = json.loads(raw)
    start_watchdog(cfg.get("lifetime", 60))
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s [{os.getpid()}] %(name)s %(levelname)s %(message)s",
    )
    report = Reporter(cfg["log"])
    report("started", scenario=scenario)
    with clustersync.open_store(cfg["url"], namespace=cfg["namespace"]) as store:
        SCENARIOS[scenario](store, cfg, report)
    report("exit")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
