"""SQLite change notifications between connections (what another process's commit looks
like to a store): a commit racing a waiter's registration must still wake the waiter.

Two store objects on one file have two connections, and each store's watcher sees the
other's commits exactly as it sees another process's — but here the test controls the
interleaving: it commits right after registering, before the watcher's first poll.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import clustersync
from clustersync._concurrency import threads as shim
from clustersync.stores.contract import lease_channel
from tests.conftest import selected_backends

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "sqlite" not in selected_backends(), reason="sqlite not in CLUSTERSYNC_TEST_BACKENDS"
    ),
]


def test_commit_right_after_registration_wakes_the_waiter(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    with (
        clustersync.open_store(url, namespace="ns") as holder_store,
        clustersync.open_store(url, namespace="ns") as waiter_store,
    ):
        missed = 0
        for _ in range(60):
            mutex = clustersync.Mutex(holder_store, "m")
            mutex.acquire()
            waker = shim.Waker()
            with waiter_store._hub.listen(lease_channel("m:m"), waker, 0.001):
                mutex.release()  # committed before the watcher's first poll, usually
                if not waker.wait(1.0):
                    missed += 1
            time.sleep(0.004)  # let the watcher go idle before the next round
        assert missed == 0, f"{missed} commits did not wake a freshly registered waiter"
