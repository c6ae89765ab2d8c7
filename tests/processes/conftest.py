"""Fixtures of the multi-process tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Workers on a fresh SQLite file; every one of them is killed when the test ends."""
    group = Cluster(tmp_path)
    try:
        yield group
    finally:
        group.kill_all()
