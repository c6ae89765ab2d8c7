"""The ``clustersync`` command line (also ``python -m clustersync``).

::

    clustersync [--url URL] [--namespace NS] demo [--workers 3] [--seconds 15]
    clustersync [--url URL] [--namespace NS] locks [--json]
    clustersync [--url URL] [--namespace NS] locks break NAME [--json]
    clustersync [--url URL] [--namespace NS] jobs list [--json]
    clustersync [--url URL] [--namespace NS] jobs schedule KEY (--at TIME | --in DURATION)
                                                          [--props JSON] [--json]
    clustersync [--url URL] [--namespace NS] jobs cancel KEY [--json]
    clustersync [--url URL] [--namespace NS] jobs recurring [--json]
    clustersync [--url URL] [--namespace NS] jobs pause|resume|trigger KEY [--json]
    clustersync [--url URL] [--namespace NS] dashboard [--host 127.0.0.1] [--port 8787]
                                                       [--allow-actions]

``--url`` defaults as :func:`clustersync.open_store` does (``$CLUSTERSYNC_URL``, else
``sqlite:///clustersync.db``). Errors print one line, ``clustersync: error: ...``, on
stderr and exit non-zero (2 for usage errors, 1 otherwise) without a traceback; Ctrl-C
exits 130 quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TextIO

from . import __version__
from ._core.info import RecurringJobInfo, format_duration, identity_of
from ._core.validation import validate_name
from ._sync.job_once import get_job_once_scheduler
from ._sync.operations import (
    LEASE_KINDS,
    break_lock,
    list_recurring_jobs,
    pause_recurring_job,
    resume_recurring_job,
    trigger_recurring_job,
)
from ._sync.store import Store, open_store
from .exceptions import ClusterSyncError
from .stores.contract import LeaseInfo
from .stores.registry import kind_for_url, resolve_url

PROG = "clustersync"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_PROPS_COLUMN_WIDTH = 60


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status ``status``."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``clustersync: error: ...``) instead of usage dumps."""

    def error(self, message: str) -> NoReturn:
        hint = f"see '{self.prog} --help'"
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} ({hint})\n")


# -- parsing of user input -----------------------------------------------------------------

_DURATION_RE = re.compile(
    r"""^(?:(?P<d>\d+(?:\.\d+)?)d)?
         (?:(?P<h>\d+(?:\.\d+)?)h)?
         (?:(?P<m>\d+(?:\.\d+)?)m)?
         (?:(?P<s>\d+(?:\.\d+)?)s)?
         (?:(?P<ms>\d+(?:\.\d+)?)ms)?$""",
    re.VERBOSE,
)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``5m``, ``2h``, ``1h30m``, ``1.5s``, ``250ms``, ``2d`` -> timedelta.

    Units, largest first, each at most once: d, h, m, s, ms. A unit is required.
    """
    match = _DURATION_RE.match(text.strip().lower())
    if not text.strip() or match is None or not any(match.groupdict().values()):
        raise CLIError(
            f"invalid duration {text!r}: use a number with a unit, e.g. 90s, 5m, 2h, "
            "1h30m, 1.5s, 250ms or 2d"
        )
    seconds = sum(
        float(value) * _UNIT_SECONDS[unit]
        for unit, value in match.groupdict().items()
        if value is not None
    )
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise CLIError(f"duration {text!r} is too large") from None


def parse_time(text: str) -> datetime:
    """An ISO-8601 time with ``Z`` or an offset, as aware UTC; naive times are rejected."""
    raw = text.strip()
    if raw.endswith("z"):
        raw = raw[:-1] + "Z"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise CLIError(
            f"invalid time {text!r}: use ISO-8601 with a timezone, e.g. 2030-01-31T09:00:00Z "
            "or 2030-01-31T10:00:00+01:00"
        ) from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise CLIError(
            f"time {text!r} has no timezone and would be ambiguous: add 'Z' for UTC or an "
            "offset such as +01:00 (e.g. 2030-01-31T09:00:00Z)"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise CLIError(f"time {text!r} is out of range") from None


def parse_props(text: str | None) -> Any:
    """The JSON value of ``--props`` (None when not given)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--props is not valid JSON: {exc}") from None


# -- formatting ----------------------------------------------------------------------------


def format_time(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _relative(seconds: float) -> str:
    if seconds >= 0:
        return "in " + format_duration(seconds)
    return format_duration(-seconds) + " ago"


def _table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [header, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")


def _dump_json(out: TextIO, value: Any) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _compact_json(value: Any, limit: int = _PROPS_COLUMN_WIDTH) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def split_lease_name(lease: str) -> tuple[str, str]:
    """``m:x`` -> (``mutex``, ``x``); ``j:x`` -> (``job``, ``x``); anything else is kept."""
    for prefix, kind in LEASE_KINDS.items():
        if lease.startswith(prefix):
            return kind, lease[len(prefix) :]
    return "other", lease


# -- commands ------------------------------------------------------------------------------


def _open(args: argparse.Namespace, *, must_exist: bool = False) -> Store:
    """Open the store of ``--url``/``--namespace``.

    With ``must_exist``, a SQLite URL naming a file that does not exist is an error rather
    than silently creating an empty store (a typo or the wrong working directory).
    """
    return open_store(_store_url(args, must_exist=must_exist), namespace=_namespace(args))


def _namespace(args: argparse.Namespace) -> str:
    return "default" if args.namespace is None else str(args.namespace)


def _store_url(args: argparse.Namespace, *, must_exist: bool) -> str:
    """The URL of ``--url`` (see :func:`_open` for ``must_exist``)."""
    url = resolve_url(args.url)
    if must_exist and kind_for_url(url).name == "sqlite":
        from .stores.sqlite import sqlite_path_from_url

        path = sqlite_path_from_url(url)
        if not os.path.exists(path):
            raise CLIError(
                f"no SQLite store at {os.path.abspath(path)!r} (from {url!r}); "
                "check --url or $CLUSTERSYNC_URL"
            )
    return url


def cmd_locks(args: argparse.Namespace, out: TextIO) -> int:
    if getattr(args, "locks_command", None) == "break":
        return cmd_locks_break(args, out)
    with _open(args, must_exist=True) as store:
        leases = store._ops.list_leases()
        where = f"namespace {store.namespace!r} of {store.url}"
    named = sorted(((*split_lease_name(lease.name), lease) for lease in leases), key=_lock_order)
    if args.json:
        records = [
            {
                "kind": kind,
                "name": name,
                "lease": lease.name,
                "holder": lease.owner,
                "identity": identity_of(lease.owner),
                "token": lease.token,
                "expires_in": round(lease.expires_in, 3),
            }
            for kind, name, lease in named
        ]
        _dump_json(out, records)
    elif not named:
        out.write(f"no locks held in {where}\n")
    else:
        rows = [
            [
                kind,
                name,
                identity_of(lease.owner),
                str(lease.token),
                format_duration(lease.expires_in),
            ]
            for kind, name, lease in named
        ]
        _table(out, ["KIND", "NAME", "HOLDER", "TOKEN", "EXPIRES IN"], rows)
    return 0


def cmd_locks_break(args: argparse.Namespace, out: TextIO) -> int:
    validate_name(args.name, "lock name")
    with _open(args, must_exist=True) as store:
        broken = break_lock(store, args.name, token=args.token)
        where = f"namespace {store.namespace!r} of {store.url}"
    if args.json:
        _dump_json(out, {"name": args.name, "broken": broken})
    what = f"semaphore {args.name!r} slot {args.token}" if args.token is not None else None
    if not broken:
        raise CLIError(f"{what or f'no mutex or semaphore {args.name!r}'} is not held in {where}")
    if not args.json:
        out.write(
            f"broke {what or repr(args.name)}: the next holder gets a higher fencing token;"
            " the old holder learns it at its next renewal\n"
        )
    return 0


def cmd_jobs_recurring(args: argparse.Namespace, out: TextIO) -> int:
    with _open(args, must_exist=True) as store:
        jobs = list_recurring_jobs(store)
        where = f"namespace {store.namespace!r} of {store.url}"
    if args.json:
        _dump_json(out, [_recurring_json(job) for job in jobs])
    elif not jobs:
        out.write(f"no recurring jobs in {where}\n")
    else:
        now = time.time()
        rows = [
            [
                job.key,
                job.schedule,
                "paused" if job.paused else ("running" if job.running_on else "scheduled"),
                job.running_on or "-",
                _ago(job.last_finished, now),
                job.last_outcome or "-",
                _relative(job.next_run.timestamp() - now) if job.next_run else "-",
                str(job.instances),
            ]
            for job in jobs
        ]
        _table(
            out,
            ["KEY", "SCHEDULE", "STATE", "RUNNING ON", "LAST RUN", "OUTCOME", "NEXT", "INSTANCES"],
            rows,
        )
        for job in jobs:
            if job.last_error:
                out.write(f"{job.key}: last error: {job.last_error}\n")
    return 0


def _recurring_json(job: RecurringJobInfo) -> dict[str, Any]:
    def moment(value: datetime | None) -> str | None:
        return None if value is None else format_time(value)

    return {
        "key": job.key,
        "schedule": job.schedule,
        "paused": job.paused,
        "running_on": job.running_on,
        "last_started": moment(job.last_started),
        "last_finished": moment(job.last_finished),
        "last_outcome": job.last_outcome,
        "last_error": job.last_error,
        "next_run": moment(job.next_run),
        "instances": job.instances,
    }


def _ago(moment: datetime | None, now: float) -> str:
    if moment is None:
        return "never"
    return format_duration(max(0.0, now - moment.timestamp())) + " ago"


_CONTROLS = {
    "pause": (pause_recurring_job, "paused"),
    "resume": (resume_recurring_job, "resumed"),
    "trigger": (trigger_recurring_job, "triggered"),
}


def cmd_jobs_control(args: argparse.Namespace, out: TextIO) -> int:
    control, done = _CONTROLS[args.jobs_command]
    with _open(args, must_exist=True) as store:
        try:
            control(store, args.key)
        except KeyError:
            where = f"namespace {store.namespace!r} of {store.url}"
            raise CLIError(f"no recurring job {args.key!r} was ever scheduled in {where}") from None
    if args.json:
        _dump_json(out, {"key": args.key, args.jobs_command: True})
    else:
        out.write(f"{done} recurring job {args.key!r} on every instance\n")
    return 0


def _lock_order(entry: tuple[str, str, LeaseInfo]) -> tuple[str, str]:
    return entry[0], entry[1]


def cmd_jobs_list(args: argparse.Namespace, out: TextIO) -> int:
    with _open(args, must_exist=True) as store:
        jobs = get_job_once_scheduler(store).list_scheduled_jobs()
        where = f"namespace {store.namespace!r} of {store.url}"
    if args.json:
        _dump_json(
            out, [{"key": j.key, "run_at": format_time(j.run_at), "props": j.props} for j in jobs]
        )
    elif not jobs:
        out.write(f"no pending one-shot jobs in {where}\n")
    else:
        now = time.time()
        rows = [
            [
                j.key,
                format_time(j.run_at),
                _relative(j.run_at.timestamp() - now),
                _compact_json(j.props),
            ]
            for j in jobs
        ]
        _table(out, ["KEY", "RUN AT (UTC)", "DUE", "PROPS"], rows)
    return 0


def cmd_jobs_schedule(args: argparse.Namespace, out: TextIO) -> int:
    validate_name(args.key, "job key")
    if args.at is not None:
        run_at = parse_time(args.at)
    else:
        delay = parse_duration(args.in_)
        try:
            run_at = datetime.now(UTC) + delay
        except OverflowError:
            raise CLIError(f"duration {args.in_!r} is too large") from None
    props = parse_props(args.props)
    with _open(args) as store:
        job = get_job_once_scheduler(store).schedule_once(args.key, run_at, props)
        where = f"namespace {store.namespace!r} of {store.url}"
    if args.json:
        _dump_json(out, {"key": job.key, "run_at": format_time(job.run_at), "props": job.props})
    else:
        seconds = job.run_at.timestamp() - time.time()
        when = _relative(seconds) if seconds >= 0 else "in the past: fires as soon as possible"
        out.write(
            f"scheduled one-shot job {job.key!r} at {format_time(job.run_at)} ({when}) in {where}\n"
        )
    return 0


def cmd_jobs_cancel(args: argparse.Namespace, out: TextIO) -> int:
    validate_name(args.key, "job key")
    with _open(args, must_exist=True) as store:
        removed = get_job_once_scheduler(store).cancel(args.key)
        where = f"namespace {store.namespace!r} of {store.url}"
    if args.json:
        _dump_json(out, {"key": args.key, "cancelled": removed})
    if not removed:
        raise CLIError(f"no pending or failed one-shot job with key {args.key!r} in {where}")
    if not args.json:
        out.write(f"cancelled one-shot job {args.key!r}\n")
    return 0


def cmd_jobs_failed(args: argparse.Namespace, out: TextIO) -> int:
    with _open(args, must_exist=True) as store:
        jobs = get_job_once_scheduler(store).list_failed_jobs()
        where = f"namespace {store.namespace!r} of {store.url}"
    if args.json:
        _dump_json(
            out,
            [
                {
                    "key": j.key,
                    "run_at": format_time(j.run_at),
                    "props": j.props,
                    "attempts": j.attempts,
                    "last_error": j.last_error,
                    "failed_at": format_time(j.failed_at),
                }
                for j in jobs
            ],
        )
    elif not jobs:
        out.write(f"no failed one-shot jobs in {where}\n")
    else:
        now = time.time()
        rows = [
            [j.key, _ago(j.failed_at, now), str(j.attempts), j.last_error, _compact_json(j.props)]
            for j in jobs
        ]
        _table(out, ["KEY", "FAILED", "ATTEMPTS", "LAST ERROR", "PROPS"], rows)
    return 0


def cmd_jobs_retry(args: argparse.Namespace, out: TextIO) -> int:
    validate_name(args.key, "job key")
    with _open(args, must_exist=True) as store:
        try:
            get_job_once_scheduler(store).retry_failed(args.key)
        except KeyError:
            where = f"namespace {store.namespace!r} of {store.url}"
            raise CLIError(f"no failed one-shot job with key {args.key!r} in {where}") from None
    if args.json:
        _dump_json(out, {"key": args.key, "retried": True})
    else:
        out.write(f"scheduled failed one-shot job {args.key!r} again now, with fresh attempts\n")
    return 0


def cmd_dashboard(args: argparse.Namespace, out: TextIO) -> int:
    from .dashboard._serve import serve

    if not 0 <= args.port <= 65535:
        raise CLIError("--port must be between 0 and 65535")
    url = _store_url(args, must_exist=True)
    try:
        return serve(
            url,
            _namespace(args),
            host=args.host,
            port=args.port,
            allow_actions=args.allow_actions,
            out=out,
        )
    except OSError as exc:
        if isinstance(exc, ClusterSyncError):  # StoreUnavailableError is a ConnectionError
            raise
        reason = exc.strerror or str(exc)
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {reason}") from None


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from ._demo import run_demo

    if args.workers < 1 or args.workers > 32:
        raise CLIError("--workers must be between 1 and 32")
    if not 1 <= args.seconds <= 3600:
        raise CLIError("--seconds must be between 1 and 3600")
    if not 0 <= args.jobs <= 1000:
        raise CLIError("--jobs must be between 0 and 1000")
    return run_demo(
        workers=args.workers,
        seconds=args.seconds,
        jobs=args.jobs,
        url=args.url,  # only an explicit --url; the demo ignores $CLUSTERSYNC_URL
        namespace=args.namespace,
        out=out,
    )


# -- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Cluster-wide mutexes, recurring jobs and one-shot jobs for services running as "
            "several instances. Start with 'clustersync demo'."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    url_help = "store URL (default: $CLUSTERSYNC_URL, else sqlite:///clustersync.db)"
    namespace_help = "namespace inside the store (default: 'default')"
    parser.add_argument("--url", default=None, help=url_help)
    parser.add_argument("--namespace", default=None, help=namespace_help)
    # --url/--namespace are also accepted after the command (clustersync locks --url ...).
    common = _Parser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=url_help)
    common.add_argument("--namespace", default=argparse.SUPPRESS, help=namespace_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="run worker processes that share a mutex and jobs, then verify the results",
        description=(
            "Start worker processes on a fresh SQLite store in a temporary directory (or on "
            "--url if given) that share a Mutex, a recurring job and one-shot jobs; show "
            "what happens and verify it: no overlapping holds, strictly increasing fencing "
            "tokens, every one-shot job fired exactly once, recurring runs never overlap. "
            "Exit 0 when every check passes."
        ),
    )
    demo.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    demo.add_argument("--seconds", type=float, default=15.0, help="run time (default 15)")
    demo.add_argument("--jobs", type=int, default=30, help="one-shot jobs (default 30)")
    demo.set_defaults(handler=cmd_demo)

    locks = commands.add_parser(
        "locks",
        parents=[common],
        help="list held locks (mutexes and running recurring jobs)",
        description="List held locks with kind, name, holder, fencing token and time to expiry.",
    )
    locks.add_argument("--json", action="store_true", help="machine-readable output")
    locks.set_defaults(handler=cmd_locks)
    locks_commands = locks.add_subparsers(dest="locks_command", metavar="ACTION")
    locks_break = locks_commands.add_parser(
        "break",
        parents=[common],
        help="force-release a held mutex or semaphore (its holders are fenced off)",
        description=(
            "End the live lease of a mutex and the live slots of a semaphore of that name"
            " (with --token: only the semaphore slot with that token), whoever holds them."
            " The next acquisition gets a higher fencing token, so the old holder's writes"
            " are rejected by a fenced resource, and the old holder learns it at its next"
            " renewal (on_lost)."
        ),
    )
    locks_break.add_argument("name", metavar="NAME", help="mutex or semaphore name")
    locks_break.add_argument(
        "--token", type=int, default=None, help="only the semaphore slot with this token"
    )
    locks_break.add_argument("--json", action="store_true", help="machine-readable output")

    jobs = commands.add_parser(
        "jobs",
        help="list, schedule, cancel or retry one-shot jobs; control recurring jobs",
        description=(
            "Manage persisted one-shot jobs. Jobs fire on a service instance running a "
            "one-shot scheduler (get_job_once_scheduler(store).start()) on this store and "
            "namespace."
        ),
    )
    jobs_commands = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)

    jobs_list = jobs_commands.add_parser(
        "list",
        parents=[common],
        help="list pending one-shot jobs",
        description="List pending one-shot jobs.",
    )
    jobs_list.add_argument("--json", action="store_true", help="machine-readable output")
    jobs_list.set_defaults(handler=cmd_jobs_list)

    jobs_schedule = jobs_commands.add_parser(
        "schedule",
        parents=[common],
        help="schedule a one-shot job",
        description="Store a one-shot job that fires once at the given time.",
    )
    jobs_schedule.add_argument("key", metavar="KEY", help="unique job key")
    when = jobs_schedule.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--at",
        metavar="TIME",
        help="ISO-8601 time with 'Z' or an offset, e.g. 2030-01-31T09:00:00Z",
    )
    when.add_argument(
        "--in",
        dest="in_",
        metavar="DURATION",
        help="delay from now, e.g. 90s, 5m, 2h, 1h30m, 1.5s",
    )
    jobs_schedule.add_argument(
        "--props", metavar="JSON", help="JSON props passed to the callback, e.g. '{\"user\": 42}'"
    )
    jobs_schedule.add_argument("--json", action="store_true", help="machine-readable output")
    jobs_schedule.set_defaults(handler=cmd_jobs_schedule)

    jobs_cancel = jobs_commands.add_parser(
        "cancel",
        parents=[common],
        help="cancel a pending one-shot job",
        description=("Remove a pending or failed one-shot job; exits 1 if no such job exists."),
    )
    jobs_cancel.add_argument("key", metavar="KEY", help="job key")
    jobs_cancel.add_argument("--json", action="store_true", help="machine-readable output")
    jobs_cancel.set_defaults(handler=cmd_jobs_cancel)

    jobs_failed = jobs_commands.add_parser(
        "failed",
        parents=[common],
        help="list one-shot jobs that used up their attempts (Retry)",
        description="List the one-shot jobs kept as failed after their last attempt raised.",
    )
    jobs_failed.add_argument("--json", action="store_true", help="machine-readable output")
    jobs_failed.set_defaults(handler=cmd_jobs_failed)

    jobs_retry = jobs_commands.add_parser(
        "retry",
        parents=[common],
        help="schedule a failed one-shot job again now",
        description=(
            "Schedule a failed one-shot job again now with a fresh attempt count; exits 1 if"
            " no failed job has that key."
        ),
    )
    jobs_retry.add_argument("key", metavar="KEY", help="job key")
    jobs_retry.add_argument("--json", action="store_true", help="machine-readable output")
    jobs_retry.set_defaults(handler=cmd_jobs_retry)

    jobs_recurring = jobs_commands.add_parser(
        "recurring",
        parents=[common],
        help="list recurring jobs (schedule, state, last run, next run, instances)",
        description="List the recurring jobs that instances scheduled on this store.",
    )
    jobs_recurring.add_argument("--json", action="store_true", help="machine-readable output")
    jobs_recurring.set_defaults(handler=cmd_jobs_recurring)
    for action, what in (
        ("pause", "pause a recurring job on every instance (persistent)"),
        ("resume", "resume a paused recurring job on every instance"),
        ("trigger", "run a recurring job once more as soon as possible, on one instance"),
    ):
        control = jobs_commands.add_parser(
            action, parents=[common], help=what, description=what[0].upper() + what[1:] + "."
        )
        control.add_argument("key", metavar="KEY", help="recurring job key")
        control.add_argument("--json", action="store_true", help="machine-readable output")
        control.set_defaults(handler=cmd_jobs_control)

    dashboard = commands.add_parser(
        "dashboard",
        parents=[common],
        help="serve the web dashboard (needs clustersync[dashboard])",
        description=(
            "Serve the operator's dashboard of a store and namespace: locks, recurring jobs,"
            " one-shot jobs and failed jobs, updated live. Read-only and bound to loopback"
            ' by default. Needs the dashboard extra: pip install "clustersync[dashboard]".'
        ),
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    dashboard.add_argument(
        "--port", type=int, default=8787, help="port to listen on (default: 8787; 0: any free)"
    )
    dashboard.add_argument(
        "--allow-actions",
        action="store_true",
        help="allow pause/resume/trigger, cancel, retry and break from the page (logged)",
    )
    dashboard.set_defaults(handler=cmd_dashboard)
    return parser


def _error(err: TextIO, message: str) -> None:
    text = " ".join(message.split())  # always one line
    err.write(f"{PROG}: error: {text}\n")
    err.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    out, err = sys.stdout, sys.stderr
    try:
        args = build_parser().parse_args(argv)
        handler: Callable[[argparse.Namespace, TextIO], int] = args.handler
        status = handler(args, out)
        out.flush()
        return status
    except CLIError as exc:
        out.flush()
        _error(err, str(exc))
        return exc.status
    except (ClusterSyncError, ValueError, TypeError, OSError) as exc:
        # ClusterSyncError: bad URL / unknown scheme (ConfigurationError), unreachable store
        # (StoreUnavailableError), duplicate key; ValueError/TypeError: the library's input
        # validation (key too long, props too large, ...).
        if isinstance(exc, BrokenPipeError):
            return _broken_pipe()
        _error(err, str(exc) or type(exc).__name__)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _broken_pipe() -> int:
    # stdout was closed early (e.g. piped into `head`): exit quietly, and keep Python from
    # complaining again when it flushes stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
