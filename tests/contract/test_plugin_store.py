"""A store defined outside the package, registered through the entry-point group
``clustersync.stores``, passes the contract suite.

The plugin (``tests/plugin_store/jsonfile_store.py``) is installed the way a package
would be seen by ``importlib.metadata``: a ``*.dist-info`` folder with an
``entry_points.txt`` on the interpreter's path. The suite runs in a fresh interpreter,
so this process's registry is not touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugin_store"
ROOT = PLUGIN_DIR.parent.parent


def _install_metadata(site: Path) -> None:
    info = site / "clustersync_jsonfile-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: clustersync-jsonfile\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[clustersync.stores]\njsonfile = jsonfile_store:KIND\n", encoding="utf-8"
    )


def test_out_of_tree_store_passes_the_contract_suite(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _install_metadata(site)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(PLUGIN_DIR), str(ROOT)])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(PLUGIN_DIR / "contract_jsonfile.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed is not None, output[-2000:]
    # Every test of the suite ran (none skipped or deselected) plus the entry-point check.
    from clustersync.testing.contract import StoreContract

    suite = [name for name in dir(StoreContract) if name.startswith("test_")]
    assert int(passed.group(1)) == len(suite) + 1, output[-2000:]
