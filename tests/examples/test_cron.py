"""examples/cron/nightly_export.py: five copies started at once (as cron on five hosts
would) -- one exports, the four others skip at once with exit status 0; started again
once it finished, it runs. The destination refuses a stale fencing token."""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.examples.support import EXAMPLES, python_env, run
from tests.servers import _kill_group

pytestmark = pytest.mark.timeout(90)

SCRIPT = EXAMPLES / "cron" / "nightly_export.py"
COPIES = 5


def test_overlapping_runs_skip(
    tmp_path: Path, store_url: str, namespace: str, backend: str
) -> None:
    destination = tmp_path / "export.db"
    env = python_env(
        CLUSTERSYNC_URL=store_url,
        CLUSTERSYNC_NAMESPACE=namespace,
        EXPORT_DB=str(destination),
        EXPORT_SECONDS="3",  # long enough for every copy to start while the first works
    )
    copies = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for _ in range(COPIES)
    ]
    try:
        results = [(copy.communicate(timeout=60), copy.returncode) for copy in copies]
    finally:
        for copy in copies:
            _kill_group(copy.pid)
            copy.wait()
    assert all(status == 0 for _, status in results), results
    outputs = [out for (out, _), _ in results]
    exported = [out for out in outputs if "exported 1000 rows" in out]
    skipped = [
        out for out in outputs if out == "nightly-export: skipped, another run is in progress\n"
    ]
    assert (len(exported), len(skipped)) == (1, COPIES - 1), outputs

    again = run([sys.executable, str(SCRIPT)], cwd=tmp_path, env={**env, "EXPORT_SECONDS": "0.2"})
    assert again.returncode == 0, again
    assert "exported 1000 rows" in again.stdout
    with closing(sqlite3.connect(destination)) as db:
        tokens = [token for (token,) in db.execute("SELECT token FROM exports ORDER BY rowid")]
    assert len(tokens) == 8  # two runs of four batches
    assert tokens[0] < tokens[-1], "the second run's token is not newer"
    print(
        f"\n{backend}: {COPIES} copies at once: 1 exported, {COPIES - 1} skipped; then "
        f"again: exported with token {tokens[-1]} > {tokens[0]}"
    )


def test_the_destination_refuses_a_stale_token(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("nightly_export", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    destination = str(tmp_path / "export.db")
    script.publish(destination, 7, rows=1)
    script.publish(destination, 7, rows=1)  # the same holder, batch after batch
    script.publish(destination, 8, rows=1)  # the next holder
    with pytest.raises(script.StaleTokenError):
        script.publish(destination, 7, rows=1)  # the previous holder, woken up late
