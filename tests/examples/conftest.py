"""Fixtures of the examples' tests: the store kinds they run on."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.conftest import kind_of, shared_backends


def example_backends() -> list[str]:
    """One selected target per store kind that processes share (SQLite, Redis,
    PostgreSQL): the examples do not depend on modes such as ``redis-notify``."""
    return [b for b in shared_backends() if kind_of(b).name == b]


@pytest.fixture(params=example_backends())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def spread_over_backends(variants: Sequence[str]) -> list[tuple[str, str]]:
    """``(backend, variant)`` pairs that cover every variant and every store without the
    whole product: every variant on the first selected store (SQLite when selected: the
    default store), then each other store once, with the variants in turn."""
    backends = example_backends()
    if not backends:
        return []
    pairs = [(backends[0], variant) for variant in variants]
    pairs += [(b, variants[n % len(variants)]) for n, b in enumerate(backends[1:])]
    return pairs
