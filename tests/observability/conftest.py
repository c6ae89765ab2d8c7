"""Fixtures of the observability tests: a fresh Prometheus registry with clustersync's
metrics enabled in it, disabled again after the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

import clustersync as cs
from clustersync import _metrics


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    fresh = CollectorRegistry()
    cs.enable_metrics(fresh)
    try:
        yield fresh
    finally:
        _metrics.disable_metrics()


def value(registry: CollectorRegistry, metric: str, /, **labels: str) -> float:
    """A sample's value, 0 if it was never recorded."""
    found = registry.get_sample_value(metric, labels)
    return 0.0 if found is None else found
