"""examples/django_project: the recurring job and the one-shot scheduler start in serving
processes only. Under gunicorn with several workers -- every worker starts them in
``post_worker_init`` (gunicorn.conf.py), with and without ``--preload``, or in
``AppConfig.ready()`` without that file -- the job runs about once per interval in total
and a reminder scheduled by a view fires once; management commands (``migrate``,
``check``, ``shell``, ``clustersync``) and the autoreloader's parent of ``runserver``
start nothing; ``manage.py clustersync`` is the clustersync command line on the
project's store."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.examples.conftest import example_backends
from tests.examples.support import (
    EXAMPLES,
    Event,
    Service,
    answers,
    check_recurring,
    firings,
    http,
    python_env,
    read_events,
    recurring_runs,
    run,
    wait_until,
)
from tests.servers import LOOPBACK, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROJECT = EXAMPLES / "django_project"
WORKERS = 3
INTERVAL = 1.0  # CLEANUP_INTERVAL_SECONDS in the tests (the project's default is an hour)
#: How gunicorn runs the project: with the project's gunicorn.conf.py (work started in
#: post_worker_init), with --preload or not; or without it (work started in ready()).
MODES = {
    "preload": ["--preload"],
    "no-preload": [],
    "ready": ["--config", "{empty}"],
}
#: Every store with --preload; the other modes on one store (SQLite when selected).
GUNICORN_RUNS = [(backend, "preload") for backend in example_backends()] + [
    (backend, mode) for backend in example_backends()[:1] for mode in MODES if mode != "preload"
]


class Project:
    """The example project on a fresh database, with the test's store and event log."""

    def __init__(self, tmp_path: Path, store_url: str, namespace: str) -> None:
        self.dir = tmp_path
        self.events_path = tmp_path / "events.jsonl"
        self.env = python_env(
            CLUSTERSYNC_URL=store_url,
            CLUSTERSYNC_NAMESPACE=namespace,
            DJANGO_DB=str(tmp_path / "db.sqlite3"),
            CLEANUP_INTERVAL_SECONDS=str(INTERVAL),
            EVENT_LOG=str(self.events_path),
        )

    def events(self, *kinds: str) -> list[Event]:
        return read_events(self.events_path, *kinds)

    def manage(self, *arguments: str) -> str:
        """Run ``manage.py`` to completion; its output (it must succeed)."""
        done = run([sys.executable, "manage.py", *arguments], cwd=PROJECT, env=self.env)
        assert done.returncode == 0, (arguments, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout

    def serve(self, argv: list[str], name: str) -> Service:
        return Service(argv, cwd=PROJECT, env=self.env, log=self.dir / f"{name}.log")


@pytest.fixture
def project(tmp_path: Path, store_url: str, namespace: str) -> Project:
    """The project, migrated (``migrate`` must not start the background work)."""
    project = Project(tmp_path, store_url, namespace)
    assert "Applying sessions.0001_initial... OK" in project.manage("migrate")
    assert project.events() == [], "migrate started the background work"
    return project


@pytest.mark.parametrize(("backend", "mode"), GUNICORN_RUNS)
def test_gunicorn_workers_share_the_work(project: Project, mode: str) -> None:
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    empty = project.dir / "empty.conf.py"
    empty.touch()
    argv = [sys.executable, "-m", "gunicorn", "mysite.wsgi", "--workers", str(WORKERS)]
    argv += ["--bind", f"{LOOPBACK}:{port}", "--graceful-timeout", "10"]
    argv += [option.format(empty=empty) for option in MODES[mode]]
    with project.serve(argv, "gunicorn") as server:

        def diagnostics() -> str:
            return server.output()[-5000:] + "\n" + "\n".join(map(str, project.events()))

        wait_until(
            lambda: (
                len(project.events("background-started")) >= WORKERS and answers(base + "/health/")
            ),
            "the project to serve",
            diagnostics=diagnostics,
        )
        began = time.time()
        keys = {f"remind:{n}" for n in range(4)}
        for n, key in enumerate(sorted(keys)):
            body = {"key": key, "in_seconds": 1 + 0.2 * n, "props": {"user": n}}
            assert http("POST", base + "/reminders/", body)[0] == 201
        assert http("POST", base + "/reminders/", {"key": "remind:0"})[0] == 409

        wait_until(
            lambda: firings(project.events(), "reminder").keys() >= keys,
            "the reminders",
            diagnostics=diagnostics,
        )
        time.sleep(max(0.0, began + 4.5 - time.time()))
        server.stop()
        assert "Traceback" not in server.output(), diagnostics()

    events = project.events()
    started = [e["pid"] for e in events if e["event"] == "background-started"]
    assert len(set(started)) == len(started) == WORKERS, "not started once in every worker"
    assert server.pid not in started, "started in the master"
    fired = firings(events, "reminder")
    assert set(fired) == keys
    assert all(len(shots) == 1 for shots in fired.values()), fired
    runs = recurring_runs(events, "cleanup-start", "cleanup-end")
    summary = check_recurring(runs, INTERVAL)
    assert len(runs) >= 3, summary
    print(f"\ngunicorn -w {WORKERS} ({mode}): recurring job {summary}; 4 reminders fired once")


@pytest.mark.parametrize("backend", example_backends()[:1])
def test_management_commands_start_nothing(project: Project) -> None:
    """``check``, ``shell`` (with ``call_command``) and ``clustersync`` run without
    starting the background work; ``manage.py clustersync`` passes its arguments and exit
    status through."""
    project.manage("check")
    code = (
        "from django.core.management import call_command;"
        " call_command('clustersync', 'jobs', 'schedule', 'k', '--in', '1h')"
    )
    assert "scheduled one-shot job 'k'" in project.manage("shell", "-c", code)
    listed = json.loads(project.manage("clustersync", "jobs", "list", "--json"))
    assert [job["key"] for job in listed] == ["k"]
    assert "cancelled one-shot job 'k'" in project.manage("clustersync", "jobs", "cancel", "k")
    assert json.loads(project.manage("clustersync", "locks", "--json")) == []
    done = run(
        [sys.executable, "manage.py", "clustersync", "jobs", "cancel", "nope"],
        cwd=PROJECT,
        env=project.env,
    )
    assert done.returncode == 1
    assert "one-shot job with key 'nope'" in done.stderr
    assert project.events() == []


@pytest.mark.parametrize("backend", example_backends()[:1])
@pytest.mark.parametrize("reload", [True, False], ids=["autoreload", "noreload"])
def test_runserver_starts_the_work_in_the_serving_process_only(
    project: Project, reload: bool
) -> None:
    port = free_port()
    argv = [sys.executable, "manage.py", "runserver", f"{LOOPBACK}:{port}"]
    with project.serve(argv if reload else [*argv, "--noreload"], "runserver") as server:
        _, health = wait_until(
            lambda: (
                answers(f"http://{LOOPBACK}:{port}/health/")
                and http("GET", f"http://{LOOPBACK}:{port}/health/")
            ),
            "runserver",
            diagnostics=server.output,
        )
        wait_until(lambda: project.events("background-started"), "the background work")
        time.sleep(0.5)  # a second start, if any, would come now
    started = [e["pid"] for e in project.events("background-started")]
    assert started == [health["pid"]], "started elsewhere than in the serving process"
    # With the autoreloader, the process we started only watches files; it serves itself
    # with --noreload.
    assert (health["pid"] != server.pid) == reload
