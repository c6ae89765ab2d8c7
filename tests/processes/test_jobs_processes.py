"""One-shot and recurring jobs across real OS processes sharing one durable store (SQLite,
Redis, PostgreSQL)."""

from __future__ import annotations

import itertools
import time

import pytest

import clustersync
from clustersync.testing.checker import Run, check_recurring

from .harness import Cluster, Event, Worker

pytestmark = pytest.mark.slow


def fired(workers: list[Worker]) -> list[tuple[str, Event]]:
    return [(w.name, e) for w in workers for e in w.events("fired")]


def wait_fired(cluster: Cluster, workers: list[Worker], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not fired(workers):
        if time.monotonic() > deadline:
            cluster.fail(f"no one-shot job fired within {timeout}s")
        time.sleep(0.01)


def pending_jobs(cluster: Cluster) -> list[clustersync.JobOnceMetadata]:
    with clustersync.open_store(cluster.url, namespace=cluster.namespace) as store:
        return clustersync.get_job_once_scheduler(store).list_scheduled_jobs()


def test_job_of_a_killed_scheduler_fires_once_elsewhere(cluster: Cluster) -> None:
    survivors = [
        cluster.spawn(f"s{i}", "schedule_once", exit=cluster.path("exit")) for i in range(2)
    ]
    for worker in survivors:
        cluster.wait_for(worker, "ready")
    props = {"user": 42, "tags": ["a", "b"]}
    doomed = cluster.spawn(
        "doomed",
        "schedule_once",
        job={"key": "remind:42", "delay": 1.5, "props": props},
        exit=cluster.path("exit"),
    )
    scheduled = cluster.wait_for(doomed, "scheduled")[0]
    doomed.kill()
    killed_wall = time.time()
    assert killed_wall < scheduled["run_at"], "the scheduling process lived past run_at"
    assert doomed.events("fired") == []

    wait_fired(cluster, survivors)
    time.sleep(1.0)  # a second firing would show up meanwhile
    runs = fired(survivors)
    assert len(runs) == 1, runs
    _, run = runs[0]
    assert run["key"] == "remind:42"
    assert run["props"] == props
    assert run["wall"] >= scheduled["run_at"], "fired before run_at"
    cluster.wait_for(next(w for w in survivors if w.name == runs[0][0]), "finished")
    assert pending_jobs(cluster) == []


def test_job_killed_mid_callback_reruns_on_survivor(cluster: Cluster) -> None:
    claim_ttl = 1.0
    props = {"n": 7}
    victim = cluster.spawn(
        "victim",
        "schedule_once",
        claim_ttl=claim_ttl,
        block=True,
        job={"key": "crashy", "delay": 0.0, "props": props},
        exit=cluster.path("exit"),
    )
    cluster.wait_for(victim, "fired")
    survivor = cluster.spawn(
        "survivor", "schedule_once", claim_ttl=claim_ttl, exit=cluster.path("exit")
    )
    cluster.wait_for(survivor, "ready")
    time.sleep(claim_ttl * 1.5)  # the victim's claim is renewed: no re-run while it lives
    assert survivor.events("fired") == []

    killed_at = time.monotonic()
    victim.kill()
    rerun = cluster.wait_for(survivor, "fired")[0]
    assert rerun["key"] == "crashy"
    assert rerun["props"] == props
    assert killed_at < rerun["t"] <= killed_at + claim_ttl + 3.0
    cluster.wait_for(survivor, "finished")
    time.sleep(0.3)
    assert len(survivor.events("fired")) == 1
    assert pending_jobs(cluster) == []


def test_recurring_job_runs_once_per_interval_across_processes(cluster: Cluster) -> None:
    interval, duration = 0.2, 2.0
    workers = [
        cluster.spawn(
            f"p{i}",
            "recurring",
            key="tick",
            interval=interval,
            duration=duration,
            go=cluster.path("go"),
        )
        for i in range(3)
    ]
    for worker in workers:
        cluster.wait_for(worker, "ready")
    cluster.command("go")
    for worker in workers:
        assert cluster.wait_for(worker, "closed", timeout=30)[0]["ok"] is True

    runs = sorted((e["start"], e["end"], w.name) for w in workers for e in w.events("run"))
    for (start, end, who), (n_start, _, n_who) in itertools.pairwise(runs):
        assert start <= end
        assert end <= n_start, f"run on {who} overlaps run on {n_who}"
        # Measured from the end of the previous run (store clock = this host's clock).
        assert n_start - end >= interval * 0.9, f"runs {n_start - end:.3f}s apart"
    check_recurring(Run("tick", start, end, who) for start, end, who in runs)
    window = runs[-1][1] - runs[0][0]
    assert 4 <= len(runs) <= window / interval + 2, (len(runs), window)
