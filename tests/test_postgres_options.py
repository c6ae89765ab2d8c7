"""PostgreSQL store options that change how statements are sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import clustersync as cs


@pytest.mark.parametrize("prepared", [True, False])
def test_every_operation_works_with_and_without_prepared_statements(
    postgres_server: Any, namespace: str, prepared: bool
) -> None:
    """Prepared statements (psycopg prepares a statement on its 5th use) are on by
    default; ``prepared_statements=False`` is for a transaction-pooling PgBouncer older
    than 1.22. Both run each operation more than 5 times."""
    with cs.open_store(
        postgres_server.url, namespace=namespace, prepared_statements=prepared
    ) as store:
        mutex = cs.Mutex(store, "m")
        tokens: list[int] = []
        for _ in range(7):
            mutex.acquire()
            assert mutex.token is not None
            tokens.append(mutex.token)
            mutex.release()
        assert tokens == sorted(set(tokens))
        scheduler = cs.get_job_once_scheduler(store)
        when = datetime.now(UTC) + timedelta(hours=1)
        for i in range(7):
            scheduler.schedule_once(f"k{i}", when, {"i": i})
        with pytest.raises(cs.DuplicateJobError):
            scheduler.schedule_once("k3", when)
        assert [j.key for j in scheduler.list_scheduled_jobs()] == [f"k{i}" for i in range(7)]
        assert all(scheduler.cancel(f"k{i}") for i in range(7))
        assert scheduler.list_scheduled_jobs() == []


@pytest.mark.parametrize("value", ["false", 0, 1, None])
def test_prepared_statements_must_be_a_bool(
    postgres_server: Any, namespace: str, value: object
) -> None:
    with pytest.raises(cs.ConfigurationError, match="prepared_statements"):
        cs.open_store(postgres_server.url, namespace=namespace, prepared_statements=value)
