"""Mutex across real OS processes sharing one durable store (SQLite, Redis, PostgreSQL).

CLOCK_MONOTONIC is shared by all processes on a host, so the ``t``/``start``/``end``
times that workers log with ``time.monotonic()`` are comparable with each other and with
this test's own ``time.monotonic()``.
"""

from __future__ import annotations

import itertools
import signal
import time

import pytest

from clustersync.testing.checker import HoldLog, check_holds
from tests.conftest import kind_of

from .harness import Cluster

pytestmark = pytest.mark.slow


Hold = tuple[float, float, int, str]  # start, end, token, worker


def _contend(cluster: Cluster, urls: list[str], rounds: int) -> list[Hold]:
    """One worker per URL takes the mutex ``rounds`` times; their holds, checked: none
    overlaps the next, tokens increase, every worker had all its turns."""
    workers = [
        cluster.spawn(
            f"p{i}", "contend", mutex="shared", rounds=rounds, go=cluster.path("go"), url=url
        )
        for i, url in enumerate(urls)
    ]
    for worker in workers:
        cluster.wait_for(worker, "ready")
    cluster.command("go")
    for worker in workers:
        cluster.wait_for(worker, "done", timeout=40)
    holds = sorted(
        (e["start"], e["end"], e["token"], w.name) for w in workers for e in w.events("hold")
    )
    assert len(holds) == len(urls) * rounds
    for (start, end, token, who), (n_start, _, n_token, n_who) in itertools.pairwise(holds):
        assert start <= end
        assert end <= n_start, f"{who} (token {token}) overlaps {n_who} (token {n_token})"
        assert token < n_token, f"token {n_token} of {n_who} follows {token} of {who}"
    assert {h[3] for h in holds} == {w.name for w in workers}
    check_holds(HoldLog("shared", token, start, end, who) for start, end, token, who in holds)
    return holds


def test_contending_processes_never_overlap_and_tokens_increase(cluster: Cluster) -> None:
    processes, rounds = 4, 30
    holds = _contend(cluster, [cluster.url] * processes, rounds)
    # SQLite counts from 1 in a fresh namespace, one per acquisition. Redis and PostgreSQL
    # mint max(previous + 1, their clock in µs): their tokens only strictly increase
    # (checked by _contend).
    if kind_of(cluster.backend).name == "sqlite":
        assert [h[2] for h in holds] == list(range(1, 1 + processes * rounds))


#: The mode each server kind offers besides its default: processes in both modes share a
#: lock during an upgrade or a partial rollout.
OTHER_MODE = {"redis": "handoff=notify", "postgres": "handoff=advisory"}


def test_processes_in_both_handoff_modes_never_overlap(cluster: Cluster) -> None:
    """Redis (grants by default; notify was the default before) and PostgreSQL (notify
    by default; opt-in advisory queue): half of the processes in each mode contend for
    one lock. The lease in the store decides for both, so no two ever hold it at once,
    tokens increase, and every process gets its turns."""
    if cluster.backend not in OTHER_MODE:
        pytest.skip("a server store in its default mode")
    other = cluster.url + "?" + OTHER_MODE[cluster.backend]
    _contend(cluster, [cluster.url, other, cluster.url, other], rounds=25)


def test_sigkilled_holder_is_taken_over_within_ttl(cluster: Cluster) -> None:
    ttl = 1.0
    holder = cluster.spawn(
        "holder", "hold", mutex="m", ttl=ttl, release=cluster.path("never"), exit=cluster.path("x")
    )
    held = cluster.wait_for(holder, "acquired")[0]
    waiter = cluster.spawn(
        "waiter",
        "hold",
        mutex="m",
        ttl=ttl,
        signal_waiting=True,
        release=cluster.path("waiter-release"),
        exit=cluster.path("x"),
    )
    cluster.wait_for(waiter, "waiting")
    time.sleep(0.5)  # the waiter is now blocked in acquire()
    assert waiter.events("acquired") == [], "the waiter took a held lock"

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


def test_paused_holder_learns_it_lost_the_lock(cluster: Cluster) -> None:
    ttl, pause = 0.5, 1.5
    holder = cluster.spawn(
        "holder",
        "hold",
        mutex="m",
        ttl=ttl,
        wait_lost=10.0,  # after a loss, wait for on_lost, then release
        release=cluster.path("holder-release"),
        exit=cluster.path("x"),
    )
    held = cluster.wait_for(holder, "acquired")[0]
    taker = cluster.spawn(
        "taker",
        "hold",
        mutex="m",
        ttl=5.0,
        signal_waiting=True,
        release=cluster.path("taker-release"),
        exit=cluster.path("x"),
    )
    cluster.wait_for(taker, "waiting")
    time.sleep(0.3)
    assert taker.events("acquired") == [], "the taker took a held lock"

    stopped_at = time.monotonic()
    holder.signal(signal.SIGSTOP)
    try:
        taken = cluster.wait_for(taker, "acquired")[0]
        time.sleep(max(0.0, stopped_at + pause - time.monotonic()))
    finally:
        holder.signal(signal.SIGCONT)
    assert taken["t"] > stopped_at
    assert taken["token"] > held["token"]

    # The holder resumes: its renewal is refused, on_lost runs once, release() raises.
    cluster.wait_for(holder, "on_lost")
    report = cluster.wait_for(holder, "released")[0]
    assert report["on_lost_calls"] == 1
    assert report["locked"] is False
    assert report["check_error"] == "LockLostError"
    assert report["release_error"] == "LockLostError"

    # The stale holder's release did not free the taker's lease.
    cluster.command("taker-release")
    released = cluster.wait_for(taker, "released")[0]
    assert released["release_error"] is None
    assert released["on_lost_calls"] == 0
