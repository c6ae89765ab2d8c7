"""``clustersync.dashboard.create_app``: pages, fragments, actions and their guards,
failed one-shot jobs and recent runs (made for real, on every store), health, metrics and
mounting.

Requests go to the ASGI application in-process (httpx's ASGI transport, which reports the
client as 127.0.0.1:123); the real server is tested in test_command.py and
test_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import clustersync as cs
from clustersync import _metrics, aio
from clustersync.dashboard import _html, create_app
from clustersync.dashboard._source import Source
from clustersync.exceptions import ConfigurationError
from tests.dashboard.support import subprocess_env

ACTION = {"X-Clustersync-Action": "1", "Content-Type": "application/json"}
HOUR = timedelta(hours=1)


def client_for(app: Any, base: str = "http://127.0.0.1:8787") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[aio.Store]:
    opened = await aio.open_store(f"sqlite:///{tmp_path / 'cluster.db'}", namespace="shop")
    yield opened
    await opened.close()


#: Two attempts, 50 ms apart (at most): a job whose callback always raises fails quickly.
RETRY_ARGS: dict[str, Any] = {"attempts": 2, "backoff": timedelta(milliseconds=50)}
RETRY = aio.Retry(**RETRY_ARGS)
#: What the failing callback raises (``<`` and ``>`` to check the escaping).
WEBHOOK_ERROR = "ConnectionError: POST <https://hooks.example.com/orders> answered 503"


async def fail_for_real(store: aio.Store, keys: list[str]) -> aio.JobOnceScheduler:
    """The jobs ``keys`` (props ``{"order": n}``) fail on both attempts of :data:`RETRY`,
    and ``remind:0`` runs fine, on the store's own scheduler, which is stopped afterwards
    (so that a job retried from the dashboard stays pending)."""
    scheduler = aio.get_job_once_scheduler(store, retry=RETRY)

    async def webhook(key: str, props: Any) -> None:
        raise ConnectionError("POST <https://hooks.example.com/orders> answered 503")

    async def reminder(key: str, props: Any) -> None:
        pass

    scheduler.set_callback(webhook, prefix="webhook:")
    scheduler.set_callback(reminder)
    await scheduler.start()
    try:
        now = datetime.now(UTC)
        jobs: list[tuple[str, datetime, Any]] = [
            (key, now, {"order": n}) for n, key in enumerate(keys, 1)
        ]
        await scheduler.schedule_many([*jobs, ("remind:0", now, None)])

        async def all_failed() -> bool:
            failed = {job.key for job in await scheduler.list_failed_jobs()}
            pending = await scheduler.list_scheduled_jobs()
            return failed == set(keys) and not pending

        await eventually(all_failed, timeout=30)
    finally:
        await scheduler.stop()
    return scheduler


def stat_values(page: str) -> list[str]:
    """The overview's counts: locks, recurring jobs, pending and failed one-shot jobs."""
    return [part.split("<")[0] for part in page.split('class="stat-value">')[1:]]


@dataclass
class Seeded:
    mutex: aio.Mutex
    jobs: list[aio.Job]


async def seed(store: aio.Store) -> Seeded:
    """A held mutex, a recurring job that ran, a failing one, and three one-shot jobs."""
    mutex = aio.Mutex(store, "billing-export", ttl=3)
    assert await mutex.acquire(timeout=10)

    async def ok() -> None:
        pass

    async def fail() -> None:
        raise ValueError("the report <could not> be built")

    jobs = [
        aio.schedule(store, "report", aio.wait_for_interval(HOUR), ok),
        aio.schedule(store, "digest", aio.wait_for_interval(HOUR), fail),
    ]

    async def both_ran() -> bool:
        listed = await aio.list_recurring_jobs(store)
        return len(listed) == 2 and all(job.last_finished for job in listed)

    await eventually(both_ran)
    now = datetime.now(UTC)
    await aio.get_job_once_scheduler(store).schedule_many(
        [
            ("remind:1", now + HOUR, {"user": 1}),
            ("remind:2", now + 2 * HOUR, {"user": 2, "note": "x" * 300}),
            ("invoice:7", now - timedelta(seconds=30), None),
        ]
    )
    return Seeded(mutex, jobs)


# -- pages ---------------------------------------------------------------------------------


async def test_pages_show_the_cluster_on_every_store(
    store_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = await aio.open_store(store_url, namespace=namespace, identity="dash-test")
    caplog.set_level(logging.INFO, logger="clustersync.dashboard")
    try:
        scheduler = await fail_for_real(store, ["webhook:1", "webhook:2"])
        await seed(store)
        async with client_for(create_app(store)) as client:
            overview = await client.get("/")
            assert overview.status_code == 200
            assert "Locks held" in overview.text
            assert "1 paused" not in overview.text  # nothing paused
            # two recurring jobs, three pending one-shot jobs, two failed ones
            assert stat_values(overview.text)[1:] == ["2", "3", "2"]
            assert "2 one-shot jobs have failed" in overview.text
            assert "digest" in overview.text
            assert "the report &lt;could not&gt; be built" in overview.text
            assert namespace in overview.text
            assert "dash-test" in overview.text
            # Recent runs, of both kinds: the reminder ran, each webhook was retried once
            # and failed on its second attempt, the recurring jobs ran.
            runs = overview.text.split("Recent runs")[1].split("Needs attention")[0]
            for key in ("remind:0", "webhook:1", "webhook:2", "report", "digest"):
                assert f'<code title="{key}">' in runs
            assert runs.count("<i></i>retry</span>") == 2
            assert runs.count("<i></i>error</span>") == 3  # two webhooks and digest
            assert runs.count("attempt 2") == 2
            assert "ConnectionError: POST &lt;https://hooks.example.com/orders&gt;" in runs
            run_rows = runs.split("<tbody>")[1].split("<tr>")[1:]
            assert len(run_rows) == 7
            for row in run_rows:
                cells = row.split("<td")
                lateness = cells[4].split(">", 1)[1].split("<")[0]
                once = ">once</span>" in row
                # One-shot runs were due at a time: their lateness shows; recurring: "—".
                assert (lateness != "—") == once, row
                assert 'on <span class="mono instance">dash-test</span>' in row

            locks = (await client.get("/locks")).text
            assert "billing-export" in locks
            assert "digest" not in locks
            recurring = (await client.get("/recurring")).text
            assert "report" in recurring
            assert "every 1h" in recurring
            assert "badge error" in recurring
            jobs = (await client.get("/jobs")).text
            for key in ("remind:1", "remind:2", "invoice:7"):
                assert key in jobs
            assert "webhook:" not in jobs  # failed jobs are not pending
            assert "badge warn" in jobs  # invoice:7 is due
            assert "…" in jobs  # the long props are cut
            failed = await client.get("/failed")
            assert failed.status_code == 200
            body = failed.text.split("<tbody>")[1].split("</tbody>")[0]
            assert body.count("<tr data-key=") == 2
            assert body.count('<tr class="error-row">') == 2
            for n in (1, 2):
                # The job's row and, below it, the row of its error.
                row = body.split(f'<tr data-key="webhook:{n}">')[1].split("<tr data-key=")[0]
                assert f'<code title="webhook:{n}">' in row
                assert '<td class="num">2</td>' in row  # attempts
                assert row.count("<time") == 2  # failed, was due
                assert f"{{&quot;order&quot;: {n}}}" in row  # props
                error = row.split('<tr class="error-row">')[1]
                assert WEBHOOK_ERROR.replace("<", "&lt;").replace(">", "&gt;") in error
            assert "data-action" not in locks + recurring + jobs + failed.text  # read-only

        async with client_for(create_app(store, allow_actions=True)) as client:
            page = (await client.get("/failed")).text
            for key in ("webhook:1", "webhook:2"):
                assert f'data-action="retry-failed" data-key="{key}"' in page
                assert f'data-action="cancel-failed" data-key="{key}"' in page
            assert 'data-confirm="Retry failed job “webhook:1”?' in page
            assert 'data-confirm="Remove failed job “webhook:2”?' in page

            async def post(action: str, key: str) -> httpx.Response:
                return await client.post(f"/actions/{action}", json={"key": key}, headers=ACTION)

            retried = await post("retry-failed", "webhook:1")
            assert retried.json() == {
                "ok": True,
                "message": "Scheduled failed job 'webhook:1' again, to run now with fresh"
                " attempts.",
            }
            pending = {job.key: job for job in await scheduler.list_scheduled_jobs()}
            assert pending["webhook:1"].props == {"order": 1}
            assert pending["webhook:1"].run_at <= datetime.now(UTC) + timedelta(seconds=5)
            assert "webhook:1" in (await client.get("/jobs")).text
            assert stat_values((await client.get("/")).text)[2:] == ["4", "1"]
            # The retried job is pending now: neither button of the failed page touches it.
            assert (await post("retry-failed", "webhook:1")).status_code == 404
            assert (await post("cancel-failed", "webhook:1")).status_code == 404
            assert "webhook:1" in {job.key for job in await scheduler.list_scheduled_jobs()}

            cancelled = await post("cancel-failed", "webhook:2")
            assert cancelled.json() == {
                "ok": True,
                "message": "Removed failed job 'webhook:2': it will never run.",
            }
            assert await scheduler.list_failed_jobs() == []
            assert "webhook:2" not in {job.key for job in await scheduler.list_scheduled_jobs()}
            assert "No failed jobs" in (await client.get("/failed")).text
            assert stat_values((await client.get("/")).text)[2:] == ["4", "0"]
        messages = [r.getMessage() for r in caplog.records if r.name == "clustersync.dashboard"]
        assert messages == [
            "dashboard: retry-failed 'webhook:1' by 127.0.0.1:123: Scheduled failed job"
            " 'webhook:1' again, to run now with fresh attempts.",
            "dashboard: retry-failed 'webhook:1' by 127.0.0.1:123 failed: no failed one-shot"
            " job 'webhook:1' (it may have been retried or removed)",
            "dashboard: cancel-failed 'webhook:1' by 127.0.0.1:123 failed: no failed one-shot"
            " job 'webhook:1' (it may have been retried or removed)",
            "dashboard: cancel-failed 'webhook:2' by 127.0.0.1:123: Removed failed job"
            " 'webhook:2': it will never run.",
        ]
    finally:
        await store.close()


async def test_fragment_is_the_live_region_only(store: aio.Store) -> None:
    await seed(store)
    async with client_for(create_app(store)) as client:
        whole = await client.get("/recurring")
        part = await client.get("/recurring", headers={"X-Clustersync-Fragment": "1"})
    assert whole.text.startswith("<!doctype html>")
    assert '<div id="live"' in whole.text
    assert "<nav" in whole.text
    assert "<html" not in part.text
    assert "<nav" not in part.text
    assert "report" in part.text
    assert float(part.headers["X-Clustersync-Now"]) > 0


async def test_empty_states(store: aio.Store) -> None:
    async with client_for(create_app(store)) as client:
        paths = ("/", "/locks", "/recurring", "/failed")
        texts = {path: (await client.get(path)).text for path in paths}
        texts["/jobs"] = (await client.get("/jobs")).text
        texts["/jobs?prefix=nope"] = (await client.get("/jobs", params={"prefix": "nope"})).text
    assert "All clear" in texts["/"]
    assert "No runs yet" in texts["/"]
    assert stat_values(texts["/"]) == ["0", "0", "0", "0"]
    assert "0 mutexes · 0 running jobs" in texts["/"]
    assert "No failed jobs" in texts["/failed"]
    assert "No locks held" in texts["/locks"]
    assert "No recurring jobs" in texts["/recurring"]
    assert "No pending one-shot jobs" in texts["/jobs"]
    assert "No matching jobs" in texts["/jobs?prefix=nope"]


async def test_one_shot_pages_follow_the_key_index(store: aio.Store) -> None:
    scheduler = aio.get_job_once_scheduler(store)
    run_at = datetime.now(UTC) + HOUR
    await scheduler.schedule_many([(f"a:{i:03d}", run_at, {"i": i}) for i in range(120)])
    await scheduler.schedule_many([(f"b:{i}", run_at, None) for i in range(5)])

    def keys(text: str) -> list[str]:
        return [part.split('"')[0] for part in text.split('<td class="key"><code title="')[1:]]

    async with client_for(create_app(store)) as client:
        first = (await client.get("/jobs", params={"prefix": "a:", "limit": "50"})).text
        assert keys(first) == [f"a:{i:03d}" for i in range(50)]
        assert 'href="/jobs?prefix=a%3A&amp;after=a%3A049&amp;limit=50"' in first
        assert "First page" not in first
        assert "125</span>" in first
        second = (await client.get("/jobs", params={"prefix": "a:", "after": "a:049"})).text
        assert keys(second) == [f"a:{i:03d}" for i in range(50, 100)]
        assert "First page" in second
        last = (await client.get("/jobs", params={"prefix": "a:", "after": "a:099"})).text
        assert keys(last) == [f"a:{i:03d}" for i in range(100, 120)]
        assert "Next page" not in last
        only_b = (await client.get("/jobs", params={"prefix": "b:", "limit": "2"})).text
        assert keys(only_b) == ["b:0", "b:1"]
        huge = (await client.get("/jobs", params={"limit": "100000"})).text
        assert len(keys(huge)) == 125  # capped at 200 per page
        assert (await client.get("/jobs", params={"limit": "x"})).status_code == 200


async def test_threading_store_runs_in_worker_threads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    store = cs.open_store(url, namespace="shop")
    callers: set[str] = set()
    job = cs.schedule(
        store,
        "report",
        cs.wait_for_interval(HOUR),
        lambda: callers.add(threading.current_thread().name),
    )
    mutex = cs.Mutex(store, "export")
    scheduler = cs.get_job_once_scheduler(store, retry=cs.Retry(**RETRY_ARGS))

    def charge(key: str, props: Any) -> None:
        raise LookupError(f"no such customer: {props['customer']}")

    scheduler.set_callback(charge)
    try:
        assert mutex.acquire(timeout=10)
        scheduler.schedule_once("remind:1", datetime.now(UTC) + HOUR)
        scheduler.start()
        scheduler.schedule_once("charge:9", datetime.now(UTC), {"customer": "cus_9"})
        await eventually(lambda: _async_value(bool(scheduler.list_failed_jobs())))
        scheduler.stop()
        async with client_for(create_app(store, allow_actions=True)) as client:
            overview = await client.get("/")
            assert "threading (worker threads)" in overview.text
            assert stat_values(overview.text)[3] == "1"
            assert '<code title="charge:9">' in overview.text  # its runs
            assert "export" in (await client.get("/locks")).text
            assert "remind:1" in (await client.get("/jobs")).text
            failed = (await client.get("/failed")).text
            assert "LookupError: no such customer: cus_9" in failed
            answer = await client.post("/actions/pause", json={"key": "report"}, headers=ACTION)
            assert answer.status_code == 200, answer.text
            assert [job.paused for job in cs.list_recurring_jobs(store)] == [True]
            assert "badge warn" in (await client.get("/recurring")).text
            answer = await client.post(
                "/actions/retry-failed", json={"key": "charge:9"}, headers=ACTION
            )
            assert answer.status_code == 200, answer.text
            assert [job.key for job in scheduler.list_scheduled_jobs()] == ["charge:9", "remind:1"]
            assert scheduler.list_failed_jobs() == []
    finally:
        job.close()
        mutex.release()
        store.close()


async def test_the_dashboard_never_creates_the_store_scheduler(store: aio.Store) -> None:
    """get_job_once_scheduler(store) would fix the scheduler's options before the
    application asks for its own."""
    await aio.get_job_once_scheduler(store).schedule_once("x", datetime.now(UTC) + HOUR)
    store._scheduler = None
    async with client_for(create_app(store, allow_actions=True)) as client:
        for path in ("/", "/jobs", "/failed"):
            assert (await client.get(path)).status_code == 200
        cancel = await client.post("/actions/cancel-job", json={"key": "x"}, headers=ACTION)
        assert cancel.status_code == 200, cancel.text
        for action in ("retry-failed", "cancel-failed"):
            answer = await client.post(f"/actions/{action}", json={"key": "x"}, headers=ACTION)
            assert answer.status_code == 404, answer.text
    assert store._scheduler is None
    assert aio.get_job_once_scheduler(store, claim_ttl=120).claim_ttl == 120


# -- actions -------------------------------------------------------------------------------


async def test_read_only_refuses_actions(
    store: aio.Store, caplog: pytest.LogCaptureFixture
) -> None:
    await seed(store)
    caplog.set_level(logging.INFO, logger="clustersync.dashboard")
    async with client_for(create_app(store)) as client:
        pages = [(await client.get(path)).text for path in ("/locks", "/recurring", "/jobs")]
        answer = await client.post("/actions/pause", json={"key": "report"}, headers=ACTION)
    assert not any("data-action" in page for page in pages)
    assert all("--allow-actions" in page for page in pages)
    assert answer.status_code == 403
    assert "--allow-actions" in answer.json()["error"]
    assert not [job for job in await aio.list_recurring_jobs(store) if job.paused]
    (record,) = [r for r in caplog.records if r.name == "clustersync.dashboard"]
    assert record.levelno == logging.WARNING
    assert "refused pause from 127.0.0.1:123: actions are disabled" in record.getMessage()


async def test_actions_do_it_and_are_logged_with_the_client(
    store: aio.Store, caplog: pytest.LogCaptureFixture
) -> None:
    seeded = await seed(store)
    caplog.set_level(logging.INFO, logger="clustersync.dashboard")
    async with client_for(create_app(store, allow_actions=True)) as client:
        recurring = (await client.get("/recurring")).text
        assert 'data-action="pause" data-key="report"' in recurring
        assert 'data-action="trigger" data-key="report"' in recurring

        async def post(action: str, key: str) -> httpx.Response:
            return await client.post(f"/actions/{action}", json={"key": key}, headers=ACTION)

        assert (await post("pause", "report")).json() == {
            "ok": True,
            "message": "Paused recurring job 'report' on every instance.",
        }
        assert [job.paused for job in await aio.list_recurring_jobs(store)] == [False, True]
        assert 'data-action="resume" data-key="report"' in (await client.get("/recurring")).text
        assert (await post("resume", "report")).status_code == 200
        assert (await post("trigger", "report")).status_code == 200
        assert (await post("cancel-job", "remind:1")).status_code == 200
        assert "remind:1" not in (await client.get("/jobs")).text
        assert (
            'data-action="break-lock" data-key="billing-export"'
            in (await client.get("/locks")).text
        )
        assert (await post("break-lock", "billing-export")).status_code == 200
        await eventually(lambda: _async_value(not seeded.mutex.locked()))
    messages = [r.getMessage() for r in caplog.records if r.name == "clustersync.dashboard"]
    assert messages == [
        "dashboard: pause 'report' by 127.0.0.1:123: Paused recurring job 'report' on every"
        " instance.",
        "dashboard: resume 'report' by 127.0.0.1:123: Resumed recurring job 'report' on every"
        " instance.",
        "dashboard: trigger 'report' by 127.0.0.1:123: Triggered recurring job 'report': it"
        " runs once more, on one instance.",
        "dashboard: cancel-job 'remind:1' by 127.0.0.1:123: Cancelled one-shot job 'remind:1'.",
        "dashboard: break-lock 'billing-export' by 127.0.0.1:123: Broke mutex 'billing-export':"
        " the next holder gets a higher fencing token; the old holder learns it at its next"
        " renewal.",
    ]
    record = next(r for r in caplog.records if r.name == "clustersync.dashboard")
    assert record.__dict__["client"] == "127.0.0.1:123"
    assert record.__dict__["event"] == "dashboard.action"


async def _async_value(value: bool) -> bool:
    return value


@pytest.mark.parametrize(
    ("action", "body", "status", "fragment"),
    [
        ("pause", {"key": "nope"}, 404, "no recurring job 'nope' was ever scheduled"),
        ("cancel-job", {"key": "nope"}, 404, "no pending one-shot job 'nope'"),
        ("break-lock", {"key": "nope"}, 404, "mutex 'nope' is not held"),
        ("retry-failed", {"key": "nope"}, 404, "no failed one-shot job 'nope'"),
        ("cancel-failed", {"key": "nope"}, 404, "no failed one-shot job 'nope'"),
        ("explode", {"key": "x"}, 404, "unknown action 'explode'"),
        ("pause", {}, 400, 'the body needs {"key": "..."}'),
        ("pause", {"key": ""}, 400, "must not be empty"),
        ("pause", ["report"], 400, 'the body needs {"key": "..."}'),
    ],
)
async def test_action_errors(
    store: aio.Store, action: str, body: Any, status: int, fragment: str
) -> None:
    async with client_for(create_app(store, allow_actions=True)) as client:
        answer = await client.post(f"/actions/{action}", json=body, headers=ACTION)
    assert answer.status_code == status
    assert answer.json()["ok"] is False
    assert fragment in answer.json()["error"]


async def test_invalid_json_is_refused(store: aio.Store) -> None:
    async with client_for(create_app(store, allow_actions=True)) as client:
        answer = await client.post("/actions/pause", content=b"{", headers=ACTION)
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["error"]


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"Content-Type": "application/json"}, "missing header X-Clustersync-Action"),
        (
            {"X-Clustersync-Action": "1", "Content-Type": "application/x-www-form-urlencoded"},
            "JSON body",
        ),
        ({**ACTION, "Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site: cross-site"),
        ({**ACTION, "Sec-Fetch-Site": "same-site"}, "Sec-Fetch-Site: same-site"),
        ({**ACTION, "Origin": "http://evil.example"}, "Origin: http://evil.example"),
        ({**ACTION, "Origin": "null"}, "Origin: null"),
    ],
)
async def test_cross_site_requests_are_refused(
    store: aio.Store, headers: dict[str, str], fragment: str
) -> None:
    await seed(store)
    async with client_for(create_app(store, allow_actions=True)) as client:
        answer = await client.post(
            "/actions/pause", content=json.dumps({"key": "report"}), headers=headers
        )
    assert answer.status_code == 403
    assert fragment in answer.json()["error"]
    assert not [job for job in await aio.list_recurring_jobs(store) if job.paused]


async def test_same_origin_requests_pass(store: aio.Store) -> None:
    await seed(store)
    same = {**ACTION, "Origin": "http://127.0.0.1:8787", "Sec-Fetch-Site": "same-origin"}
    proxied = {**ACTION, "Origin": "https://ops.example", "X-Forwarded-Host": "ops.example"}
    async with client_for(create_app(store, allow_actions=True)) as client:
        for headers in (same, proxied):
            answer = await client.post("/actions/trigger", json={"key": "report"}, headers=headers)
            assert answer.status_code == 200, answer.text


async def test_pages_forbid_framing(store: aio.Store) -> None:
    async with client_for(create_app(store)) as client:
        page = await client.get("/")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"


# -- health, metrics, assets, mounting -----------------------------------------------------


async def test_healthz(tmp_path: Path) -> None:
    store = await aio.open_store(f"sqlite:///{tmp_path / 'h.db'}")
    app = create_app(store)
    async with client_for(app) as client:
        ok = await client.get("/healthz")
        assert (ok.status_code, ok.text) == (200, "ok\n")
        await store.close()
        down = await client.get("/healthz")
        assert down.status_code == 503
        assert down.text.startswith("store unavailable: ")
        page = await client.get("/locks")
        assert page.status_code == 503
        assert "The store did not answer" in page.text


async def test_metrics(store: aio.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("clustersync_test_total", "a test", registry=registry)
    counter.inc(3)
    async with client_for(create_app(store, metrics_registry=registry)) as client:
        own = await client.get("/metrics")
        assert own.status_code == 200
        assert "clustersync_test_total 3.0" in own.text
        assert own.headers["content-type"].startswith("text/plain")
    async with client_for(create_app(store)) as client:
        default = await client.get("/metrics")
        assert default.status_code == 200
        assert "python_info" in default.text
        monkeypatch.setitem(sys.modules, "prometheus_client", None)
        missing = await client.get("/metrics")
    assert missing.status_code == 404
    assert 'pip install "clustersync[prometheus]"' in missing.text


async def test_metrics_serve_what_enable_metrics_records(store: aio.Store) -> None:
    """Without metrics_registry, /metrics serves the registry enable_metrics() records
    into: the one it was given, or the default registry."""
    acquired = 'clustersync_lock_acquisitions_total{kind="mutex",result="acquired"}'
    for registry in (prometheus_client.CollectorRegistry(), None):
        cs.enable_metrics(registry)
        try:
            before = await scrape(store, acquired)
            async with aio.Mutex(store, "export"):
                pass
            assert await scrape(store, acquired) == before + 1
            async with client_for(create_app(store)) as client:
                text = (await client.get("/metrics")).text
            assert "clustersync_jobs_pending" in text
            # The default registry has the process's own metrics, a registry of one's own not.
            assert ("python_info" in text) == (registry is None)
        finally:
            _metrics.disable_metrics()


async def scrape(store: aio.Store, sample: str) -> float:
    """The value of ``sample`` on the dashboard's /metrics (0 when absent)."""
    async with client_for(create_app(store)) as client:
        text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


async def test_metrics_of_every_process_in_multiprocess_mode(
    store: aio.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PROMETHEUS_MULTIPROC_DIR (gunicorn), /metrics aggregates every process's
    samples, as prometheus_client's MultiProcessCollector does."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    worker = (
        "import clustersync\n"
        "clustersync.enable_metrics()\n"
        "store = clustersync.open_store('memory://worker')\n"
        "for _ in range(3):\n"
        "    with clustersync.Mutex(store, 'export'):\n"
        "        pass\n"
        "store.close()\n"
    )
    env = subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(folder))
    for _ in range(2):  # two worker processes
        command = [sys.executable, "-c", worker]
        await asyncio.to_thread(subprocess.run, command, check=True, env=env, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    async with client_for(create_app(store)) as client:
        text = (await client.get("/metrics")).text
    assert 'clustersync_lock_acquisitions_total{kind="mutex",result="acquired"} 6.0' in text


async def test_locks_show_election_leaders(store: aio.Store) -> None:
    await seed(store)
    election = aio.Election(store, "primary-db")
    election.start()
    try:
        assert await election.wait_until_leader(timeout=10)
        async with client_for(create_app(store, allow_actions=True)) as client:
            locks = (await client.get("/locks")).text
            overview = (await client.get("/")).text
        row = locks.split('<code title="primary-db">')[0].rsplit("<tr>", 1)[1]
        row += locks.split('<code title="primary-db">')[1].split("</tr>")[0]
        assert '<span class="badge ok">election</span>' in row
        assert f'<td class="num mono">{election.term}</td>' in row
        assert "data-action" not in row  # break_lock ends mutexes and semaphores only
        assert 'data-action="break-lock" data-key="billing-export"' in locks
        assert "Semaphore.holders()" in locks
        assert re.search(r"1 mutex · 1 election leader · [01] running jobs?<", overview)
    finally:
        await election.stop()


async def test_static_assets(store: aio.Store) -> None:
    async with client_for(create_app(store)) as client:
        page = (await client.get("/")).text
        for name, media in (("dashboard.css", "text/css"), ("dashboard.js", "text/javascript")):
            link = page.split(f"/static/{name}?v=")[1].split('"')[0]
            found = await client.get(f"/static/{name}", params={"v": link})
            assert found.status_code == 200
            assert found.headers["content-type"].startswith(media)
            assert "immutable" in found.headers["cache-control"]
        assert (await client.get("/static/favicon.svg")).status_code == 200
        assert (await client.get("/static/secrets.txt")).status_code == 404
    static = resources.files("clustersync.dashboard").joinpath("static")
    assert {item.name for item in static.iterdir()} >= {
        "dashboard.css",
        "dashboard.js",
        "favicon.svg",
    }


async def test_mounted_under_a_path(store: aio.Store) -> None:
    await seed(store)
    host = Starlette(routes=[Mount("/ops", create_app(store, allow_actions=True))])
    async with client_for(host) as client:
        page = await client.get("/ops/recurring")
        assert page.status_code == 200
        assert 'href="/ops/locks"' in page.text
        assert 'href="/ops/"' in page.text
        assert 'data-base="/ops"' in page.text
        assert "/ops/static/dashboard.css?v=" in page.text
        jobs = (await client.get("/ops/jobs", params={"limit": "1"})).text
        assert 'href="/ops/jobs?after=invoice%3A7&amp;limit=1"' in jobs
        answer = await client.post("/ops/actions/pause", json={"key": "report"}, headers=ACTION)
        assert answer.status_code == 200
        assert (await client.get("/ops/healthz")).text == "ok\n"


# -- without the extra ---------------------------------------------------------------------


def test_importing_clustersync_does_not_import_starlette() -> None:
    code = (
        "import sys, clustersync, clustersync.aio, clustersync.cli, clustersync.dashboard;"
        " assert not [m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn')],"
        " sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env(), timeout=60)


def test_create_app_without_starlette(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "clustersync.dashboard._app", raising=False)
    monkeypatch.setitem(sys.modules, "starlette", None)
    monkeypatch.setitem(sys.modules, "starlette.applications", None)
    with pytest.raises(ConfigurationError, match=r'pip install "clustersync\[dashboard\]"'):
        create_app(object())  # type: ignore[arg-type]


async def test_create_app_checks_its_arguments(store: aio.Store) -> None:
    with pytest.raises(TypeError, match="needs a store"):
        create_app(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="allow_actions"):
        create_app(store, allow_actions="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="poll_interval"):
        create_app(store, poll_interval=0)


# -- formatting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "now"),
        (-0.9, "now"),
        (3.7, "in 3s"),
        (-3.2, "3s ago"),
        (300, "in 5m"),
        (-359, "5m ago"),
        (3600 * 2 + 60 * 5, "in 2h 5m"),
        (7200, "in 2h"),
        (-86400 * 3 - 3600 * 4, "3d 4h ago"),
        (86400, "in 1d"),
        (float("nan"), "?"),
    ],
)
def test_relative(seconds: float, text: str) -> None:
    assert _html.relative(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0012, "1.2 ms"),
        (0.85, "850 ms"),
        (12.34, "12.3 s"),
        (303, "5m 03s"),
        (7500, "2h 05m"),
        (90000, "1d 01h"),
        (-0.5, "-500 ms"),
    ],
)
def test_duration(seconds: float, text: str) -> None:
    assert _html.duration(seconds) == text


def test_escaping() -> None:
    assert _html.esc('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"
    assert _html.props_preview('{"a": "<b>"}') == (
        '<code class=props title="{&quot;a&quot;: &quot;&lt;b&gt;&quot;}">'
        "{&quot;a&quot;: &quot;&lt;b&gt;&quot;}</code>"
    )
    assert "muted" in _html.props_preview("null")


# -- counting ------------------------------------------------------------------------------


async def test_an_expensive_count_is_reused(
    store: aio.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """count_jobs() scans the namespace on some stores: open pages refreshing every 2 s
    must not keep the store counting."""
    calls: list[float] = []
    cost = [0.03]

    async def count_jobs() -> int:
        calls.append(cost[0])
        await asyncio.sleep(cost[0])
        return 7

    monkeypatch.setattr(store._ops, "count_jobs", count_jobs)
    source = Source(store)
    together = await asyncio.gather(*(source.count_jobs() for _ in range(5)))
    assert together == [7] * 5
    assert len(calls) == 1  # one count for concurrent requests
    assert await source.count_jobs() == 7
    assert len(calls) == 1  # reused: it cost more than CHEAP_COUNT
    source.changed()  # an action
    await source.count_jobs()
    assert len(calls) == 2
    cost[0] = 0.0
    source.changed()
    for _ in range(3):
        await source.count_jobs()
    assert len(calls) == 5  # cheap counts are never reused
