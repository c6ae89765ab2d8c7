"""OpenTelemetry spans across two processes, each with the SDK's in-memory exporter:
the process that fires a one-shot job links its run's span to the span that scheduled
the job in the other process; callbacks' own spans are children of the run's span;
failures mark the span; a lock wait makes a span, an uncontended acquisition none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import shared_backends

ROOT = Path(__file__).resolve().parent.parent.parent
WORKER = ROOT / "tests" / "apps" / "otel_worker.py"


@pytest.fixture(params=shared_backends())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def spans_of(role: str, store_url: str, namespace: str, out: Path) -> list[dict[str, Any]]:
    subprocess.run(
        [sys.executable, str(WORKER), role, store_url, namespace, str(out)],
        check=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
    spans: list[dict[str, Any]] = json.loads(out.read_text())
    return spans


def test_spans_across_processes(store_url: str, namespace: str, tmp_path: Path) -> None:
    scheduled = spans_of("schedule", store_url, namespace, tmp_path / "schedule.json")
    (request,) = [s for s in scheduled if s["name"] == "web.request"]
    ran = spans_of("run", store_url, namespace, tmp_path / "run.json")
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in ran:
        by_name.setdefault(span["name"], []).append(span)

    runs = {
        (s["attributes"]["clustersync.job.key"], s["attributes"]["clustersync.job.attempt"]): s
        for s in by_name["clustersync.job.run"]
    }
    assert sorted(runs) == [("email:1", 1), ("fails:1", 1), ("fails:1", 2), ("report", 1)]

    email = runs[("email:1", 1)]
    assert email["attributes"]["clustersync.job.type"] == "once"
    assert email["attributes"]["clustersync.job.lateness_s"] >= 0
    assert email["links"] == [[request["trace_id"], request["span_id"]]]
    assert email["trace_id"] != request["trace_id"]  # a new trace, linked to the first
    assert email["status"] == "UNSET"
    (child,) = by_name["send-email"]
    assert child["parent"] == email["span_id"]
    assert child["trace_id"] == email["trace_id"]

    for attempt in (1, 2):
        failed = runs[("fails:1", attempt)]
        assert failed["status"] == "ERROR"
        assert failed["events"] == ["exception"]
        assert failed["links"] == [[request["trace_id"], request["span_id"]]]

    report = runs[("report", 1)]
    assert report["attributes"]["clustersync.job.type"] == "recurring"
    assert report["links"] == []

    (wait,) = by_name["clustersync.lock.wait"]  # "free" was not contended: no span
    assert wait["attributes"] == {
        "clustersync.lock.name": "contended",
        "clustersync.lock.kind": "mutex",
        "clustersync.lock.result": "acquired",
    }
    assert 0.2 <= wait["duration_s"] < 5
