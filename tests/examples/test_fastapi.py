"""examples/fastapi_app under ``uvicorn --workers 4`` and ``gunicorn -k
uvicorn_worker.UvicornWorker -w 4``: every worker starts the recurring job and the
one-shot scheduler in its lifespan, yet the job runs about once per interval in total
(never twice at once), each reminder scheduled through the API fires once, and killing a
worker loses no reminder."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest

import clustersync as cs
from tests.conftest import selected_backends
from tests.examples.conftest import spread_over_backends
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
    wait_until,
)
from tests.servers import LOOPBACK, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WORKERS = 4
INTERVAL = 1.0  # CLEANUP_INTERVAL_SECONDS in the tests (the app's default is 5 minutes)
APP = "fastapi_app.main:app"
SERVERS: dict[str, Callable[[int], list[str]]] = {
    "uvicorn": lambda port: [
        sys.executable, "-m", "uvicorn", APP,
        "--host", LOOPBACK, "--port", str(port), "--workers", str(WORKERS),
    ],
    "gunicorn": lambda port: [
        sys.executable, "-m", "gunicorn", APP,
        "--worker-class", "uvicorn_worker.UvicornWorker", "--workers", str(WORKERS),
        "--bind", f"{LOOPBACK}:{port}", "--graceful-timeout", "10",
    ],
}  # fmt: skip


class App:
    """The example app running under one server: its base URL and event log."""

    def __init__(self, service: Service, base: str, events: Path) -> None:
        self.service = service
        self.base = base
        self.events_path = events

    def events(self, *kinds: str) -> list[Event]:
        return read_events(self.events_path, *kinds)

    def diagnostics(self) -> str:
        return f"--- output:\n{self.service.output()[-6000:]}\n--- events:\n" + "\n".join(
            map(str, self.events())
        )

    def workers(self) -> set[int]:
        return {e["pid"] for e in self.events("worker-started")}

    def schedule(self, key: str, at: float, **props: object) -> None:
        run_at = datetime.fromtimestamp(at, UTC).isoformat()
        status, body = http(
            "POST", self.base + "/reminders", {"key": key, "at": run_at, "props": props}
        )
        assert status == 201, (status, body)
        assert (body["key"], body["props"]) == (key, props)

    def wait_fired(self, keys: set[str], timeout: float) -> dict[str, list[Event]]:
        return wait_until(
            lambda: (fired := firings(self.events(), "reminder")).keys() >= keys and fired,
            f"reminders {sorted(keys)}",
            timeout,
            self.diagnostics,
        )


StartApp = Callable[..., App]


@pytest.fixture
def start_app(tmp_path: Path, namespace: str) -> Iterator[StartApp]:
    """``start_app(server, url, **env)``: the example under ``server``, once all its
    workers ran their lifespan; stopped (SIGTERM, then the process group killed) at the
    end of the test."""
    with ExitStack() as stack:

        def start(server: str, url: str, **env: str) -> App:
            port = free_port()
            events = tmp_path / "events.jsonl"
            service = stack.enter_context(
                Service(
                    SERVERS[server](port),
                    cwd=EXAMPLES,
                    env=python_env(
                        CLUSTERSYNC_URL=url,
                        CLUSTERSYNC_NAMESPACE=namespace,
                        CLEANUP_INTERVAL_SECONDS=str(INTERVAL),
                        EVENT_LOG=str(events),
                        **env,
                    ),
                    log=tmp_path / f"{server}.log",
                )
            )
            app = App(service, f"http://{LOOPBACK}:{port}", events)
            wait_until(
                lambda: len(app.workers()) >= WORKERS and answers(app.base + "/health"),
                f"{WORKERS} workers of {server}",
                diagnostics=app.diagnostics,
            )
            return app

        yield start


def stop(app: App) -> str:
    """Stop the server gracefully; its output, which must hold no traceback."""
    app.service.stop()
    output = app.service.output()
    assert "Traceback" not in output, app.diagnostics()
    return output


@pytest.mark.parametrize(("backend", "server"), spread_over_backends(list(SERVERS)))
def test_workers_share_the_recurring_job_and_the_reminders(
    server: str, store_url: str, namespace: str, start_app: StartApp
) -> None:
    app = start_app(server, store_url, CLEANUP_WORK_SECONDS="0.2")
    began = time.time()

    keys = {f"remind:{n}" for n in range(8)}
    for n, key in enumerate(sorted(keys)):
        app.schedule(key, began + 1.0 + 0.2 * n, user=n)
    app.schedule("remind:cancelled", began + 2.0)
    assert (
        http("POST", app.base + "/reminders", {"key": "remind:0", "at": "2030-01-01T00:00:00Z"})[0]
        == 409
    )
    assert http("DELETE", app.base + "/reminders/remind:cancelled")[0] == 204
    assert http("DELETE", app.base + "/reminders/remind:cancelled")[0] == 404
    status, pending = http("GET", app.base + "/reminders")
    assert status == 200
    assert {r["key"] for r in pending} <= keys
    # Scheduled elsewhere (a script, the command line) on the same store and namespace.
    with cs.open_store(store_url, namespace=namespace) as store:
        run_at = datetime.fromtimestamp(began + 1.5, UTC)
        cs.get_job_once_scheduler(store).schedule_once("remind:99", run_at, {"user": 99})
    keys.add("remind:99")

    fired = app.wait_fired(keys, timeout=30)
    time.sleep(max(0.0, began + 4.5 - time.time()))  # the recurring job runs a few times
    stop(app)

    events = app.events()
    fired = firings(events, "reminder")
    assert set(fired) == keys, "a cancelled reminder fired"
    for key, shots in fired.items():
        assert len(shots) == 1, f"{key} fired {len(shots)} times: {shots}"
        assert shots[0]["props"] == {"user": int(key.split(":")[1])}
    on = {shot["pid"] for shots in fired.values() for shot in shots}
    runs = recurring_runs(events, "cleanup-start", "cleanup-end")
    summary = check_recurring(runs, INTERVAL)
    assert len(runs) >= 3, summary  # it did run all along, not only once
    print(f"\n{server} x{WORKERS}: recurring job {summary}; 9 reminders fired on {len(on)} workers")


@pytest.mark.skipif("sqlite" not in selected_backends(), reason="SQLite is not selected")
@pytest.mark.parametrize(
    ("server", "during_a_run"),
    [("uvicorn", True), ("gunicorn", False)],
    ids=["uvicorn", "gunicorn"],
)
def test_killing_a_worker_loses_no_reminder(
    server: str, during_a_run: bool, tmp_path: Path, start_app: StartApp
) -> None:
    """SIGKILL a worker while reminders are pending -- under uvicorn the one in the middle
    of a recurring run, under gunicorn another one: every reminder still fires -- exactly
    once, unless the killed worker was running its callback (then again elsewhere, after
    the claim expires) -- and the recurring job goes on, on another worker: at once, or
    once the dead worker's lease expired if it died running the job."""
    app = start_app(server, f"sqlite:///{tmp_path / 'cluster.db'}", CLEANUP_WORK_SECONDS="0.6")
    workers = app.workers()
    began = time.time()
    keys = {f"remind:{n}" for n in range(10)}
    for n, key in enumerate(sorted(keys)):
        app.schedule(key, began + 2.0 + 0.2 * n, user=n)

    def running_cleanup() -> int | None:
        runs = recurring_runs(app.events(), "cleanup-start", "cleanup-end")
        return next((r.pid for r in runs if r.end is None and r.pid in workers), None)

    if during_a_run:
        deadline = time.monotonic() + 3
        while (victim := running_cleanup()) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        victim = victim or min(workers)
    else:
        victim = min(workers - {running_cleanup()})
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()

    fired = app.wait_fired(keys, timeout=60)  # a claim of the dead worker expires in 15 s
    # The server replaces the dead worker, and the job runs again elsewhere.
    wait_until(lambda: app.workers() - workers, "a replacement worker", diagnostics=app.diagnostics)
    wait_until(
        lambda: [
            e for e in app.events("cleanup-end") if e["pid"] != victim and e["time"] > killed_at
        ],
        "a recurring run after the kill",
        diagnostics=app.diagnostics,
    )
    stop(app)

    fired = firings(app.events(), "reminder")
    assert set(fired) == keys
    pending = sum(1 for shots in fired.values() if shots[-1]["time"] > killed_at)
    assert pending, "no reminder was pending when the worker was killed"
    again = {}
    for key, shots in fired.items():
        if len(shots) > 1:  # only a run cut short by the kill is repeated
            assert [shot["pid"] == victim for shot in shots] == [True, False], shots
            assert shots[0]["time"] < killed_at < shots[1]["time"], shots
            again[key] = shots[1]["time"] - killed_at
    runs = recurring_runs(app.events(), "cleanup-start", "cleanup-end")
    cut = [r for r in runs if r.end is None]
    assert [r.pid for r in cut] in ([], [victim]), cut
    summary = check_recurring([r for r in runs if r.end is not None], INTERVAL)
    for dead in cut:  # nobody ran the job while the dead worker held its lease
        assert all(r.end <= dead.start or r.start > killed_at for r in runs if r.end), runs
    after = min(r.start for r in runs if r.start > killed_at)
    print(
        f"\n{server}: killed worker {victim} "
        f"({'during' if cut else 'outside'} a recurring run) with {pending} reminders "
        f"pending: 10/10 fired, {len(again)} twice {again}; the recurring job resumed "
        f"{after - killed_at:.1f} s after the kill; {summary}"
    )
