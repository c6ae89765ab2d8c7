"""The grant handoff (Redis, ``handoff="grant"``, the default) when *queued waiters* die or stop.

A release hands the lease to the first live waiter of the queue, so a waiter that is
killed or paused while queued may be granted a lock it never uses. These tests check
what the design promises then: the lock comes free within the life of a granted lease
(``GRANT_LEASE_MS``, 1 s), not the holder's whole ttl; a paused waiter that resumes after
its grant lapsed does not believe it holds the lock; no two processes ever hold it at
once; tokens keep increasing.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustersync.stores.contract import GRANT_LEASE_MS
from tests.conftest import selected_backends

from .harness import Cluster, Worker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("redis" not in selected_backends(), reason="redis not selected"),
]

GRANT_LEASE = GRANT_LEASE_MS / 1000
#: The holder's ttl: far longer than a granted lease, so waiting it out would show.
TTL = 20.0


@pytest.fixture
def backend() -> str:
    return "redis"  # grants by default


@pytest.fixture
def grant_cluster(store_url: str, namespace: str, tmp_path: Path) -> Iterator[Cluster]:
    group = Cluster(tmp_path, store_url, namespace, "redis")
    try:
        yield group
    finally:
        group.kill_all()


def _holder(cluster: Cluster, name: str, *, waiting: bool = False) -> Worker:
    return cluster.spawn(
        name,
        "hold",
        mutex="m",
        ttl=TTL,
        signal_waiting=waiting,
        release=cluster.path(f"{name}-release"),
        exit=cluster.path("exit"),
    )


def _queue_in_order(cluster: Cluster, names: list[str]) -> list[Worker]:
    """Start waiters one after the other, each queued before the next one starts."""
    workers = []
    for name in names:
        worker = _holder(cluster, name, waiting=True)
        cluster.wait_for(worker, "waiting")
        time.sleep(0.4)  # blocked in acquire(): queued
        assert worker.events("acquired") == []
        workers.append(worker)
    return workers


def test_killed_queued_waiter_delays_the_next_one_by_a_granted_lease_at_most(
    grant_cluster: Cluster,
) -> None:
    cluster = grant_cluster
    holder = _holder(cluster, "holder")
    held = cluster.wait_for(holder, "acquired")[0]
    doomed, survivor = _queue_in_order(cluster, ["doomed", "survivor"])

    doomed.signal(signal.SIGKILL)  # first in the queue: its place lives on for up to 1 s
    released_at = time.monotonic()
    cluster.command("holder-release")
    taken = cluster.wait_for(survivor, "acquired")[0]

    delay = taken["t"] - released_at
    assert delay <= GRANT_LEASE + 1.0, f"the survivor waited {delay:.2f}s (ttl {TTL}s)"
    assert taken["token"] > held["token"]
    cluster.command("survivor-release")
    assert cluster.wait_for(survivor, "released")[0]["release_error"] is None


def test_paused_queued_waiter_resumes_without_believing_it_holds_the_lock(
    grant_cluster: Cluster,
) -> None:
    cluster = grant_cluster
    holder = _holder(cluster, "holder")
    cluster.wait_for(holder, "acquired")
    paused, other = _queue_in_order(cluster, ["paused", "other"])

    paused.signal(signal.SIGSTOP)
    released_at = time.monotonic()
    cluster.command("holder-release")  # granted to the paused waiter first
    taken = cluster.wait_for(other, "acquired")[0]
    assert taken["t"] - released_at <= GRANT_LEASE + 1.0

    paused.signal(signal.SIGCONT)  # its grant lapsed; the other process holds the lock
    time.sleep(1.0)
    assert paused.events("acquired") == [], "a lapsed grant was taken as a hold"
    cluster.command("other-release")
    resumed = cluster.wait_for(paused, "acquired")[0]
    assert resumed["token"] > taken["token"]
    cluster.command("paused-release")
    assert cluster.wait_for(paused, "released")[0]["release_error"] is None
    assert cluster.wait_for(other, "released")[0]["release_error"] is None


def test_waiters_are_served_in_arrival_order(grant_cluster: Cluster) -> None:
    cluster = grant_cluster
    holder = _holder(cluster, "holder")
    cluster.wait_for(holder, "acquired")
    names = ["w1", "w2", "w3"]
    waiters = _queue_in_order(cluster, names)
    cluster.command("holder-release")
    tokens = []
    for name, waiter in zip(names, waiters, strict=True):
        tokens.append(cluster.wait_for(waiter, "acquired")[0]["token"])
        for later in waiters[len(tokens) :]:
            assert later.events("acquired") == [], f"{later.name} overtook {name}"
        cluster.command(f"{name}-release")
    assert tokens == sorted(tokens)
