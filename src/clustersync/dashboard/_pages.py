"""The dashboard's pages: what each reads from the store and the HTML it shows.

Each page is a function of a :class:`View` that returns a :class:`Page`: its title, the
part above the live region (e.g. a search form, never replaced while the user types) and
the live region itself, which the page's script fetches again every few seconds (a
*fragment*) and swaps in when it changed. Every read is bounded (see ``_source``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from .._core.info import FailedJob, LockInfo, RecurringJobInfo, RunInfo
from .._core.validation import micros_to_datetime
from ._html import (
    action_button,
    attr,
    badge,
    count,
    countdown,
    duration,
    empty,
    esc,
    icon,
    moment,
    props_of,
    props_preview,
)
from ._source import MAX_FAILED_SHOWN, Source

#: Page sizes offered on the one-shot jobs page, and the default.
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
#: Runs shown on the overview.
RECENT_RUNS = 12

#: (path, title, icon) of the navigation, in order.
NAV = (
    ("/", "Overview", "overview"),
    ("/locks", "Locks", "lock"),
    ("/recurring", "Recurring jobs", "repeat"),
    ("/jobs", "One-shot jobs", "clock"),
    ("/failed", "Failed jobs", "alert"),
)


@dataclass
class View:
    """One request's view of the store."""

    source: Source
    base: str  # where the dashboard is mounted ("" or e.g. "/ops")
    allow_actions: bool
    now: float = field(default_factory=time.time)

    def href(self, path: str, **query: str | int | None) -> str:
        params = {name: value for name, value in query.items() if value not in (None, "")}
        suffix = "?" + urlencode(params) if params else ""
        return f"{self.base}{path}{suffix}"


@dataclass
class Page:
    path: str  # the NAV entry it belongs to
    title: str
    lede: str
    live: str
    above: str = ""


# -- small parts ---------------------------------------------------------------------------


def card(title: str, body: str, *, icon_name: str | None = None, extra: str = "") -> str:
    mark = icon(icon_name) if icon_name else ""
    return (
        f'<section class="card"><header class="card-head"><h2>{mark}{esc(title)}</h2>'
        f"{extra}</header>{body}</section>"
    )


def table(headers: Sequence[str], rows: Sequence[str], *, cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return (
        f'<div class="table-wrap"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def key_cell(key: str, sub: str = "") -> str:
    below = f'<div class="sub">{sub}</div>' if sub else ""
    return f'<td class="key"><code title={attr(key)}>{esc(key)}</code>{below}</td>'


def outcome_badge(outcome: str, error: str | None = None) -> str:
    """A run's outcome: ``ok``, ``error`` (done, or failed for good) or ``retry`` (it
    raised and runs again later)."""
    tone = {"ok": "ok", "error": "error", "retry": "warn"}.get(outcome, "neutral")
    return badge(outcome, tone, title=error)


def read_only_note(view: View) -> str:
    if view.allow_actions:
        return ""
    return (
        '<p class="note">Read-only: start the dashboard with <code>--allow-actions</code> (or'
        " <code>create_app(store, allow_actions=True)</code>) to act from here.</p>"
    )


# -- overview ------------------------------------------------------------------------------


async def overview(view: View) -> Page:
    source = view.source
    started = time.perf_counter()
    store_now_us = await source.now_us()
    round_trip = time.perf_counter() - started
    local_now = time.time() - round_trip / 2
    locks, jobs, pending, next_delay, failed, runs = await asyncio.gather(
        source.list_locks(),
        source.list_recurring_jobs(),
        source.count_jobs(),
        source.next_job_delay(),
        source.failed_jobs(),
        source.recent_runs(RECENT_RUNS),
    )
    paused = sum(1 for job in jobs if job.paused)
    failing = [job for job in jobs if job.last_outcome == "error"]

    lock_sub = lock_summary(locks)
    job_sub = [f"{paused} paused" if paused else "none paused"]
    job_sub.append(
        f'<span class="tone-error">{len(failing)} failing</span>' if failing else "none failing"
    )
    if next_delay is None:
        next_text = "nothing scheduled"
    elif next_delay <= 0:
        next_text = "one is due now"
    else:
        next_text = "next due " + countdown(next_delay, view.now)
    failed_sub = "need attention" if failed else "none"
    stats = "".join(
        [
            stat(view, "/locks", "Locks held", count(len(locks)), lock_sub, "lock", tone="accent"),
            stat(
                view,
                "/recurring",
                "Recurring jobs",
                count(len(jobs)),
                " · ".join(job_sub),
                "repeat",
                tone="info",
            ),
            stat(
                view,
                "/jobs",
                "Pending one-shot jobs",
                count(pending),
                next_text,
                "clock",
                tone="ok",
            ),
            stat(
                view,
                "/failed",
                "Failed one-shot jobs",
                count(len(failed)),
                failed_sub,
                "alert",
                tone="error" if failed else "neutral",
            ),
        ]
    )
    main = runs_card(view, runs)
    side = attention_card(view, jobs, failing, failed) + store_card(
        view, store_now_us, local_now, round_trip, pending
    )
    live = (
        f'<div class="stats">{stats}</div>'
        f'<div class="columns"><div>{main}</div><div>{side}</div></div>'
    )
    return Page("/", "Overview", "The cluster at a glance.", live)


def stat(
    view: View, path: str, label: str, value: str, sub: str, icon_name: str, *, tone: str
) -> str:
    return (
        f'<a class="stat {tone}" href={attr(view.href(path))}>'
        f'<div class="stat-top"><span>{esc(label)}</span>{icon(icon_name, size=18)}</div>'
        f'<div class="stat-value">{value}</div><div class="stat-sub">{sub}</div></a>'
    )


#: How the overview counts each kind of lock: (singular, plural), in this order.
LOCK_NOUNS = {
    "mutex": ("mutex", "mutexes"),
    "election": ("election leader", "election leaders"),
    "job": ("running job", "running jobs"),
}


def lock_summary(locks: Sequence[LockInfo]) -> str:
    """``"2 mutexes · 1 election leader · 1 running job"`` (kinds held, mutexes and
    running jobs always)."""
    kinds = [lock.kind for lock in locks]
    parts = []
    for kind, (one, many) in LOCK_NOUNS.items():
        held = kinds.count(kind)
        if held or kind != "election":
            parts.append(f"{held} {one if held == 1 else many}")
    others = sum(1 for kind in kinds if kind not in LOCK_NOUNS)
    if others:
        parts.append(f"{others} other")
    return " · ".join(parts)


def runs_card(view: View, runs: Sequence[RunInfo]) -> str:
    if not runs:
        body = empty(
            "activity",
            "No runs yet",
            "Runs of recurring and one-shot jobs appear here as they finish.",
        )
    else:
        body = table(
            ["Job", "Finished", "Duration", "Lateness", "Outcome"],
            [run_row(view, run) for run in runs],
            cls="runs",
        )
    return card("Recent runs", body, icon_name="activity")


def run_row(view: View, run: RunInfo) -> str:
    """A run: its job (kind, attempt and the instance it ran on below the key), when it
    finished, how long it took, how late it started (one-shot jobs: after the time it
    was due) and its outcome, with the error under it."""
    kind = badge("once" if run.kind == "once" else "recurring", "neutral", dot=False)
    facts = [f"attempt {run.attempt}"] if run.attempt > 1 else []
    facts.append(f'on <span class="mono instance">{esc(run.identity)}</span>')
    sub = f'{kind} <span class="muted">{" · ".join(facts)}</span>'
    if run.started is not None:
        took = duration((run.finished - run.started).total_seconds())
    else:
        took = "—"
    late = "—" if run.lateness_s is None else duration(run.lateness_s)
    late_cls = " tone-warn" if (run.lateness_s or 0) >= 1 else ""
    outcome = outcome_badge(run.outcome, run.error)
    if run.error:
        outcome += f"<code class=run-error title={attr(run.error)}>{esc(run.error)}</code>"
    return (
        f"<tr>{key_cell(run.key, sub)}<td>{moment(run.finished, view.now)}</td>"
        f'<td class="num">{took}</td><td class="num{late_cls}">{late}</td>'
        f'<td class="outcome">{outcome}</td></tr>'
    )


def attention_card(
    view: View,
    jobs: Sequence[RecurringJobInfo],
    failing: Sequence[RecurringJobInfo],
    failed: Sequence[FailedJob],
) -> str:
    items = []
    for job in failing:
        items.append(
            f'<li class="item error">{icon("alert")}<div><a href={attr(view.href("/recurring"))}>'
            f"<code>{esc(job.key)}</code></a> failed {moment(job.last_finished, view.now)}"
            f'<div class="err">{esc(job.last_error or "error")}</div></div></li>'
        )
    for job in jobs:
        if job.paused:
            items.append(
                f'<li class="item warn">{icon("pause")}<div><a'
                f" href={attr(view.href('/recurring'))}><code>{esc(job.key)}</code></a>"
                " is paused on every instance</div></li>"
            )
        elif job.instances == 0 and job.running_on is None:
            items.append(
                f'<li class="item">{icon("server")}<div><code>{esc(job.key)}</code>'
                " is scheduled by no live instance</div></li>"
            )
    if failed:
        noun = "job has" if len(failed) == 1 else "jobs have"
        items.append(
            f'<li class="item error">{icon("inbox")}<div><a href={attr(view.href("/failed"))}>'
            f"{count(len(failed))} one-shot {noun} failed</a></div></li>"
        )
    if not items:
        body = (
            f'<div class="all-clear">{icon("check", size=18)}<span>All clear: no failing or'
            " paused jobs.</span></div>"
        )
    else:
        body = f'<ul class="items">{"".join(items)}</ul>'
    return card("Needs attention", body, icon_name="alert")


def store_card(
    view: View, store_now_us: int, local_now: float, round_trip: float, pending: int
) -> str:
    source = view.source
    skew = store_now_us / 1_000_000 - local_now
    skew_text = (
        "in sync" if abs(skew) < 0.05 else f"{'+' if skew > 0 else '−'}{duration(abs(skew))}"
    )
    rows = [
        ("Store", f"<code class=breakable>{esc(source.url)}</code>"),
        ("Namespace", f"<code>{esc(source.namespace)}</code>"),
        ("Round trip", f"<span data-volatile>{esc(duration(round_trip))}</span>"),
        (
            "Store clock",
            f"<span data-volatile>{esc(skew_text)}</span> <span class=muted>vs this server</span>",
        ),
        ("One-shot jobs stored", count(pending)),
        ("API", "threading (worker threads)" if source.threaded else "asyncio"),
    ]
    body = "".join(f"<dt>{esc(name)}</dt><dd>{value}</dd>" for name, value in rows)
    return card("Store", f'<dl class="facts">{body}</dl>', icon_name="database")


# -- locks ---------------------------------------------------------------------------------


async def locks_page(view: View) -> Page:
    locks = await view.source.list_locks()
    lede = "Live leases: mutexes, election leaders and the recurring jobs running right now."
    if not locks:
        body = empty(
            "unlock",
            "No locks held",
            "Mutexes appear here while an instance holds them, election leaders while they"
            " lead, and recurring jobs while they run.",
        )
        return Page("/locks", "Locks", lede, card("Held locks", body, icon_name="lock"))
    headers = ["Kind", "Name", "Holder", "Fencing token", "Expires"]
    if view.allow_actions:
        headers.append("")
    rows = [lock_row(view, lock) for lock in locks]
    extra = f'<span class="count">{count(len(locks))}</span>'
    foot = (
        '<p class="card-foot">Semaphore slots are not listed here: see'
        " <code>Semaphore.holders()</code>. The fencing token of an election is its"
        " leader's term.</p>"
    )
    live = card("Held locks", table(headers, rows) + foot, icon_name="lock", extra=extra)
    return Page("/locks", "Locks", lede, live + read_only_note(view))


#: The badge tone of each kind of lock.
LOCK_TONES = {"mutex": "accent", "election": "ok", "job": "info"}


def lock_row(view: View, lock: LockInfo) -> str:
    kind = badge(lock.kind, LOCK_TONES.get(lock.kind, "neutral"), dot=False)
    cells = (
        f"<td>{kind}</td>{key_cell(lock.name)}<td class=mono>{esc(lock.holder)}</td>"
        f'<td class="num mono">{esc(lock.token)}</td>'
        f"<td>{countdown(lock.expires_in, view.now)}</td>"
    )
    if view.allow_actions:
        button = ""
        if lock.kind == "mutex":
            button = action_button(
                "break-lock",
                lock.name,
                "Break",
                icon_name="unlock",
                tone="danger",
                confirm=(
                    f"Break mutex “{lock.name}”? Its holder ({lock.holder}) loses it at its next"
                    " renewal, and the next holder gets a higher fencing token."
                ),
                confirm_label="Break lock",
            )
        cells += f'<td class="actions">{button}</td>'
    return f"<tr>{cells}</tr>"


# -- recurring jobs ------------------------------------------------------------------------


async def recurring_page(view: View) -> Page:
    jobs = await view.source.list_recurring_jobs()
    lede = "Jobs that run on one instance at a time, on a schedule shared by the cluster."
    if not jobs:
        body = empty(
            "repeat",
            "No recurring jobs",
            "Jobs appear here once an instance schedules one with"
            " <code>clustersync.schedule(store, key, next_wait, callback)</code>.",
        )
        return Page("/recurring", "Recurring jobs", lede, card("Jobs", body, icon_name="repeat"))
    headers = ["Job", "State", "Last run", "Next run", "Instances"]
    if view.allow_actions:
        headers.append("")
    rows = [recurring_row(view, job, len(headers)) for job in jobs]
    extra = f'<span class="count">{count(len(jobs))}</span>'
    live = card("Jobs", table(headers, rows, cls="recurring"), icon_name="repeat", extra=extra)
    return Page("/recurring", "Recurring jobs", lede, live + read_only_note(view))


def recurring_row(view: View, job: RecurringJobInfo, columns: int) -> str:
    states = []
    if job.paused:
        states.append(badge("paused", "warn"))
    if job.running_on is not None:
        states.append(badge("running", "info", title=f"on {job.running_on}"))
    if job.last_outcome == "error":
        states.append(badge("error", "error", title=job.last_error))
    if not states:
        states.append(badge("scheduled", "ok"))
    state = " ".join(states)
    if job.running_on is not None:
        state += f'<div class="sub">on <span class="mono">{esc(job.running_on)}</span></div>'

    if job.last_started is None:
        last = '<span class="muted">never</span>'
    else:
        last = moment(job.last_started, view.now)
        if (
            job.running_on is None
            and job.last_finished is not None
            and job.last_finished >= job.last_started
        ):
            took = duration((job.last_finished - job.last_started).total_seconds())
            mark = "ok" if job.last_outcome == "ok" else "failed"
            last += f'<div class="sub">took {esc(took)} · {mark}</div>'
    if job.paused:
        upcoming = '<span class="muted">paused</span>'
    elif job.running_on is not None:
        upcoming = '<span class="muted">running now</span>'
    elif job.next_run is None:
        upcoming = '<span class="muted">—</span>'
    elif job.next_run.timestamp() <= view.now:
        upcoming = f'<span title="{esc(job.next_run.isoformat())}">due now</span>'
    else:
        upcoming = moment(job.next_run, view.now)
    instances = (
        f'<td class="num">{count(job.instances)}</td>'
        if job.instances
        else '<td class="num muted" title="no live instance schedules it">0</td>'
    )
    cells = (
        f"{key_cell(job.key, esc(job.schedule))}<td>{state}</td><td>{last}</td>"
        f"<td>{upcoming}</td>{instances}"
    )
    if view.allow_actions:
        if job.paused:
            toggle = action_button("resume", job.key, "Resume", icon_name="play", tone="primary")
        else:
            toggle = action_button("pause", job.key, "Pause", icon_name="pause")
        trigger = action_button("trigger", job.key, "Run now", icon_name="zap")
        cells += f'<td class="actions">{toggle}{trigger}</td>'
    row = f"<tr data-key={attr(job.key)}>{cells}</tr>"
    if job.last_outcome == "error" and job.last_error:
        row += (
            f'<tr class="error-row"><td colspan="{columns}"><div class="err">'
            f"{icon('alert', size=14)}<code>{esc(job.last_error)}</code></div></td></tr>"
        )
    return row


# -- one-shot jobs -------------------------------------------------------------------------


def page_size(raw: str | None) -> int:
    try:
        size = int(raw or DEFAULT_PAGE_SIZE)
    except ValueError:
        return DEFAULT_PAGE_SIZE
    return min(max(size, 1), max(PAGE_SIZES))


async def jobs_page(view: View, prefix: str, after: str | None, limit: int) -> Page:
    (jobs, cursor), stored = await asyncio.gather(
        view.source.jobs_page(prefix, after, limit), view.source.count_jobs()
    )
    lede = "Persisted jobs that fire once, in key order. Search by key prefix."
    above = search_form(view, prefix, limit)
    scope = f" starting with <code>{esc(prefix)}</code>" if prefix else ""
    if not jobs and after is None:
        if prefix:
            body = empty("search", "No matching jobs", f"No pending one-shot job has a key{scope}.")
        else:
            body = empty(
                "inbox",
                "No pending one-shot jobs",
                "Jobs appear here once scheduled with"
                " <code>scheduler.schedule_once(key, run_at, props)</code> or"
                " <code>clustersync jobs schedule</code>.",
            )
        live = card("Pending jobs", body, icon_name="clock")
        return Page("/jobs", "One-shot jobs", lede, live, above)
    headers = ["Key", "Runs", "Run at (UTC)", "Props"]
    if view.allow_actions:
        headers.append("")
    rows = [job_row(view, job.key, job.run_at_us, job.props_json) for job in jobs]
    if not rows:
        rows = [f'<tr><td colspan="{len(headers)}" class="muted">No more jobs.</td></tr>']
    where = f"after <code>{esc(after)}</code>" if after else "from the first key"
    summary = (
        f'<p class="card-foot">{count(len(jobs))} shown{scope}, {where}. {count(stored)} stored'
        " in the namespace (pending or running); jobs that are firing right now are not"
        " listed.</p>"
    )
    pager = pager_links(view, prefix, after, cursor, limit)
    extra = f'<span class="count" title="stored (pending or running)">{count(stored)}</span>'
    live = card(
        "Pending jobs",
        table(headers, rows, cls="jobs") + f'<div class="card-bottom">{summary}{pager}</div>',
        icon_name="clock",
        extra=extra,
    )
    return Page("/jobs", "One-shot jobs", lede, live + read_only_note(view), above)


def job_row(view: View, key: str, run_at_us: int, props_json: str) -> str:
    run_at = micros_to_datetime(run_at_us)
    due = run_at.timestamp() <= view.now
    when = moment(run_at, view.now)
    if due:
        when = badge("due", "warn") + " " + when
    cells = (
        f"{key_cell(key)}<td>{when}</td><td class=mono>{esc(run_at.strftime('%Y-%m-%d %H:%M:%S'))}"
        f"</td><td>{props_preview(props_json)}</td>"
    )
    if view.allow_actions:
        button = action_button(
            "cancel-job",
            key,
            "Cancel",
            icon_name="x",
            tone="danger",
            confirm=f"Cancel one-shot job “{key}”? It is removed and never fires.",
            confirm_label="Cancel job",
        )
        cells += f'<td class="actions">{button}</td>'
    return f"<tr>{cells}</tr>"


def search_form(view: View, prefix: str, limit: int) -> str:
    options = "".join(
        f'<option value="{size}"{" selected" if size == limit else ""}>{size} per page</option>'
        for size in PAGE_SIZES
    )
    clear = (
        f'<a class="btn ghost" href={attr(view.href("/jobs", limit=limit))}>Clear</a>'
        if prefix
        else ""
    )
    return (
        f'<form class="toolbar" method="get" action={attr(view.href("/jobs"))} role="search">'
        f'<label class="search">{icon("search")}<input type="search" name="prefix"'
        f' value={attr(prefix)} placeholder="Key prefix, e.g. remind:" autocomplete="off"'
        ' spellcheck="false" aria-label="Key prefix"></label>'
        f'<select name="limit" aria-label="Page size">{options}</select>'
        f'<button class="btn primary" type="submit">Search</button>{clear}</form>'
    )


def pager_links(view: View, prefix: str, after: str | None, cursor: str | None, limit: int) -> str:
    links = []
    if after is not None:
        first = view.href("/jobs", prefix=prefix, limit=limit)
        links.append(f'<a class="btn ghost" href={attr(first)}>{icon("first")}First page</a>')
    if cursor is not None:
        following = view.href("/jobs", prefix=prefix, after=cursor, limit=limit)
        links.append(
            f'<a class="btn" href={attr(following)} rel="next">Next page{icon("chevron")}</a>'
        )
    return f'<nav class="pager" aria-label="Pagination">{"".join(links)}</nav>'


# -- failed jobs ---------------------------------------------------------------------------


async def failed_page(view: View) -> Page:
    lede = "One-shot jobs whose callback failed on every attempt: retry or cancel them."
    failed = await view.source.failed_jobs()
    if not failed:
        body = empty(
            "check",
            "No failed jobs",
            "A one-shot job is kept here when its callback raised on every attempt of the"
            " scheduler's <code>Retry</code>; without <code>retry</code>, a callback that"
            " raises is logged and the job is done.",
        )
        return Page("/failed", "Failed jobs", lede, card("Failed jobs", body, icon_name="alert"))
    shown = failed[:MAX_FAILED_SHOWN]
    headers = ["Key", "Attempts", "Failed", "Was due", "Props"]
    if view.allow_actions:
        headers.append("")
    rows = [failed_row(view, job, len(headers)) for job in shown]
    foot = ""
    if len(failed) > len(shown):
        foot = (
            f'<p class="card-foot">The {count(len(shown))} most recent failures of'
            f" {count(len(failed))}.</p>"
        )
    extra = f'<span class="count">{count(len(failed))}</span>'
    live = card(
        "Failed jobs", table(headers, rows, cls="failed") + foot, icon_name="alert", extra=extra
    )
    return Page("/failed", "Failed jobs", lede, live + read_only_note(view))


def failed_row(view: View, job: FailedJob, columns: int) -> str:
    """A failed job, and its last error on a row of its own below it."""
    cells = (
        f'{key_cell(job.key)}<td class="num">{count(job.attempts)}</td>'
        f"<td>{moment(job.failed_at, view.now)}</td><td>{moment(job.run_at, view.now)}</td>"
        f"<td>{props_of(job.props)}</td>"
    )
    if view.allow_actions:
        retry = action_button(
            "retry-failed",
            job.key,
            "Retry",
            icon_name="rotate",
            tone="primary",
            confirm=(
                f"Retry failed job “{job.key}”? It is scheduled again to run now, with a"
                " fresh count of attempts."
            ),
            confirm_label="Retry job",
            confirm_tone="primary",
        )
        cancel = action_button(
            "cancel-failed",
            job.key,
            "Cancel",
            icon_name="x",
            tone="danger",
            confirm=f"Remove failed job “{job.key}”? It will never run.",
            confirm_label="Remove job",
        )
        cells += f'<td class="actions">{retry}{cancel}</td>'
    return (
        f"<tr data-key={attr(job.key)}>{cells}</tr>"
        f'<tr class="error-row"><td colspan="{columns}"><div class="err">'
        f"{icon('alert', size=14)}<code>{esc(job.last_error)}</code></div></td></tr>"
    )
