"""Client processes whose wall clocks are minutes off, with libfaketime (Debian package
``faketime``, installed by ``scripts/install-servers.sh``), on Redis and PostgreSQL.

Leases and due times are judged by the store's clock, never by a client's, so a skew of
five minutes either way must change nothing: holds never overlap, tokens increase, a
SIGKILLed holder is taken over within ttl + 1 s, and a one-shot job fires when the store
says it is due, whoever scheduled or runs it (never early by store time).

The workers are those of the multi-process tests (``tests/processes``), started with
``LD_PRELOAD`` of libfaketime and ``FAKETIME="+5m"`` / ``"-5m"``. Only the wall clock is
faked: ``FAKETIME_DONT_FAKE_MONOTONIC=1`` keeps ``CLOCK_MONOTONIC`` — the reference clock
of every logged time — shared with this test process, which each test verifies. The
servers run unskewed, so store time is this host's real time.

Without libfaketime the tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import glob
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import clustersync
from clustersync.testing.checker import HoldLog, check_holds
from tests.conftest import kind_of, make_store_url, selected_backends
from tests.processes.harness import Cluster, Worker
from tests.servers import in_ci

from .conftest import soak_mode

pytestmark = pytest.mark.slow

#: The server targets, with their modes (Redis notify, PostgreSQL's advisory queue).
KINDS = [
    target
    for target in ("redis", "redis-notify", "postgres", "postgres-advisory")
    if target in selected_backends()
]
SKEW = 300.0  # seconds: "+5m" / "-5m"
SITE_DIR = Path(__file__).with_name("faketime")
#: Where Debian and others install the thread-safe libfaketime.
LIBFAKETIME_GLOBS = (
    "/usr/lib/*/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
    "/usr/lib64/faketime/libfaketimeMT.so.1",
)


def find_libfaketime() -> str:
    """The path of libfaketimeMT; skip without it (fail in CI)."""
    for pattern in LIBFAKETIME_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    message = "libfaketime is not installed; run scripts/install-servers.sh (Debian: faketime)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def skewed(offset: str) -> dict[str, str]:
    """The environment of a worker whose wall clock is off by ``offset`` (``+5m``); its
    ``sitecustomize`` works around libfaketime 0.9.10's broken ``time.sleep``."""
    env = dict(os.environ)
    path = [str(SITE_DIR), *filter(None, [env.get("PYTHONPATH")])]
    env.update(
        LD_PRELOAD=find_libfaketime(),
        FAKETIME=offset,
        FAKETIME_DONT_FAKE_MONOTONIC="1",
        PYTHONPATH=os.pathsep.join(path),
    )
    return env


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def cluster(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    url = make_store_url(kind, tmp_path, request)
    namespace = f"skew-{os.urandom(5).hex()}"
    group = Cluster(tmp_path, url, namespace, kind)
    try:
        yield group
    finally:
        group.kill_all()


def real_wall(monotonic: float) -> float:
    """This host's real Unix time at the shared monotonic time ``monotonic``."""
    return time.time() - time.monotonic() + monotonic


def assert_skewed(cluster: Cluster, worker: Worker, skew: float) -> None:
    """The worker's wall clock is ``skew`` seconds off, and its monotonic clock is ours."""
    started = cluster.wait_for(worker, "started")[0]
    assert started["t"] <= time.monotonic(), "the worker's monotonic clock is faked"
    assert time.monotonic() - started["t"] < 60, "the worker's monotonic clock is faked"
    off = started["wall"] - real_wall(started["t"])
    assert abs(off - skew) < 5, f"{worker.name}: wall clock {off:+.1f}s off, not {skew:+.0f}s"


@pytest.mark.timeout(600 if soak_mode() else 60)
def test_skewed_processes_never_overlap_and_tokens_increase(cluster: Cluster) -> None:
    processes, rounds = 4, 500 if soak_mode() else 20
    skews = [SKEW, -SKEW, SKEW, -SKEW]
    workers = [
        cluster.spawn(
            f"p{i}",
            "contend",
            env=skewed("+5m" if skew > 0 else "-5m"),
            mutex="shared",
            ttl=2.0,
            rounds=rounds,
            go=cluster.path("go"),
            lifetime=600 if soak_mode() else 60,
        )
        for i, skew in enumerate(skews)
    ]
    for worker, skew in zip(workers, skews, strict=True):
        cluster.wait_for(worker, "ready")
        assert_skewed(cluster, worker, skew)
    cluster.command("go")
    for worker in workers:
        cluster.wait_for(worker, "done", timeout=500 if soak_mode() else 40)

    holds = [
        HoldLog("shared", e["token"], e["start"], e["end"], w.name)
        for w in workers
        for e in w.events("hold")
    ]
    report = check_holds(holds)
    assert report.holds == processes * rounds
    tokens = [h.token for h in sorted(holds, key=lambda h: h.start)]
    if kind_of(cluster.backend).name in {"postgres", "redis"}:
        # max(previous + 1, the server's clock in µs): the clients' skewed clocks play no
        # part, so tokens strictly increase (check_holds) and follow the server's clock.
        assert tokens == sorted(set(tokens))
    else:
        assert tokens == list(range(tokens[0], tokens[0] + processes * rounds))
    assert {h.holder for h in holds} == {w.name for w in workers}


def test_skewed_holder_killed_is_taken_over_within_ttl(cluster: Cluster) -> None:
    """The holder's clock is 5 minutes ahead, the waiter's 5 minutes behind: had either
    judged expiry, the waiter would get in at once or 10 minutes late."""
    ttl = 1.0
    holder = cluster.spawn(
        "holder",
        "hold",
        env=skewed("+5m"),
        mutex="m",
        ttl=ttl,
        release=cluster.path("never"),
        exit=cluster.path("x"),
    )
    held = cluster.wait_for(holder, "acquired")[0]
    assert_skewed(cluster, holder, SKEW)
    waiter = cluster.spawn(
        "waiter",
        "hold",
        env=skewed("-5m"),
        mutex="m",
        ttl=ttl,
        signal_waiting=True,
        release=cluster.path("waiter-release"),
        exit=cluster.path("x"),
    )
    cluster.wait_for(waiter, "waiting")
    assert_skewed(cluster, waiter, -SKEW)
    time.sleep(1.5 * ttl)  # renewals keep the lease alive: the waiter stays out
    assert waiter.events("acquired") == [], "the waiter took a held lock"
    assert holder.events("on_lost") == []

    killed_at = time.monotonic()
    holder.signal(signal.SIGKILL)
    taken = cluster.wait_for(waiter, "acquired")[0]
    assert killed_at < taken["t"] <= killed_at + ttl + 1.0, (
        f"takeover {taken['t'] - killed_at:.3f}s after the kill (ttl {ttl}s)"
    )
    assert taken["token"] > held["token"]
    cluster.command("waiter-release")
    released = cluster.wait_for(waiter, "released")[0]
    assert released["release_error"] is None
    assert released["on_lost_calls"] == 0


def test_one_shot_jobs_fire_by_store_time_whatever_the_client_clocks(cluster: Cluster) -> None:
    """Schedulers 5 minutes ahead and 5 minutes behind. ``at``: an absolute run time,
    scheduled by the fast client, fires about then (not at once, as the fast clocks
    would say, nor 5 minutes late, as the slow one would). ``ahead`` / ``behind``:
    "in 1 s" by the scheduling client's own clock is 5 minutes from now / 5 minutes ago
    for the store: the first stays pending, the second fires at once."""
    at = time.time() + 3.0
    fast = cluster.spawn(
        "fast",
        "schedule_once",
        env=skewed("+5m"),
        jobs=[
            {"key": "at", "at": at, "props": {"k": "at"}},
            {"key": "ahead", "delay": 1.0, "props": None},
        ],
        exit=cluster.path("exit"),
    )
    slow = cluster.spawn(
        "slow",
        "schedule_once",
        env=skewed("-5m"),
        jobs=[{"key": "behind", "delay": 1.0, "props": None}],
        exit=cluster.path("exit"),
    )
    for worker, skew in ((fast, SKEW), (slow, -SKEW)):
        cluster.wait_for(worker, "ready")
        assert_skewed(cluster, worker, skew)

    def firings(key: str) -> list[tuple[str, float]]:
        return [
            (w.name, real_wall(e["t"]))
            for w in (fast, slow)
            for e in w.events("fired")
            if e["key"] == key
        ]

    deadline = time.monotonic() + 20
    while not (firings("at") and firings("behind")):
        if time.monotonic() > deadline:
            cluster.fail("the jobs did not fire")
        time.sleep(0.01)
    time.sleep(1.5)  # any second firing, or an early "ahead", would show up meanwhile

    behind_scheduled = cluster.wait_for(slow, "scheduled")[0]
    assert behind_scheduled["run_at"] < time.time() - SKEW + 10  # in the store's past
    [(_, fired_behind)] = firings("behind")
    assert fired_behind - real_wall(behind_scheduled["t"]) < 3.0, "a past job fired late"

    [(who, fired_at)] = firings("at")
    assert fired_at >= at - 0.005, f"fired {at - fired_at:.3f}s early by store time (on {who})"
    assert fired_at <= at + 3.0, f"fired {fired_at - at:.3f}s late (on {who})"

    assert firings("ahead") == []
    with clustersync.open_store(cluster.url, namespace=cluster.namespace) as store:
        pending = clustersync.get_job_once_scheduler(store).list_scheduled_jobs()
    assert [job.key for job in pending] == ["ahead"]
    ahead = next(e for e in fast.events("scheduled") if e["key"] == "ahead")
    assert abs(pending[0].run_at.timestamp() - (real_wall(ahead["t"]) + SKEW + 1.0)) < 5
