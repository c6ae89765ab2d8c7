"""``clustersync demo``: worker processes that share a mutex and jobs, then a verification.

The parent (:func:`run_demo`) creates a temporary directory with a fresh SQLite store
(or uses an explicit ``--url``), starts N workers with ``python -m clustersync._demo``,
schedules a batch of one-shot jobs (some of them through the workers), shows what happens
and finally checks the workers' event logs, with the safety checker of
:mod:`clustersync.testing.checker` for what it knows (overlaps, tokens, firings, runs):

- the shared :class:`~clustersync.Mutex` was never held by two workers at once and its
  fencing tokens strictly increased with every hold;
- every one-shot job fired exactly once (none missing, none duplicated), never before its
  ``run_at``, and a cancelled job never fired;
- the recurring job never ran on two workers at once and ran at most once per interval
  in total (not once per worker);
- every worker exited cleanly, with no lost lease and no error.

Each worker appends JSON lines (one event each, with ``time.monotonic()`` timestamps,
comparable between processes of one host) to its own log file. The parent talks to a
worker through its stdin: one JSON command per line; end of file means "stop" — so a
worker also stops by itself when the parent dies.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import IO, Any, TextIO

from ._core.intervals import wait_for_interval
from ._sync.job import schedule
from ._sync.job_once import JobOnceScheduler, get_job_once_scheduler
from ._sync.mutex import Mutex
from ._sync.store import Store, open_store
from .exceptions import ClusterSyncError, LockLostError
from .stores.registry import kind_for_url
from .testing.checker import Firing, HoldLog, Run, hold_violations, job_violations, run_violations

LOCK_NAME = "demo-lock"
LOCK_TTL = 5.0
RECURRING_KEY = "demo-tick"
RECURRING_INTERVAL = 1.0
RECURRING_RUN_TIME = 0.2
CANCELLED_KEY = "demo-cancelled"
#: Every WORKER_JOB_EVERY-th one-shot job is scheduled by a worker, not by the parent.
WORKER_JOB_EVERY = 4
READY_TIMEOUT = 30.0
FIRE_GRACE = 5.0
STOP_TIMEOUT = 10.0
POLL = 0.05
#: Clock tolerance of the "never early" and "once per interval" checks (seconds).
TOLERANCE = 0.05


# =========================================================================================
# Worker process
# =========================================================================================


class EventLog:
    """Append-only JSON-lines event log of one worker, safe to use from any thread."""

    def __init__(self, path: str, worker: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._worker = worker
        self._lock = threading.Lock()

    def write(self, ev: str, **fields: Any) -> None:
        record = {"ev": ev, "w": self._worker, "mono": time.monotonic(), **fields}
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _lock_loop(store: Store, log: EventLog, stop: threading.Event) -> None:
    """Take the shared mutex again and again for a short critical section."""
    mutex = Mutex(store, LOCK_NAME, ttl=LOCK_TTL, on_lost=lambda: log.write("lost"))
    rng = random.Random()
    while not stop.is_set():
        try:
            if not mutex.acquire(timeout=1.0, cancel=stop):
                continue
        except ClusterSyncError as exc:
            log.write("error", msg=f"acquire failed: {exc}")
            stop.wait(0.2)
            continue
        start = time.monotonic()
        token = mutex.token
        time.sleep(rng.uniform(0.02, 0.06))  # the critical section
        end = time.monotonic()
        log.write("hold", token=token, start=start, end=end)
        try:
            mutex.release()
        except LockLostError as exc:
            log.write("error", msg=f"lease of token {token} lost: {exc}")
        except ClusterSyncError as exc:
            log.write("error", msg=f"release failed: {exc}")
        stop.wait(rng.uniform(0.005, 0.04))  # give the others a chance


def _schedule_jobs(scheduler: JobOnceScheduler, log: EventLog, jobs: Sequence[Any]) -> None:
    keys = []
    for key, run_at, props in jobs:
        try:
            scheduler.schedule_once(key, datetime.fromisoformat(run_at), props)
            keys.append(key)
        except (ClusterSyncError, ValueError, TypeError) as exc:
            log.write("error", msg=f"could not schedule {key!r}: {exc}")
    log.write("scheduled", keys=keys)


def worker_main(argv: Sequence[str] | None = None) -> int:
    """One demo worker: mutex loop, recurring job and one-shot scheduler until stdin ends."""
    parser = argparse.ArgumentParser(prog="python -m clustersync._demo")
    parser.add_argument("--id", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s {args.id} %(name)s %(levelname)s %(message)s",
    )
    log = EventLog(args.log, args.id)
    stop = threading.Event()
    try:
        store = open_store(args.url, namespace=args.namespace)
    except ClusterSyncError as exc:
        log.write("error", msg=f"cannot open the store: {exc}")
        log.close()
        return 1

    def on_fire(key: str, props: Any) -> None:
        now = time.time()
        late: float | None = None
        by: Any = None
        if isinstance(props, dict):
            by = props.get("by")
            with contextlib.suppress(KeyError, TypeError, ValueError):
                late = now - datetime.fromisoformat(props["run_at"]).timestamp()
        log.write("fire", key=key, by=by, late=late)

    def on_tick() -> None:
        start = time.monotonic()
        time.sleep(RECURRING_RUN_TIME)
        log.write("tick", start=start, end=time.monotonic())

    status = 0
    with store:
        scheduler = get_job_once_scheduler(store)
        scheduler.set_callback(on_fire)
        scheduler.start()
        job = schedule(
            store, RECURRING_KEY, wait_for_interval(timedelta(seconds=RECURRING_INTERVAL)), on_tick
        )
        locker = threading.Thread(
            target=_lock_loop, args=(store, log, stop), name="demo-lock-loop", daemon=True
        )
        locker.start()
        log.write("ready", pid=os.getpid())
        try:
            for line in sys.stdin:  # commands from the parent; end of file means stop
                command = json.loads(line)
                if "schedule" in command:
                    _schedule_jobs(scheduler, log, command["schedule"])
        except KeyboardInterrupt:
            status = 130
        finally:
            stop.set()
            locker.join()
            job.close()
            scheduler.stop()
    log.write("exit")
    log.close()
    return status


# =========================================================================================
# Verification (pure: events in, checks out)
# =========================================================================================


@dataclass(frozen=True)
class Check:
    ok: bool
    message: str


def _per_worker(counter: Counter[str]) -> str:
    return ", ".join(f"{w} {n}" for w, n in sorted(counter.items(), key=_worker_order))


def _worker_order(item: tuple[str, int]) -> tuple[int, str]:
    name = item[0]
    return (int(name[1:]) if name[1:].isdigit() else 0), name


def verify(
    events: Sequence[dict[str, Any]],
    *,
    expected_jobs: dict[str, str],
    cancelled_key: str | None,
    cancel_ok: bool,
    exit_codes: dict[str, int | None],
) -> list[Check]:
    """The demo's verification from the workers' events.

    ``expected_jobs`` maps each one-shot key to who scheduled it; ``exit_codes`` maps each
    worker to its exit status (None if it had to be killed). The holds, firings and
    recurring runs are judged by :mod:`clustersync.testing.checker`; the demo adds what
    only it knows: when each job was due, which one was cancelled, the recurring interval
    and how the workers ended.
    """
    checks: list[Check] = []
    holds: list[HoldLog] = []
    firings: list[Firing] = []
    runs: list[Run] = []
    lateness: list[tuple[str, float]] = []  # (key, seconds after its run_at) per firing
    for e in events:
        if e["ev"] == "hold":
            start, end = float(e["start"]), float(e["end"])
            holds.append(HoldLog(LOCK_NAME, int(e["token"]), start, end, str(e["w"])))
        elif e["ev"] == "fire":
            firings.append(Firing(str(e["key"]), str(e["w"]), float(e["mono"])))
            if e.get("late") is not None:
                lateness.append((str(e["key"]), float(e["late"])))
        elif e["ev"] == "tick":
            runs.append(Run(RECURRING_KEY, float(e["start"]), float(e["end"]), str(e["w"])))

    # Mutex: no two holds overlap; tokens strictly increase in the order of the holds.
    report, violations = hold_violations(holds)
    tokens = [v for v in violations if v.startswith("token ")]  # used twice, not increasing
    overlapping = [v for v in violations if v not in tokens]
    holders = Counter(h.holder for h in holds)
    detail = f"{report.holds} holds ({_per_worker(holders)})" if holds else "no holds at all"
    if overlapping:
        detail += f", {len(overlapping)} OVERLAPPING (e.g. {overlapping[0]})"
    else:
        detail += ", no two overlapping"
    checks.append(Check(bool(holds) and not overlapping, f"mutex {LOCK_NAME!r}: {detail}"))

    if not holds:
        checks.append(Check(False, "fencing tokens: no holds to check"))
    elif tokens:
        more = f" (+{len(tokens) - 1} more)" if len(tokens) > 1 else ""
        checks.append(Check(False, f"fencing tokens NOT strictly increasing: {tokens[0]}{more}"))
    else:
        lowest, highest = min(h.token for h in holds), max(h.token for h in holds)
        checks.append(Check(True, f"fencing tokens strictly increasing ({lowest} -> {highest})"))

    # One-shot jobs: each expected key fired exactly once (no worker crashes in the demo),
    # never early; the cancelled one never.
    jobs, violations = job_violations(expected_jobs, [f for f in firings if f.key != cancelled_key])
    by_whom = Counter(expected_jobs.values())
    firing_workers = Counter(f.holder for f in firings if f.key in expected_jobs)
    message = (
        f"one-shot jobs: {jobs.exactly_once}/{jobs.scheduled} fired exactly once "
        f"(scheduled by {_per_worker(by_whom)}; fired on {_per_worker(firing_workers) or '-'})"
    )
    if violations:
        message += (
            f"; missing: {', '.join(jobs.never_fired) or 'none'}; duplicated: "
            f"{', '.join(f'{k} x{n}' for k, n in jobs.repeated.items()) or 'none'}"
        )
        if jobs.unscheduled:
            message += f"; unexpected: {', '.join(jobs.unscheduled)}"
    checks.append(Check(not violations, message))

    late = [seconds for _, seconds in lateness]
    early = [key for key, seconds in lateness if seconds < -TOLERANCE]
    if late:
        spread = (
            f"after run_at: median {statistics.median(late) * 1000:.0f} ms, "
            f"max {max(late) * 1000:.0f} ms"
        )
        if early:
            checks.append(Check(False, f"{len(early)} one-shot job(s) fired EARLY ({early[0]})"))
        else:
            checks.append(Check(True, f"one-shot jobs never fired before run_at ({spread})"))
    elif expected_jobs:
        checks.append(Check(False, "one-shot jobs: none fired"))

    if cancelled_key is not None:
        if not cancel_ok:
            checks.append(Check(False, f"cancel({cancelled_key!r}) did not report a removal"))
        elif any(f.key == cancelled_key for f in firings):
            checks.append(Check(False, f"cancelled job {cancelled_key!r} FIRED anyway"))
        else:
            checks.append(Check(True, f"cancelled job {cancelled_key!r} never fired"))

    # Recurring job: never two runs at once, and at most one run per interval in total.
    recurring, violations = run_violations(runs)
    ordered = sorted(runs, key=lambda r: r.start)
    gaps = [b.start - a.end for a, b in itertools.pairwise(ordered)]
    too_soon = [g for g in gaps if g < RECURRING_INTERVAL - TOLERANCE]
    message = f"recurring job {RECURRING_KEY!r}: {recurring.runs} runs"
    if runs:
        message += f" ({_per_worker(Counter(r.holder for r in runs))})"
    if violations:
        message += f", {len(violations)} OVERLAPPING (e.g. {violations[0]})"
    else:
        message += ", never overlapping"
    if too_soon:
        message += f", {len(too_soon)} started too soon (gap {min(too_soon):.2f}s)"
    elif len(runs) > 1:
        message += f", each >= {RECURRING_INTERVAL:g}s after the previous one"
    checks.append(Check(bool(runs) and not violations and not too_soon, message))

    # Workers: clean exits, no lost leases, no errors.
    problems = [
        f"{e['w']}: {e.get('msg', 'lease lost')}" for e in events if e["ev"] in ("error", "lost")
    ]
    unclean = sorted(w for w, code in exit_codes.items() if code != 0)
    clean = len(exit_codes) - len(unclean)
    message = f"{clean}/{len(exit_codes)} workers exited cleanly"
    if unclean:
        message += " (not: " + ", ".join(f"{w} status {exit_codes[w]}" for w in unclean) + ")"
    if problems:
        message += f"; {len(problems)} error(s), first: {problems[0]}"
    else:
        message += ", no lost lease, no errors"
    checks.append(Check(not unclean and not problems, message))
    return checks


# =========================================================================================
# Parent: start workers, schedule jobs, show progress, verify
# =========================================================================================


@dataclass(eq=False)
class _Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: str
    err_path: str
    reader: IO[bytes]
    pending: bytes = b""
    ready: bool = False
    exit_code: int | None = None

    def read_events(self) -> list[dict[str, Any]]:
        data = self.reader.read()
        if not data:
            return []
        data = self.pending + data
        *lines, self.pending = data.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def send(self, command: dict[str, Any]) -> bool:
        stdin = self.proc.stdin
        if stdin is None:
            return False
        try:
            stdin.write(json.dumps(command).encode() + b"\n")
            stdin.flush()
        except OSError:
            return False
        return True

    def stderr_tail(self, lines: int = 5) -> list[str]:
        try:
            with open(self.err_path, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()[-lines:]
        except OSError:
            return []


@dataclass(eq=False)
class _Demo:
    workers: int
    seconds: float
    jobs: int
    url: str
    namespace: str
    tmpdir: str
    out: TextIO
    procs: list[_Worker] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    t0: float = 0.0
    fired: set[str] = field(default_factory=set)
    holds: Counter[str] = field(default_factory=Counter)
    ticks: int = 0

    def say(self, text: str, at: float | None = None) -> None:
        if at is None:
            self.out.write(text + "\n")
        else:
            self.out.write(f"[{max(0.0, at - self.t0):5.1f}s] {text}\n")
        self.out.flush()

    # -- workers ---------------------------------------------------------------------------

    def start_workers(self) -> None:
        import clustersync

        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(clustersync.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_parent, env.get("PYTHONPATH", "")) if p
        )
        for i in range(1, self.workers + 1):
            name = f"w{i}"
            log_path = os.path.join(self.tmpdir, f"{name}.events.jsonl")
            err_path = os.path.join(self.tmpdir, f"{name}.stderr.log")
            open(log_path, "w").close()  # create it empty; the worker appends
            with open(err_path, "wb") as err:
                kwargs: dict[str, Any] = {}
                if sys.platform == "win32":  # pragma: no cover
                    kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
                else:
                    kwargs["start_new_session"] = True  # Ctrl-C goes to the parent only
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "clustersync._demo",
                        "--id",
                        name,
                        "--url",
                        self.url,
                        "--namespace",
                        self.namespace,
                        "--log",
                        log_path,
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env=env,
                    **kwargs,
                )
            reader = open(log_path, "rb")  # noqa: SIM115 - closed in stop_workers()
            self.procs.append(_Worker(name, proc, log_path, err_path, reader))
            self.say(f"  {name} started (pid {proc.pid})")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(w.ready for w in self.procs):
            for worker in self.procs:
                for event in worker.read_events():
                    self.events.append(event)
                    if event["ev"] == "ready":
                        worker.ready = True
                    elif event["ev"] == "error":
                        raise _DemoFailed(f"{worker.name}: {event.get('msg')}")
                if not worker.ready and worker.proc.poll() is not None:
                    tail = "; ".join(worker.stderr_tail(3)) or "no output"
                    raise _DemoFailed(
                        f"worker {worker.name} exited with status {worker.proc.returncode} "
                        f"before it was ready: {tail}"
                    )
            if time.monotonic() > deadline:
                raise _DemoFailed(f"workers not ready after {READY_TIMEOUT:g}s")
            time.sleep(0.02)

    def stop_workers(self, timeout: float = STOP_TIMEOUT) -> None:
        """Close every worker's stdin (= stop), wait, kill stragglers; idempotent."""
        for worker in self.procs:
            if worker.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    worker.proc.stdin.close()
        deadline = time.monotonic() + timeout
        for worker in self.procs:
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
                worker.exit_code = worker.proc.returncode
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
                worker.exit_code = None

    def close_readers(self) -> None:
        for worker in self.procs:
            worker.reader.close()

    # -- progress --------------------------------------------------------------------------

    def poll(self, store: Store | None = None) -> None:
        """Read new events and show the interesting ones."""
        new: list[dict[str, Any]] = []
        for worker in self.procs:
            new.extend(worker.read_events())
        new.sort(key=lambda e: float(e.get("end", e["mono"])))
        for event in new:
            self.events.append(event)
            self.show(event)

    def show(self, event: dict[str, Any]) -> None:
        kind, who = event["ev"], event["w"]
        if kind == "hold":
            self.holds[who] += 1
        elif kind == "fire":
            self.fired.add(str(event["key"]))
            late = event.get("late")
            timing = "" if late is None else f", {float(late) * 1000:.0f} ms after its run_at"
            self.say(
                f"{who}  one-shot {event['key']} fired (scheduled by {event['by']}{timing})",
                float(event["mono"]),
            )
        elif kind == "tick":
            self.ticks += 1
            self.say(
                f"{who}  recurring job {RECURRING_KEY!r} run #{self.ticks} "
                f"({(float(event['end']) - float(event['start'])) * 1000:.0f} ms)",
                float(event["end"]),
            )
        elif kind == "scheduled":
            self.say(f"{who}  scheduled {len(event['keys'])} one-shot job(s)", float(event["mono"]))
        elif kind in ("error", "lost"):
            self.say(f"{who}  ERROR {event.get('msg', 'lease lost')}", float(event["mono"]))

    def status(self, store: Store) -> None:
        holder = "free"
        pids = {str(w.proc.pid): w.name for w in self.procs}
        with contextlib.suppress(ClusterSyncError):
            for lease in store._ops.list_leases():
                if lease.name == "m:" + LOCK_NAME:
                    pid = lease.owner.rsplit(":", 2)[-2] if lease.owner.count(":") >= 2 else ""
                    holder = f"held by {pids.get(pid, lease.owner)} (token {lease.token})"
        total = sum(self.holds.values())
        self.say(
            f"lock {LOCK_NAME!r} {holder}; {total} holds so far ({_per_worker(self.holds)}); "
            f"one-shot fired {len(self.fired)}/{self.jobs}; recurring runs {self.ticks}",
            time.monotonic(),
        )

    # -- the run ---------------------------------------------------------------------------

    def plan_jobs(self, start_wall: float) -> list[tuple[str, str, str]]:
        """(key, run_at ISO, scheduled by) spread over the run."""
        first, last = 0.3, max(0.3, self.seconds - 1.0)
        width = len(str(max(self.jobs - 1, 0)))
        plan = []
        for i in range(self.jobs):
            offset = first + (last - first) * i / max(self.jobs - 1, 1)
            run_at = datetime.fromtimestamp(start_wall + offset, UTC).isoformat()
            by = "parent"
            if i % WORKER_JOB_EVERY == WORKER_JOB_EVERY - 1:
                by = f"w{(i // WORKER_JOB_EVERY) % self.workers + 1}"
            plan.append((f"demo-job-{i:0{width}d}", run_at, by))
        return plan

    def run(self) -> int:
        self.say(
            f"clustersync demo: {self.workers} worker processes on {self.url} "
            f"(namespace {self.namespace!r}) for {self.seconds:g}s"
        )
        self.say(
            f"  each worker loops taking Mutex {LOCK_NAME!r} for a short critical section, "
            f"schedules the recurring job {RECURRING_KEY!r} (every {RECURRING_INTERVAL:g}s) "
            "and runs the one-shot scheduler"
        )
        with open_store(self.url, namespace=self.namespace) as store:
            self.start_workers()
            self.wait_ready()
            self.t0 = time.monotonic()
            plan = self.plan_jobs(time.time())
            expected = {key: by for key, _, by in plan}
            scheduler = get_job_once_scheduler(store)
            mine = [
                (k, datetime.fromisoformat(r), _props(i, r, by))
                for i, (k, r, by) in enumerate(plan)
                if by == "parent"
            ]
            scheduler.schedule_many(mine)
            for worker in self.procs:
                theirs = [
                    [k, r, _props(i, r, by)]
                    for i, (k, r, by) in enumerate(plan)
                    if by == worker.name
                ]
                if theirs and not worker.send({"schedule": theirs}):
                    self.say(f"  could not send jobs to {worker.name}")
            cancel_at = datetime.now(UTC) + timedelta(seconds=self.seconds / 2)
            scheduler.schedule_once(
                CANCELLED_KEY, cancel_at, {"by": "parent", "run_at": cancel_at.isoformat()}
            )
            cancel_ok = scheduler.cancel(CANCELLED_KEY)
            by_worker = Counter(expected.values())
            self.say(
                f"  {len(plan)} one-shot jobs scheduled over the next {self.seconds:g}s "
                f"({_per_worker(by_worker) or 'none'}); {CANCELLED_KEY!r} scheduled then "
                f"cancelled ({'removed' if cancel_ok else 'NOT removed'})"
            )
            end = self.t0 + self.seconds
            next_status = self.t0 + 1.0
            while time.monotonic() < end:
                self.poll()
                if time.monotonic() >= next_status:
                    self.status(store)
                    next_status += 1.0
                time.sleep(POLL)
            grace_end = time.monotonic() + FIRE_GRACE
            while time.monotonic() < grace_end and not set(expected) <= self.fired:
                self.poll()
                time.sleep(POLL)
            self.status(store)
            self.say("stopping workers ...")
            self.stop_workers()
            self.poll()
        exit_codes = {w.name: w.exit_code for w in self.procs}
        checks = verify(
            self.events,
            expected_jobs=expected,
            cancelled_key=CANCELLED_KEY,
            cancel_ok=cancel_ok,
            exit_codes=exit_codes,
        )
        self.say("")
        self.say("verification:")
        for check in checks:
            self.say(f"  {'PASS' if check.ok else 'FAIL'}  {check.message}")
        for worker in self.procs:
            if worker.exit_code != 0:
                for line in worker.stderr_tail():
                    self.say(f"  {worker.name} stderr: {line}")
        failed = sum(1 for c in checks if not c.ok)
        if failed:
            self.say(f"{failed} of {len(checks)} checks FAILED")
            return 1
        self.say(f"all {len(checks)} checks passed")
        return 0


def _props(n: int, run_at: str, by: str) -> dict[str, Any]:
    return {"n": n, "by": by, "run_at": run_at}


class _DemoFailed(Exception):
    pass


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit(143) so that the cleanup below still runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Ignore Ctrl-C while cleaning up (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_demo(
    *,
    workers: int,
    seconds: float,
    jobs: int,
    url: str | None,
    namespace: str | None,
    out: TextIO,
) -> int:
    """Run the demo; returns 0 when every check passes, 1 otherwise.

    ``url``: an explicit store URL, else a fresh SQLite file in a temporary directory
    (``$CLUSTERSYNC_URL`` is ignored). The temporary directory and the worker processes
    are cleaned up on every exit, including Ctrl-C (``KeyboardInterrupt`` is re-raised).
    """
    from .cli import CLIError

    if url is not None and kind_for_url(url).reach == "process":
        raise CLIError(
            "the demo's workers are separate processes: memory:// cannot be shared between "
            "them; use a sqlite:/// URL (or no --url for a temporary one)"
        )
    tmpdir = tempfile.mkdtemp(prefix="clustersync-demo-")
    if url is None:
        url = "sqlite:///" + os.path.join(tmpdir, "demo.db")
    namespace = namespace or f"demo-{uuid.uuid4().hex[:8]}"
    demo = _Demo(workers, seconds, jobs, url, namespace, tmpdir, out)
    try:
        with _terminate_on_sigterm():
            return demo.run()
    except _DemoFailed as exc:
        raise CLIError(f"demo failed: {exc}") from None
    finally:
        with _no_interrupts():
            demo.stop_workers(timeout=3.0)
            demo.close_readers()
            shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(worker_main())
