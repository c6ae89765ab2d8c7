"""Metrics under gunicorn in Prometheus multi-process mode: three workers each record
their own samples (in ``PROMETHEUS_MULTIPROC_DIR``), and one scrape through any worker
adds them up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import clustersync as cs
from tests.conftest import shared_backends
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(params=shared_backends())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        body: bytes = answer.read()
    return body.decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_gunicorn_workers_add_up(store_url: str, namespace: str, tmp_path: Path) -> None:
    with cs.open_store(store_url, namespace=namespace) as store:
        later = datetime.now(UTC) + timedelta(days=1)
        scheduler = cs.get_job_once_scheduler(store)
        scheduler.schedule_many([(f"later-{i}", later, None) for i in range(5)])
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    port = free_port()
    env = dict(
        os.environ,
        CLUSTERSYNC_URL=store_url,
        APP_NAMESPACE=namespace,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        PYTHONPATH=str(ROOT),
    )
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "--workers", "3"),
            *("--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5"),
            "tests.apps.metrics_app:app",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(base + "/metrics")
                break
            except OSError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        requests = 60
        # Concurrent requests to sync workers that take 50 ms each: several workers serve.
        with ThreadPoolExecutor(12) as pool:
            pids = Counter(pool.map(lambda _: _get(base + "/work"), range(requests)))
        deadline = time.monotonic() + 20
        while True:
            samples = _samples(_get(base + "/metrics"))
            pending = samples.get(("clustersync_jobs_pending", ()))
            if pending == 5 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, errors = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            _, errors = process.communicate()
    assert "Traceback" not in errors, errors
    acquired = (
        "clustersync_lock_acquisitions_total",
        (("kind", "mutex"), ("result", "acquired")),
    )
    assert len(pids) >= 2, pids
    assert samples[acquired] == requests, (pids, samples)
    assert samples[("clustersync_lock_hold_seconds_count", (("kind", "mutex"),))] == requests
    assert pending == 5
    # every worker wrote its own file of samples
    assert len(list(metrics_dir.glob("counter_*.db"))) >= 1
