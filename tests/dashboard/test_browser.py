"""The dashboard in headless Chromium (Debian's ``/usr/bin/chromium``, driven by
Playwright): every page against a cluster with real holds, an election leader, recurring
jobs, one-shot jobs that ran or failed for good and pending ones, live updates without a
reload, actions through the buttons (and their confirmation dialog), and a read-only
dashboard without buttons.

Runs in CI (``CI=true``: a missing Chromium fails the test; locally it skips). The
screenshots of each page go to ``tmp_path``, or to the folder named by
``CLUSTERSYNC_SCREENSHOTS`` (``CLUSTERSYNC_SCREENSHOTS=docs/images`` refreshes the
documentation's images).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect, sync_playwright

import clustersync as cs
from tests.dashboard.support import (
    CHROMIUM_ARGS,
    RAN_ONCE,
    ROOT,
    Cluster,
    Served,
    cluster,
    dashboard_command,
    require_chromium,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)

VIEWPORT = {"width": 1320, "height": 860}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile (``--user-data-dir``) for the module."""
    executable = require_chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,  # type: ignore[arg-type]
            color_scheme="light",
            locale="en-US",
            timezone_id="UTC",
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def expected_errors() -> list[str]:
    """Console errors a test expects (fragments of their text)."""
    return []


@pytest.fixture
def page(browser: BrowserContext, expected_errors: list[str]) -> Iterator[Page]:
    """A tab that fails the test on any script error or unexpected console error (request
    it after the server it shows, so that it closes before the server stops)."""
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    yield tab
    tab.close()
    assert not [e for e in errors if not any(part in e for part in expected_errors)], errors


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[Cluster, Path]]:
    """The cluster on ``tmp_path/shop.db`` (namespace ``shop``)."""
    with cluster(f"sqlite:///{tmp_path / 'shop.db'}", "shop", one_shot=60) as state:
        yield state, tmp_path


@pytest.fixture
def served(shop: tuple[Cluster, Path]) -> Iterator[Served]:
    """``clustersync dashboard --allow-actions`` on the shop, started in its folder (so
    that the header reads ``sqlite:///shop.db``)."""
    _, folder = shop
    with dashboard_command("sqlite:///shop.db", "shop", "--allow-actions", cwd=folder) as server:
        yield server


def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"dashboard-{name}.png"
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 400})  # the content only
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    page.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]
    assert path.stat().st_size > 10_000
    folder = os.environ.get("CLUSTERSYNC_SCREENSHOTS")
    if folder:
        target = ROOT / folder
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.name)


def tab(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Pages").get_by_role("link", name=name)


def rows(page: Page, selector: str = "#live tbody tr:not(.error-row)") -> list[str]:
    texts: list[str] = page.locator(selector).locator("td.key code").all_inner_texts()
    return texts


def test_every_page_in_a_browser(
    served: Served, page: Page, shop: tuple[Cluster, Path], tmp_path: Path
) -> None:
    state, _ = shop
    page.goto(served.url + "/")
    expect(page.locator("h1")).to_have_text("Overview")
    values = page.locator(".stat-value").all_inner_texts()
    assert values == ["4", "6", "60", "2"]  # 2 mutexes, 1 election leader, 1 running job
    expect(page.locator(".stat-sub").first).to_have_text(
        "2 mutexes · 1 election leader · 1 running job"
    )
    expect(page.locator(".chip").first).to_contain_text("sqlite:///shop.db")
    expect(page.locator(".chip").nth(1)).to_contain_text("shop")
    expect(page.locator(".item.error").first).to_contain_text("emails.digest")
    expect(page.locator(".item.error").last).to_contain_text("2 one-shot jobs have failed")
    expect(page.locator(".item.warn")).to_contain_text("sessions.cleanup")
    # Recent runs, newest first: the one-shot jobs (retried, then failed), then the
    # recurring ones, with outcome, lateness and instance.
    runs = page.locator("table.runs tbody tr")
    expect(runs).to_have_count(12)
    keys = rows(page, "table.runs tbody tr")
    assert set(keys[:8]) == set(RAN_ONCE)
    failing = runs.filter(has_text="webhook:deliver:ord_1042")
    expect(failing).to_have_count(3)  # attempts 1 and 2 retried, attempt 3 failed
    expect(failing.first.locator(".badge.error")).to_have_text("error")
    expect(failing.first).to_contain_text("attempt 3")
    expect(failing.first.locator("code.run-error")).to_have_text(
        state.failed["webhook:deliver:ord_1042"]
    )
    expect(failing.nth(1).locator(".badge.warn")).to_have_text("retry")
    expect(runs.filter(has_text="remind:user:1001").locator(".badge.ok")).to_have_text("ok")
    expect(runs.filter(has_text="remind:user:1001").locator("td").nth(3)).to_have_text(
        re.compile(r"^[\d.]+ (ms|s)$")  # lateness
    )
    recurring = runs.filter(has=page.locator(".badge", has_text="recurring"))
    expect(recurring).to_have_count(4)  # the oldest of the 5 finished runs is not shown
    expect(recurring.locator("td:nth-child(4)")).to_have_text(["—"] * 4)  # no lateness
    expect(runs.filter(has_text="remind:user:1001").locator(".instance")).to_have_text("worker-1")
    # Relative times, kept current by the page's script.
    finished = page.locator(".columns table time[data-ts]").first
    expect(finished).to_have_text(re.compile(r"^(now|\d+s ago)$"))
    expect(page.locator(".stat time[data-ts]")).to_have_text(re.compile(r"^in \d+s$"))
    screenshot(page, tmp_path, "overview")

    tab(page, "Locks").click()
    expect(page.locator("h1")).to_have_text("Locks")
    assert sorted(rows(page)) == [
        "billing-export",
        "reports-leader",
        "search-index-rebuild",
        "search.reindex",
    ]
    leader = page.locator("#live tbody tr", has=page.locator("code[title='reports-leader']"))
    expect(leader.locator(".badge")).to_have_text("election")
    expect(leader.locator("td.mono").first).to_have_text("worker-1")
    expect(page.locator("button[data-action=break-lock]")).to_have_count(2)  # mutexes only
    screenshot(page, tmp_path, "locks")

    tab(page, "Recurring jobs").click()
    expect(page.locator("h1")).to_have_text("Recurring jobs")
    assert rows(page) == [
        "billing.invoice-run",
        "cache.refresh-rates",
        "emails.digest",
        "reports.nightly",
        "search.reindex",
        "sessions.cleanup",
    ]
    expect(page.locator("tr.error-row")).to_contain_text("SMTP server refused the connection")
    expect(page.locator("tr[data-key='sessions.cleanup'] .badge.warn")).to_have_text("paused")
    expect(page.locator("tr[data-key='search.reindex'] .badge.info")).to_have_text("running")
    expect(page.locator("tr[data-key='cache.refresh-rates'] td.num")).to_have_text("2")
    screenshot(page, tmp_path, "recurring")

    tab(page, "One-shot jobs").click()
    expect(page.locator("#live tbody tr")).to_have_count(50)
    page.get_by_label("Key prefix").fill("remind:")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#live tbody tr")).to_have_count(20)
    reminders = sorted(key for key in state.one_shot if key.startswith("remind:"))
    assert rows(page) == reminders
    expect(page.locator("#live")).to_contain_text('{"user": 1000, "template": "trial-ending"}')
    screenshot(page, tmp_path, "jobs")
    page.get_by_role("link", name="Clear").click()
    expect(page.get_by_label("Key prefix")).to_have_value("")
    page.get_by_label("Page size").select_option("25")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#live tbody tr")).to_have_count(25)
    page.get_by_role("link", name="Next page").click()
    expect(page.locator("#live tbody tr")).to_have_count(25)
    assert rows(page)[0] == sorted(state.one_shot)[25]

    tab(page, "Failed jobs").click()
    expect(page.locator("h1")).to_have_text("Failed jobs")
    assert sorted(rows(page)) == sorted(state.failed)
    for key, error in state.failed.items():
        row = page.locator(f"tr[data-key='{key}']")
        expect(page.locator(f"tr[data-key='{key}'] + tr.error-row")).to_have_text(error)
        expect(row.locator("td.num")).to_have_text("3")  # attempts
        expect(row.locator("code.props")).to_contain_text(json.dumps(RAN_ONCE[key][0]))
        expect(row.get_by_role("button", name="Retry")).to_be_visible()
        expect(row.get_by_role("button", name="Cancel")).to_be_visible()
    screenshot(page, tmp_path, "failed")

    page.emulate_media(color_scheme="dark")
    page.goto(served.url + "/")
    expect(page.locator(".stat-value").first).to_have_text("4")
    screenshot(page, tmp_path, "overview-dark")
    page.emulate_media(color_scheme="light")


def test_pausing_shows_live_without_a_reload(
    served: Served, page: Page, shop: tuple[Cluster, Path]
) -> None:
    state, _ = shop
    page.goto(served.url + "/recurring")
    page.evaluate("window.notReloaded = true")
    row = page.locator("tr[data-key='cache.refresh-rates']")
    expect(row.locator(".badge")).to_have_text(["scheduled"])

    row.get_by_role("button", name="Pause").click()
    expect(page.locator(".toast")).to_contain_text("Paused recurring job 'cache.refresh-rates'")
    expect(row.locator(".badge.warn")).to_have_text("paused")
    expect(row.get_by_role("button", name="Resume")).to_be_visible()
    assert [
        job.paused for job in cs.list_recurring_jobs(state.web) if job.key == "cache.refresh-rates"
    ] == [True]

    # Another operator resumes it (CLI, script...): the open page follows by itself.
    cs.resume_recurring_job(state.worker, "cache.refresh-rates")
    expect(row.locator(".badge")).to_have_text(["scheduled"], timeout=8000)
    expect(row.get_by_role("button", name="Pause")).to_be_visible()
    # ... and so does the overview, for a change made elsewhere.
    tab(page, "Overview").click()
    page.evaluate("window.notReloaded = true")
    cs.pause_recurring_job(state.worker, "billing.invoice-run")
    expect(page.locator(".stat-sub").nth(1)).to_contain_text("2 paused", timeout=8000)
    assert page.evaluate("window.notReloaded") is True


def test_cancel_a_job_and_break_a_lock(
    served: Served, page: Page, shop: tuple[Cluster, Path]
) -> None:
    state, _ = shop
    victim = sorted(key for key in state.one_shot if key.startswith("invoice:"))[0]
    page.goto(served.url + "/jobs?prefix=invoice:")
    row = page.locator("#live tbody tr", has=page.locator(f"code[title='{victim}']"))
    expect(row).to_have_count(1)
    row.get_by_role("button", name="Cancel").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(victim)
    dialog.get_by_role("button", name="Keep it").click()  # changed my mind
    expect(dialog).to_be_hidden()
    expect(row).to_have_count(1)
    row.get_by_role("button", name="Cancel").click()
    dialog.get_by_role("button", name="Cancel job").click()
    expect(page.locator(".toast")).to_contain_text(f"Cancelled one-shot job '{victim}'")
    expect(row).to_have_count(0)
    pending = cs.get_job_once_scheduler(state.web).list_scheduled_jobs()
    assert victim not in {job.key for job in pending}
    assert len(pending) == 59

    page.goto(served.url + "/locks")
    lock = page.locator("#live tbody tr", has=page.locator("code[title='billing-export']"))
    lock.get_by_role("button", name="Break").click()
    page.locator("dialog#confirm").get_by_role("button", name="Break lock").click()
    expect(page.locator(".toast").last).to_contain_text("Broke mutex 'billing-export'")
    wait_for(lambda: "billing-export" in state.lost, 15, "the holder to learn it lost the lock")
    expect(lock).to_have_count(0)


def test_retry_and_cancel_failed_jobs(
    served: Served, page: Page, shop: tuple[Cluster, Path]
) -> None:
    state, _ = shop
    scheduler = cs.get_job_once_scheduler(state.worker)
    retried, removed = "webhook:deliver:ord_1042", "export:crm:2026-12-05"
    page.goto(served.url + "/failed")
    row = page.locator("#live tbody tr", has=page.locator(f"code[title='{retried}']"))
    row.get_by_role("button", name="Retry").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Retry failed job “{retried}”?")
    expect(dialog.locator("#confirm-ok")).to_have_class("btn primary")
    dialog.get_by_role("button", name="Keep it").click()  # changed my mind
    expect(dialog).to_be_hidden()
    assert retried in {job.key for job in scheduler.list_failed_jobs()}
    row.get_by_role("button", name="Retry").click()
    dialog.get_by_role("button", name="Retry job").click()
    expect(page.locator(".toast")).to_contain_text(f"Scheduled failed job '{retried}' again")
    expect(row).to_have_count(0)
    pending = {job.key: job for job in scheduler.list_scheduled_jobs()}
    assert pending[retried].props == RAN_ONCE[retried][0]  # pending again (nothing runs it)
    assert {job.key for job in scheduler.list_failed_jobs()} == {removed}

    row = page.locator("#live tbody tr", has=page.locator(f"code[title='{removed}']"))
    row.get_by_role("button", name="Cancel").click()
    expect(dialog.locator("#confirm-ok")).to_have_class("btn danger solid")
    dialog.get_by_role("button", name="Remove job").click()
    expect(page.locator(".toast").last).to_contain_text(f"Removed failed job '{removed}'")
    expect(page.locator(".empty h3")).to_have_text("No failed jobs")
    assert scheduler.list_failed_jobs() == []
    assert removed not in {job.key for job in scheduler.list_scheduled_jobs()}

    tab(page, "Overview").click()
    expect(page.locator(".stat-value")).to_have_text(["4", "6", "61", "0"])
    page.goto(served.url + "/jobs?prefix=webhook:deliver:")
    assert rows(page) == [retried]


def test_read_only_in_a_browser(
    page: Page, shop: tuple[Cluster, Path], expected_errors: list[str]
) -> None:
    _, folder = shop
    expected_errors.append("403 (Forbidden)")
    with dashboard_command("sqlite:///shop.db", "shop", cwd=folder) as server:
        for path in ("/", "/locks", "/recurring", "/jobs", "/failed"):
            page.goto(server.url + path)
            expect(page.locator(".badge", has_text="read-only")).to_be_visible()
            expect(page.locator("button[data-action]")).to_have_count(0)
        answer = page.evaluate(
            """async () => {
                const response = await fetch("/actions/pause", {
                    method: "POST",
                    headers: {"Content-Type": "application/json", "X-Clustersync-Action": "1"},
                    body: JSON.stringify({key: "emails.digest"}),
                });
                return [response.status, (await response.json()).error];
            }"""
        )
        page.goto("about:blank")  # no refresh of a stopped server
    assert answer[0] == 403
    assert "--allow-actions" in answer[1]
