"""The store contract suite (``clustersync.testing.contract``) on every registered store
kind, as the conformance suite selects them (``CLUSTERSYNC_TEST_BACKENDS``)."""

from __future__ import annotations

from clustersync.testing.contract import StoreContract


class TestRegisteredStores(StoreContract):
    """Uses the ``store_url`` fixture of ``tests/conftest.py``: one run per store kind
    (and per mode, e.g. Redis with ``handoff="notify"``)."""
