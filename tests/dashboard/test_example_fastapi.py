"""examples/dashboard_in_fastapi.py under a real uvicorn: the dashboard mounted at /ops
shows what the service does (its recurring job, the reminders it schedules)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dashboard.support import ROOT, subprocess_env
from tests.servers import free_port


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "uvicorn.log").open("w")
    app = ["dashboard_in_fastapi:app", "--app-dir", str(ROOT / "examples")]
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", *app, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=subprocess_env(CLUSTERSYNC_URL=f"sqlite:///{tmp_path / 'cluster.db'}"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/ops/healthz", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp_path / "uvicorn.log").read_text())
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def fetch(url: str, data: bytes | None = None, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.timeout(90)
def test_dashboard_mounted_in_fastapi(service: str) -> None:
    status, body = fetch(service + "/users/42/reminder", data=b"")
    assert status == 200, body
    assert json.loads(body)["key"] == "remind:42"

    status, overview = fetch(service + "/ops/")
    assert status == 200
    assert 'href="/ops/locks"' in overview
    assert "/ops/static/dashboard.css?v=" in overview
    deadline = time.monotonic() + 10
    while "refresh-cache" not in (recurring := fetch(service + "/ops/recurring")[1]):
        assert time.monotonic() < deadline, recurring
        time.sleep(0.1)
    assert "every 5m" in recurring
    assert "remind:42" in fetch(service + "/ops/jobs?prefix=remind:")[1]
    assert fetch(service + "/ops/locks")[0] == 200
    assert fetch(service + "/ops/failed")[0] == 200
    css_status, css = fetch(service + "/ops/static/dashboard.css")
    assert css_status == 200
    assert ":root" in css
    refused, answer = fetch(
        service + "/ops/actions/pause",
        data=b'{"key": "refresh-cache"}',
        **{"X-Clustersync-Action": "1", "Content-Type": "application/json"},
    )
    assert refused == 403
    assert "--allow-actions" in answer
    assert fetch(service + "/")[1] == '{"dashboard":"/ops/"}'
