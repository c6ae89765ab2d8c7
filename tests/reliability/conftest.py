"""Fixtures of the reliability suite.

Soak mode: ``CLUSTERSYNC_SOAK=1`` makes the suite run longer (see docs/reliability.md):
bigger hypothesis budgets for the model and fuzz tests and the long multi-process soak
(at least 10,000 checked acquisitions per store) instead of its short version. The
default run stays short.
"""

from __future__ import annotations

import os

import pytest


def soak_mode() -> bool:
    """Whether ``CLUSTERSYNC_SOAK`` asks for the long runs."""
    return os.environ.get("CLUSTERSYNC_SOAK", "").strip().lower() in {"1", "true", "yes", "on"}


@pytest.fixture(scope="session")
def soak() -> bool:
    """True in soak mode (``CLUSTERSYNC_SOAK=1``)."""
    return soak_mode()
