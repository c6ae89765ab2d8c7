"""The contract suite run against the out-of-tree ``jsonfile`` store.

Run by ``tests/contract/test_plugin_store.py`` in a separate interpreter whose path holds
this folder and a ``*.dist-info`` declaring the ``clustersync.stores`` entry point, so
that clustersync finds the store exactly as it would find an installed plugin. (Not named
``test_*``: the main run does not collect it.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clustersync.stores import kind_for_url
from clustersync.testing.contract import StoreContract


def test_the_scheme_comes_from_the_entry_point() -> None:
    kind = kind_for_url("jsonfile:///tmp/x.json")
    assert kind.name == "jsonfile"
    assert kind.backend == "jsonfile_store:open_backend"


class TestJsonFileStore(StoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"jsonfile://{tmp_path / 'state.json'}"
