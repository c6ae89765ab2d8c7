"""``clustersync dashboard``: a real server process on loopback, and its one-line errors."""

from __future__ import annotations

import json
import signal
import socket
import sys
from pathlib import Path

import pytest

import clustersync as cs
from clustersync.cli import main
from clustersync.dashboard._serve import HostGuard, host_name, is_loopback
from tests.dashboard.support import cluster, dashboard_command


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> None:
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 1, err
    assert err.startswith("clustersync: error: "), err
    assert err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.timeout(120)
def test_the_command_serves_a_read_only_dashboard(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    with cluster(url, "shop", one_shot=6), dashboard_command(url, "shop") as served:
        assert served.banner.startswith("clustersync dashboard on http://127.0.0.1:")
        assert "namespace 'shop'" in served.banner
        assert "read-only" in served.banner
        for path, expected in (
            ("/", "Locks held"),
            ("/locks", "billing-export"),
            ("/recurring", "emails.digest"),
            ("/jobs", "remind:user:1000"),
            ("/failed", "webhook:deliver:ord_1042"),
            ("/healthz", "ok"),
        ):
            status, body, _ = served.get(path)
            assert status == 200, (path, body)
            assert expected in body, path
        status, body = served.post(
            "/actions/pause",
            json.dumps({"key": "emails.digest"}).encode(),
            **{"X-Clustersync-Action": "1", "Content-Type": "application/json"},
        )
        assert status == 403
        assert "--allow-actions" in json.loads(body)["error"]
        # DNS rebinding: a page of another domain resolved to 127.0.0.1 is refused.
        status, body, _ = served.get("/", Host="evil.example:8787")
        assert status == 421
        assert "DNS rebinding" in body
        assert served.get("/", Host="localhost")[0] == 200
        served.process.send_signal(signal.SIGINT)
        assert served.process.wait(timeout=15) == 130
        assert served.process.stderr is not None
        assert "Traceback" not in served.process.stderr.read()


@pytest.mark.timeout(120)
def test_the_command_with_actions_logs_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    with (
        cluster(url, "shop", one_shot=3) as state,
        dashboard_command(url, "shop", "--allow-actions") as served,
    ):
        assert "actions enabled" in served.banner
        status, body = served.post(
            "/actions/pause",
            json.dumps({"key": "emails.digest"}).encode(),
            **{"X-Clustersync-Action": "1", "Content-Type": "application/json"},
        )
        assert status == 200, body
        paused = {job.key for job in cs.list_recurring_jobs(state.web) if job.paused}
        assert paused == {"emails.digest", "sessions.cleanup"}
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=15) == 0
        assert served.process.stderr is not None
        log = served.process.stderr.read()
    assert "INFO clustersync.dashboard: dashboard: pause 'emails.digest' by 127.0.0.1:" in log


def test_missing_store_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    one_line_error(
        capsys, ["--url", f"sqlite:///{missing}", "dashboard"], "no SQLite store at", "nope.db"
    )
    assert not missing.exists()


def test_port_in_use(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    cs.open_store(url).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_error(
            capsys,
            ["--url", url, "dashboard", "--port", str(port)],
            f"cannot listen on 127.0.0.1:{port}",
        )


def test_bad_port(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    one_line_error(capsys, ["dashboard", "--port", "70000"], "--port must be between 0 and 65535")


def test_without_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    cs.open_store(url).close()
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    one_line_error(
        capsys,
        ["--url", url, "dashboard"],
        'the dashboard needs Starlette and uvicorn: pip install "clustersync[dashboard]"',
    )


def test_unreachable_store(capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(
        capsys,
        ["--url", "redis://127.0.0.1:1/0", "dashboard", "--port", "0"],
        "127.0.0.1:1",
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:8787", "127.0.0.1"), ("[::1]:8787", "[::1]"), ("LocalHost", "localhost")],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


async def test_host_guard_passes_lifespan_and_allowed_hosts() -> None:
    seen: list[str] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        seen.append(str(scope["type"]))

    guard = HostGuard(app, frozenset({"localhost"}))  # type: ignore[arg-type]

    async def receive() -> dict[str, object]:
        return {}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await guard({"type": "lifespan"}, receive, send)  # type: ignore[arg-type]
    await guard({"type": "http", "headers": [(b"host", b"localhost:1")]}, receive, send)  # type: ignore[arg-type]
    await guard({"type": "http", "headers": [(b"host", b"evil")]}, receive, send)  # type: ignore[arg-type]
    assert seen == ["lifespan", "http"]
    assert sent[0]["status"] == 421
