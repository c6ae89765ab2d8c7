"""Safety checker: judge a history of lock holds, fenced writes and job runs.

Record what your processes did (in a test, under injected faults, in a soak run) and check
that nothing went wrong: no two holders of a lock at once, fencing tokens that strictly
increase, no stale write accepted, every one-shot job fired once, recurring runs never
overlapping. clustersync's own reliability suite and ``clustersync demo`` judge their
runs with it. It needs nothing but the standard library::

    import time
    import clustersync as cs
    from clustersync.testing.checker import FencedResource, HoldLog, check

    resource = FencedResource()  # stands for what the lock protects
    holds = []
    mutex = cs.Mutex(store, "orders")
    with mutex:
        start = time.monotonic()
        resource.write(mutex.token, name="orders", holder="worker-1")
        holds.append(HoldLog("orders", mutex.token, start, time.monotonic(), "worker-1"))
    check(holds=holds, writes=resource.writes)  # raises SafetyViolation if anything broke

Records, all times from one reference clock — ``time.monotonic()``, which is the same
``CLOCK_MONOTONIC`` for every process on one host (under libfaketime, keep it unfaked:
``FAKETIME_DONT_FAKE_MONOTONIC=1``):

- :class:`HoldLog` — one acquisition of a lock: name, fencing token, start (after
  ``acquire`` returned) and end (before ``release`` was called), and whether the holder was
  *told* that it lost the lease (``on_lost`` ran, ``check()`` or ``release()`` raised
  ``LockLostError``). A holder killed while holding ends at its death (``lost=False``).
- :class:`FenceWrite` — one write to a fenced resource and whether it was accepted.
- :class:`Firing` — one run of a one-shot job's callback; :class:`Run` — one run of a
  recurring job's callback.

Fenced resources (what a user protects with ``mutex.token``): :class:`FencedResource` in
one process (thread-safe), :class:`SharedFencedResource` shared by processes through a
journal file (``flock``, POSIX only). Both accept a write only if its token is not lower
than the highest token accepted before for that name — a token higher than any seen from
another hold (a hold may write several times with its own token; tokens are unique per
hold).

Checks (each returns figures and raises :class:`SafetyViolation` listing *every* violation
found; the ``*_violations`` functions return the figures and the list without raising):

- :func:`check_holds` — no two holds of one name overlap, except when the older lease of
  the two (lower token) was lost and its holder told so; no token is used twice; a hold
  that starts after another ended has a higher token (tokens strictly increase in hold
  order), unless that hold was lost (its logged start may be late);
- :func:`check_slot_holds` — the same for a semaphore of ``limit`` slots: at most
  ``limit`` holds of one name at any moment (holds whose holder was told it lost do not
  count), tokens unique and increasing across every slot;
- :func:`check_writes` — zero accepted writes with a stale token (replayed in the
  resource's own order), and every rejected write comes from a hold that was told it lost;
- :func:`check_one_shot` — every scheduled job fired at least once; a job fired twice only
  when the process running an earlier firing crashed before the later one started
  (exactly once in runs without crashes); nothing fired that was not scheduled;
- :func:`check_recurring` — runs of one recurring job never overlap;
- :func:`check` runs those that get data and merges their reports.
"""

from __future__ import annotations

import heapq
import json
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if sys.platform != "win32":
    import fcntl

__all__ = [
    "FenceWrite",
    "FencedResource",
    "Firing",
    "HoldLog",
    "HoldReport",
    "JobReport",
    "Report",
    "Run",
    "RunReport",
    "SafetyViolation",
    "SharedFencedResource",
    "WriteReport",
    "check",
    "check_holds",
    "check_one_shot",
    "check_recurring",
    "check_slot_holds",
    "check_writes",
    "hold_violations",
    "job_violations",
    "run_violations",
    "slot_hold_violations",
    "write_violations",
]

#: How many violations a message lists in full (the count is always exact).
_SHOWN = 20


class SafetyViolation(AssertionError):
    """A safety property was broken; ``violations`` lists every one found."""

    def __init__(self, what: str, violations: Sequence[str]) -> None:
        self.violations = list(violations)
        shown = "\n  ".join(self.violations[:_SHOWN])
        more = len(self.violations) - _SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.violations)} {what} violation(s):\n  {shown}{tail}")


def _raise_if(what: str, violations: Sequence[str]) -> None:
    if violations:
        raise SafetyViolation(what, violations)


# -- records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HoldLog:
    """One hold of the lock ``name`` with fencing token ``token``, from ``start`` to ``end``
    (reference clock). ``lost``: the holder was told it lost the lease."""

    name: str
    token: int
    start: float
    end: float
    holder: str = ""
    lost: bool = False

    def __str__(self) -> str:
        told = ", told it lost" if self.lost else ""
        return (
            f"{self.name!r} token {self.token} by {self.holder or '?'}"
            f" [{self.start:.6f}, {self.end:.6f}]{told}"
        )


@dataclass(frozen=True, slots=True)
class FenceWrite:
    """One write of ``holder`` with ``token`` to the resource ``name``; ``seq`` is its place
    in the resource's own order, ``at`` the reference time."""

    name: str
    token: int
    accepted: bool
    holder: str = ""
    at: float = 0.0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Firing:
    """One run of the one-shot job ``key`` on ``holder``, started at ``start``; ``end`` is
    None when the run never finished (the process died)."""

    key: str
    holder: str
    start: float
    end: float | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """One run of the recurring job ``key`` on ``holder``; a run cut short by the death of
    its process ends at the death."""

    key: str
    start: float
    end: float
    holder: str = ""

    def __str__(self) -> str:
        return f"{self.key!r} run by {self.holder or '?'} [{self.start:.6f}, {self.end:.6f}]"


# -- fenced resources ---------------------------------------------------------------------


class FencedResource:
    """A resource protected by fencing tokens, in one process (thread-safe).

    ``write(token)`` is accepted if ``token`` is at least the highest token accepted so
    far for ``name`` and rejected otherwise; every write is recorded in ``writes`` (a list
    of :class:`FenceWrite`, for :func:`check_writes`) and counted in ``accepted`` or
    ``rejected``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._highest: dict[str, int] = {}
        self.writes: list[FenceWrite] = []
        self.accepted = 0
        self.rejected = 0

    def write(self, token: int, *, name: str = "resource", holder: str = "") -> bool:
        """Write with ``token`` to the resource ``name``; True if accepted."""
        with self._lock:
            highest = self._highest.get(name)
            ok = highest is None or token >= highest
            if ok:
                self._highest[name] = token
                self.accepted += 1
            else:
                self.rejected += 1
            self.writes.append(
                FenceWrite(name, token, ok, holder, time.monotonic(), len(self.writes))
            )
            return ok

    def highest(self, name: str = "resource") -> int | None:
        """The highest token accepted so far for ``name`` (None before any write)."""
        with self._lock:
            return self._highest.get(name)


class SharedFencedResource:
    """A fenced resource shared by processes on one host: a journal file of every write,
    appended under an exclusive ``flock``, so the journal's order is the order in which
    the resource decided. Each process keeps the highest tokens it has read so far and
    reads only the journal's new lines before each decision.

    A process killed mid-write cannot leave half a line: a line is appended with a single
    ``write(2)``, which a signal does not interrupt on a regular file. POSIX only.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if sys.platform == "win32":  # pragma: no cover
            raise NotImplementedError("SharedFencedResource needs flock(2): POSIX only")
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._offset = 0
        self._highest: dict[str, int] = {}
        self._buffer = b""
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the journal file (the journal stays)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> SharedFencedResource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _catch_up(self) -> None:
        size = os.fstat(self._fd).st_size
        if size <= self._offset:
            return
        data = self._buffer + os.pread(self._fd, size - self._offset, self._offset)
        self._offset = size
        *lines, self._buffer = data.split(b"\n")
        for line in lines:
            record = json.loads(line)
            if record["ok"]:
                name, token = record["name"], record["token"]
                self._highest[name] = max(token, self._highest.get(name, token))

    def write(self, token: int, *, name: str = "resource", holder: str = "") -> bool:
        """Write with ``token`` to the resource ``name``, deciding after every write of
        the other processes; the write is appended to the journal; True if accepted."""
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._catch_up()
                highest = self._highest.get(name)
                ok = highest is None or token >= highest
                if ok:
                    self._highest[name] = token
                line = {
                    "name": name,
                    "token": token,
                    "ok": ok,
                    "holder": holder,
                    "at": time.monotonic(),
                }
                data = (json.dumps(line) + "\n").encode()
                os.write(self._fd, data)
                self._offset += len(data)  # nobody else wrote meanwhile: we hold the lock
                return ok
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    @staticmethod
    def read(path: str | os.PathLike[str]) -> list[FenceWrite]:
        """Every write in the journal at ``path``, in the resource's order."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        writes = []
        for seq, line in enumerate(text.splitlines()):
            r = json.loads(line)
            writes.append(FenceWrite(r["name"], r["token"], r["ok"], r["holder"], r["at"], seq))
        return writes


# -- reports ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HoldReport:
    """Figures of :func:`check_holds`: holds, lock names, holds told they were lost."""

    holds: int
    names: int
    lost: int
    #: Overlapping pairs allowed because the older lease was lost and its holder told.
    told_overlaps: int


@dataclass(frozen=True, slots=True)
class WriteReport:
    """Figures of :func:`check_writes`: accepted and rejected writes."""

    accepted: int
    rejected: int


@dataclass(frozen=True, slots=True)
class JobReport:
    """Figures of :func:`check_one_shot`: scheduled jobs, how many of them fired (at least
    once, exactly once), which never fired, which fired unscheduled or more than once."""

    scheduled: int
    #: Scheduled jobs that fired at least once.
    fired: int
    #: Scheduled jobs that never fired (violations).
    lost: int
    #: Jobs fired more than once (all of them after a crash, else a violation is raised).
    run_twice: int
    #: Scheduled jobs that fired exactly once (all of them, in a run without violations
    #: and without crashes).
    exactly_once: int = 0
    #: The scheduled jobs that never fired, sorted.
    never_fired: tuple[str, ...] = ()
    #: The jobs that fired but were never scheduled (violations), sorted.
    unscheduled: tuple[str, ...] = ()
    #: The jobs fired more than once, each with its number of firings, sorted by key.
    repeated: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunReport:
    """Figures of :func:`check_recurring`: runs, and recurring job keys."""

    runs: int
    keys: int


@dataclass(frozen=True, slots=True)
class Report:
    """What :func:`check` found: the figures of each check that got data (None for the
    others) and every violation."""

    holds: HoldReport | None = None
    writes: WriteReport | None = None
    jobs: JobReport | None = None
    runs: RunReport | None = None
    violations: list[str] = field(default_factory=list)


# -- checks -------------------------------------------------------------------------------


def _by_name(holds: Iterable[HoldLog]) -> dict[str, list[HoldLog]]:
    groups: dict[str, list[HoldLog]] = defaultdict(list)
    for hold in holds:
        groups[hold.name].append(hold)
    for group in groups.values():
        group.sort(key=lambda h: (h.start, h.token))
    return groups


def _token_violations(group: list[HoldLog]) -> list[str]:
    """Of the holds of one name (in start order): holds that end before they start,
    tokens used twice, and tokens not increasing in hold order."""
    violations: list[str] = []
    seen: dict[int, HoldLog] = {}
    for hold in group:
        if hold.end < hold.start:
            violations.append(f"hold ends before it starts: {hold}")
        if hold.token in seen:
            violations.append(f"token used twice: {seen[hold.token]} and {hold}")
        seen[hold.token] = hold
    # Token order: a hold that starts after another ended has a higher token.
    ended: list[tuple[float, int]] = []  # min-heap of (end, token)
    highest_ended: HoldLog | None = None
    by_token = {h.token: h for h in group}
    for hold in group:
        while ended and ended[0][0] <= hold.start:
            _, token = heapq.heappop(ended)
            if highest_ended is None or token > highest_ended.token:
                highest_ended = by_token[token]
        # (A lost hold's start may be late: its holder was paused before logging it.)
        if not hold.lost and highest_ended is not None and hold.token <= highest_ended.token:
            violations.append(f"token not increasing: {hold} starts after {highest_ended} ended")
        heapq.heappush(ended, (hold.end, hold.token))
    return violations


def _report(holds: list[HoldLog], told_overlaps: int) -> HoldReport:
    return HoldReport(
        holds=len(holds),
        names=len({h.name for h in holds}),
        lost=sum(h.lost for h in holds),
        told_overlaps=told_overlaps,
    )


def hold_violations(holds: Iterable[HoldLog]) -> tuple[HoldReport, list[str]]:
    """The figures and violations of :func:`check_holds`, without raising."""
    holds = list(holds)
    violations: list[str] = []
    told_overlaps = 0
    for group in _by_name(holds).values():
        # Overlaps: of two overlapping holds, the older lease (lower token) must have
        # been lost, and its holder told. Holds are visited in start order; the heap
        # keeps (end, index, hold) of the earlier holds that may still be running.
        running: list[tuple[float, int, HoldLog]] = []
        for index, hold in enumerate(group):
            while running and running[0][0] <= hold.start:
                heapq.heappop(running)
            for _, _, other in running:
                older = other if other.token < hold.token else hold
                if older.lost:
                    told_overlaps += 1
                else:
                    violations.append(f"overlapping holds: {other} and {hold}")
            heapq.heappush(running, (hold.end, index, hold))
        violations += _token_violations(group)
    return _report(holds, told_overlaps), violations


def check_holds(holds: Iterable[HoldLog]) -> HoldReport:
    """Zero overlapping holds (except where the older lease was lost and its holder told),
    no token used twice, tokens strictly increasing in hold order."""
    report, violations = hold_violations(holds)
    _raise_if("hold", violations)
    return report


def slot_hold_violations(holds: Iterable[HoldLog], limit: int) -> tuple[HoldReport, list[str]]:
    """The figures and violations of :func:`check_slot_holds`, without raising."""
    holds = list(holds)
    violations: list[str] = []
    told_overlaps = 0
    for group in _by_name(holds).values():
        running: list[tuple[float, int, HoldLog]] = []  # (end, index, hold), as above
        for index, hold in enumerate(group):
            while running and running[0][0] <= hold.start:
                heapq.heappop(running)
            heapq.heappush(running, (hold.end, index, hold))
            if len(running) <= limit:
                continue
            counted = [h for _, _, h in running if not h.lost]
            if len(counted) > limit:
                listed = ", ".join(str(h) for h in sorted(counted, key=lambda h: h.token))
                violations.append(f"{len(counted)} holds at once (limit {limit}): {listed}")
            else:
                told_overlaps += 1
        violations += _token_violations(group)
    return _report(holds, told_overlaps), violations


def check_slot_holds(holds: Iterable[HoldLog], limit: int) -> HoldReport:
    """For a semaphore of ``limit`` slots: at most ``limit`` holds of one name at any
    moment (holds whose holder was told it lost them do not count: their logged end may
    be late), no token used twice, tokens strictly increasing in hold order across every
    slot. ``told_overlaps`` counts the moments more were running only thanks to those."""
    report, violations = slot_hold_violations(holds, limit)
    _raise_if("slot hold", violations)
    return report


def write_violations(
    writes: Iterable[FenceWrite], holds: Iterable[HoldLog] | None = None
) -> tuple[WriteReport, list[str]]:
    """The figures and violations of :func:`check_writes`, without raising."""
    ordered = sorted(writes, key=lambda w: w.seq)
    hold_list = list(holds) if holds is not None else None
    lost = {(h.name, h.token) for h in hold_list or () if h.lost}
    known = {(h.name, h.token) for h in hold_list or ()}
    highest: dict[str, int] = {}
    violations: list[str] = []
    for write in ordered:
        top = highest.get(write.name)
        fresh = top is None or write.token >= top
        if write.accepted and not fresh:
            violations.append(
                f"stale write accepted: token {write.token} of {write.holder or '?'} on"
                f" {write.name!r} after token {top}"
            )
        if not write.accepted and fresh:
            violations.append(f"fresh write rejected (resource bug): {write}")
        if write.accepted:
            highest[write.name] = max(write.token, top if top is not None else write.token)
        elif hold_list is not None and (write.name, write.token) not in lost:
            why = "was never told it lost" if (write.name, write.token) in known else "unknown"
            violations.append(
                f"write of token {write.token} by {write.holder or '?'} on {write.name!r}"
                f" rejected (a newer token wrote first) but its hold {why}"
            )
    report = WriteReport(
        accepted=sum(w.accepted for w in ordered),
        rejected=sum(not w.accepted for w in ordered),
    )
    return report, violations


def check_writes(
    writes: Iterable[FenceWrite], holds: Iterable[HoldLog] | None = None
) -> WriteReport:
    """Zero accepted writes with a stale token; and, given the ``holds``, every rejected
    write belongs to a hold that was told it lost its lease (a holder that was never told
    must never find a newer token ahead of it)."""
    report, violations = write_violations(writes, holds)
    _raise_if("fencing", violations)
    return report


def job_violations(
    scheduled: Iterable[str],
    firings: Iterable[Firing],
    crashes: Mapping[str, Sequence[float]] | None = None,
) -> tuple[JobReport, list[str]]:
    """The figures and violations of :func:`check_one_shot`, without raising."""
    wanted = set(scheduled)
    crashes = crashes or {}
    by_key: dict[str, list[Firing]] = defaultdict(list)
    for firing in firings:
        by_key[firing.key].append(firing)
    violations: list[str] = []
    lost = sorted(wanted - by_key.keys())
    violations += [f"one-shot job {key!r} never fired" for key in lost]
    unscheduled = sorted(by_key.keys() - wanted)
    violations += [f"one-shot job {key!r} fired but was never scheduled" for key in unscheduled]
    repeated: dict[str, int] = {}
    for key, runs in by_key.items():
        runs.sort(key=lambda f: f.start)
        if len(runs) > 1:
            repeated[key] = len(runs)
        for index, later in enumerate(runs[1:], start=1):
            excused = any(
                earlier.start <= crash <= later.start
                for earlier in runs[:index]
                for crash in crashes.get(earlier.holder, ())
            )
            if not excused:
                violations.append(
                    f"one-shot job {key!r} fired again on {later.holder} at {later.start:.6f}"
                    " although no process running it had crashed: "
                    + ", ".join(f"{f.holder}@{f.start:.6f}" for f in runs)
                )
    report = JobReport(
        scheduled=len(wanted),
        fired=len(by_key.keys() & wanted),
        lost=len(lost),
        run_twice=len(repeated),
        exactly_once=sum(1 for key in wanted if len(by_key.get(key, ())) == 1),
        never_fired=tuple(lost),
        unscheduled=tuple(unscheduled),
        repeated=dict(sorted(repeated.items())),
    )
    return report, violations


def check_one_shot(
    scheduled: Iterable[str],
    firings: Iterable[Firing],
    crashes: Mapping[str, Sequence[float]] | None = None,
) -> JobReport:
    """Every key in ``scheduled`` fired at least once, and a job fired again only after a
    process running an earlier firing of it crashed (``crashes``: holder -> times it was
    killed, reference clock) — so exactly once in runs without crashes."""
    report, violations = job_violations(scheduled, firings, crashes)
    _raise_if("one-shot job", violations)
    return report


def run_violations(runs: Iterable[Run]) -> tuple[RunReport, list[str]]:
    """The figures and violations of :func:`check_recurring`, without raising."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    violations: list[str] = []
    for key, group in groups.items():
        group.sort(key=lambda r: r.start)
        latest: Run | None = None
        for run in group:
            if run.end < run.start:
                violations.append(f"recurring job {key!r}: run ends before it starts: {run}")
            if latest is not None and latest.end > run.start:
                violations.append(f"recurring job {key!r}: concurrent runs {latest} and {run}")
            if latest is None or run.end > latest.end:
                latest = run
    report = RunReport(runs=sum(len(g) for g in groups.values()), keys=len(groups))
    return report, violations


def check_recurring(runs: Iterable[Run]) -> RunReport:
    """Runs of one recurring job never overlap."""
    report, violations = run_violations(runs)
    _raise_if("recurring job", violations)
    return report


def check(
    *,
    holds: Iterable[HoldLog] | None = None,
    writes: Iterable[FenceWrite] | None = None,
    scheduled: Iterable[str] | None = None,
    firings: Iterable[Firing] | None = None,
    crashes: Mapping[str, Sequence[float]] | None = None,
    runs: Iterable[Run] | None = None,
    raise_on_violation: bool = True,
) -> Report:
    """Run every check that gets data; raise one :class:`SafetyViolation` listing all the
    violations found (or return them in the report with ``raise_on_violation=False``)."""
    hold_list = list(holds) if holds is not None else None
    violations: list[str] = []
    hold_report = write_report = job_report = run_report = None
    if hold_list is not None:
        hold_report, found = hold_violations(hold_list)
        violations += found
    if writes is not None:
        write_report, found = write_violations(writes, hold_list)
        violations += found
    if scheduled is not None or firings is not None:
        job_report, found = job_violations(scheduled or (), firings or (), crashes)
        violations += found
    if runs is not None:
        run_report, found = run_violations(runs)
        violations += found
    if raise_on_violation:
        _raise_if("safety", violations)
    return Report(hold_report, write_report, job_report, run_report, violations)
