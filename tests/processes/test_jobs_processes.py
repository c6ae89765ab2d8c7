"""One-shot and recurring jobs across real OS processes sharing one durable store (SQLite,
Redis, PostgreSQL)."""

from __future__ import annotations

import itertools
import time
from typing import Any

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


def attempts_of(workers: list[Worker]) -> dict[str, list[Event]]:
    """Every ``attempt`` event of the workers by job key, in the order they started."""
    by_key: dict[str, list[Event]] = {}
    for worker in workers:
        for event in worker.events("attempt"):
            by_key.setdefault(event["key"], []).append(event)
    return {key: sorted(events, key=lambda e: e["t"]) for key, events in by_key.items()}


def failed_jobs(cluster: Cluster) -> list[clustersync.FailedJob]:
    with clustersync.open_store(cluster.url, namespace=cluster.namespace) as store:
        return clustersync.get_job_once_scheduler(store).list_failed_jobs()


def test_failing_jobs_run_exactly_their_attempts_across_processes(cluster: Cluster) -> None:
    """Three schedulers with ``Retry(attempts=3)``: each always-failing job runs exactly
    three times in all, attempts numbered 1, 2, 3, each retry at least half its backoff
    after the previous attempt; then it is kept as failed, with the last error."""
    keys = [f"flaky-{i}" for i in range(6)]
    attempts, backoff = 3, 0.4
    common: dict[str, Any] = {
        "attempts": attempts,
        "backoff": backoff,
        "exit": cluster.path("exit"),
    }
    workers = [cluster.spawn(f"w{i}", "failing", **common) for i in range(2)]
    for worker in workers:
        cluster.wait_for(worker, "ready")
    workers.append(cluster.spawn("w2", "failing", keys=keys, **common))

    deadline = time.monotonic() + 30
    while sum(len(v) for v in attempts_of(workers).values()) < attempts * len(keys):
        if time.monotonic() > deadline:
            cluster.fail(f"attempts so far: {attempts_of(workers)}")
        time.sleep(0.05)
    time.sleep(backoff * 4 + 0.5)  # an extra attempt would show up meanwhile

    runs = attempts_of(workers)
    assert sorted(runs) == keys
    for key, events in runs.items():
        assert [e["attempt"] for e in events] == [1, 2, 3], (key, events)
        for n, (before, after) in enumerate(itertools.pairwise(events), start=1):
            least = backoff * 2 ** (n - 1) / 2
            assert after["wall"] - before["wall"] >= least - 0.05, (key, n, events)
            assert after["due"] >= before["wall"] + least - 0.05, (key, n, events)
    assert pending_jobs(cluster) == []
    failed = failed_jobs(cluster)
    assert [job.key for job in failed] == keys
    for job in failed:
        assert job.attempts == attempts
        assert job.last_error == f"RuntimeError: attempt 3 of {job.key} failed"
        assert job.props == {"key": job.key}


def test_a_crashed_attempt_counts_and_the_job_is_not_lost(cluster: Cluster) -> None:
    """A process killed in the middle of attempt 2 loses nothing: after its claim
    expires, another process runs attempt 3 (the crash counted), which succeeds; the job is
    then gone, neither pending nor failed."""
    claim_ttl = 1.0
    common: dict[str, Any] = {
        "attempts": 4,
        "backoff": 0.2,
        "claim_ttl": claim_ttl,
        "exit": cluster.path("exit"),
    }
    victim = cluster.spawn("victim", "failing", keys=["payment"], block_at=[2], **common)
    cluster.wait_for(victim, "attempt", where=lambda e: e["attempt"] == 2)
    survivor = cluster.spawn("survivor", "failing", succeed_at=3, **common)
    cluster.wait_for(survivor, "ready")
    killed_at = time.monotonic()
    victim.kill()

    done = cluster.wait_for(survivor, "succeeded", timeout=claim_ttl + 10)[0]
    assert done["key"] == "payment"
    assert done["attempt"] == 3
    assert done["t"] >= killed_at
    time.sleep(0.5)
    assert [e["attempt"] for e in attempts_of([victim, survivor])["payment"]] == [1, 2, 3]
    assert pending_jobs(cluster) == []
    assert failed_jobs(cluster) == []


def test_a_process_killed_while_a_retry_waits_loses_nothing(cluster: Cluster) -> None:
    """The retry is stored with the job: a scheduler killed between a failed attempt and
    its retry leaves the retry to another process, at the stored time."""
    common: dict[str, Any] = {"attempts": 3, "backoff": 2.0, "exit": cluster.path("exit")}
    victim = cluster.spawn("victim", "failing", keys=["invoice"], **common)
    first = cluster.wait_for(victim, "attempt")[0]
    time.sleep(0.3)  # the failed attempt is recorded (a retry 1-2 s later) by now
    victim.kill()
    survivor = cluster.spawn("survivor", "failing", succeed_at=2, **common)

    done = cluster.wait_for(survivor, "succeeded", timeout=15)[0]
    retry = cluster.wait_for(survivor, "attempt")[0]
    assert done["attempt"] == 2
    assert retry["wall"] >= first["wall"] + 1.0 - 0.05  # at least half of the backoff
    assert retry["due"] >= first["wall"] + 1.0 - 0.05
    assert pending_jobs(cluster) == []
    assert failed_jobs(cluster) == []
