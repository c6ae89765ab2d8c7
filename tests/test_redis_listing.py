"""Redis: listing the pending one-shot jobs while other jobs change.

``list_jobs`` reads the ``runat`` index in pages, one script call each. A job that stays
pending through the whole listing must appear exactly once, whatever is scheduled or
cancelled elsewhere meanwhile (paging by index missed and repeated such jobs when keys
before the page boundary came and went). Small pages here cross many boundaries.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

import clustersync as cs
from clustersync.stores.contract import NewJob, StoredJob
from clustersync.stores.redis import sync as redis_sync
from clustersync.stores.redis.sync import key_prefix
from tests.servers import RedisServer

_US = 1_000_000
#: Jobs that stay pending through every listing, in groups sharing one run time.
STABLE = 5000
TIE = 10
PAGE = 50


def stable_key(i: int) -> str:
    return f"s{i:05d}"


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(redis_sync, "_LIST_PAGE", PAGE)
    return PAGE


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return str(redis_server.url)


@pytest.fixture
def two_stores(redis_url: str, namespace: str) -> Iterator[tuple[cs.Store, cs.Store]]:
    """Two stores (two connections) on one namespace: one lists, the other changes."""
    with (
        cs.open_store(redis_url, namespace=namespace) as lister,
        cs.open_store(redis_url, namespace=namespace) as changer,
    ):
        yield lister, changer


def test_stable_jobs_listed_exactly_once_while_others_change(
    two_stores: tuple[cs.Store, cs.Store], small_pages: int
) -> None:
    """5,000 jobs that do not change, 10 per run time, are each listed exactly once and in
    order while another connection schedules and cancels keys among them (same run times,
    keys sorting inside the tie groups). Paging by index missed and repeated some."""
    lister, changer = two_stores
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)

    def run_at(i: int) -> datetime:
        return base + timedelta(seconds=i // TIE)

    scheduler = cs.get_job_once_scheduler(lister)
    scheduler.schedule_many([(stable_key(i), run_at(i), {"i": i}) for i in range(STABLE)])
    expected = [stable_key(i) for i in range(STABLE)]
    assert [job.key for job in scheduler.list_scheduled_jobs()] == expected, "static listing"

    stop = threading.Event()
    changes = [0]
    failure: list[BaseException] = []

    def churn() -> None:
        other = cs.get_job_once_scheduler(changer)
        rng = random.Random(7)
        live: list[str] = []
        n = 0
        try:
            while not stop.is_set():
                batch = []
                for _ in range(10):
                    i = rng.randrange(STABLE)
                    n += 1
                    # "s00042+17" sorts right after "s00042", inside its tie group.
                    batch.append((f"{stable_key(i)}+{n}", run_at(i), None))
                other.schedule_many(batch)
                live += [key for key, _, _ in batch]
                changes[0] += 1
                rng.shuffle(live)
                while len(live) > 5:
                    other.cancel(live.pop())
                    changes[0] += 1
        except BaseException as exc:  # reported by the test thread
            failure.append(exc)

    thread = threading.Thread(target=churn, name="churn", daemon=True)
    thread.start()
    try:
        for listing in range(5):
            before = changes[0]
            jobs = scheduler.list_scheduled_jobs()
            during = changes[0] - before
            keys = [job.key for job in jobs]
            listed = [key for key in keys if "+" not in key]
            missing = sorted(set(expected) - set(listed))
            repeated = sorted(key for key, count in Counter(listed).items() if count > 1)
            assert (missing, repeated) == ([], []), (
                f"listing {listing} ({during} concurrent changes): {len(missing)} stable"
                f" jobs missing {missing[:5]}, {len(repeated)} repeated {repeated[:5]}"
            )
            assert listed == expected, f"listing {listing}: stable jobs out of order"
            # Changed keys are never reused, so they too appear at most once.
            assert len(set(keys)) == len(keys), f"listing {listing}: a key listed twice"
            order = [(job.run_at, job.key) for job in jobs]
            assert order == sorted(order), f"listing {listing}: not sorted by (run_at, key)"
            assert during > 0, "no change happened during the listing: the test proves nothing"
            assert not failure, failure
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not failure, failure


def test_listing_continues_after_a_cursor_key_that_changed(
    two_stores: tuple[cs.Store, cs.Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between two pages, the last key listed is cancelled, rescheduled earlier or later,
    and keys appear before it: the listing goes on right after where it stopped, and
    every job left alone is listed exactly once."""
    monkeypatch.setattr(redis_sync, "_LIST_PAGE", 7)
    lister, changer = two_stores
    base = int(time.time() * _US) + 3600 * _US
    n = 200
    lister._ops.put_jobs([NewJob(stable_key(i), base + i // TIE, "null") for i in range(n)])
    touched: set[str] = set()
    pages = [0]
    backend: Any = lister._ops
    run: Callable[..., Any] = backend._run

    def change_after_page(action: str, script: str, keys: list[str], args: list[Any]) -> Any:
        result = run(action, script, keys, args)
        if script != "LIST_PAGE" or not result[1]:
            return result
        pages[0] += 1
        # Nothing is claimed here, so the last row listed is the last key scanned.
        last, run_at = str(result[1][-1][0]), int(result[1][-1][1])
        touched.add(last)
        step = pages[0] % 4
        changer._ops.cancel_job(last)  # step 0: gone for good
        if step == 1:  # back at once, same place: listed again or not
            changer._ops.put_jobs([NewJob(last, run_at, "null")])
        elif step == 2:  # back far earlier (its old rank now points elsewhere)
            changer._ops.put_jobs([NewJob(last, base - 10**9, "null")])
        elif step == 3:  # back far later
            changer._ops.put_jobs([NewJob(last, base + 10**9, "null")])
        # New keys before the cursor: at its run time ("r…" < "s…") and just earlier.
        new = [NewJob(f"r{pages[0]}-{k}", run_at - k, "1") for k in (0, 1)]
        changer._ops.put_jobs(new)
        touched.update(job.key for job in new)
        return result

    monkeypatch.setattr(backend, "_run", change_after_page)
    listed = [job.key for job in lister._ops.list_jobs()]
    assert pages[0] > 20
    left_alone = [stable_key(i) for i in range(n) if stable_key(i) not in touched]
    got = [key for key in listed if key not in touched]
    assert got == left_alone


#: Keys whose byte order (Redis's, and the reference's code point order) differs from
#: common locale collations: case, punctuation, spaces, prefixes, non-ASCII.
TRICKY_KEYS = ["a", "B", "b", "A", "_x", "Z", "é", "z", "a b", "a-b", "ab", "a!", "日本", "😀"]


def test_listing_matches_the_reference_with_ties_and_claims(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A static set with many equal run times, some of them claimed, listed in pages of
    3 (tie groups and claimed rows across page ends): the same as the memory store."""
    monkeypatch.setattr(redis_sync, "_LIST_PAGE", 3)
    now = int(time.time() * _US)
    jobs = [
        NewJob(f"{key}{i}" if i else key, run, f'"{key}"')
        for i, run in enumerate([now - 60 * _US, now + 3600 * _US, now + 7200 * _US])
        for key in TRICKY_KEYS
    ]
    jobs += [NewJob(f"later{i:03d}", now + 9000 * _US + i % 4, "null") for i in range(40)]
    # Run times beyond 2**53 µs share a score (a double) with their neighbours.
    far = [int(datetime(year, 12, 31, tzinfo=UTC).timestamp() * _US) for year in (2300, 9999)]
    jobs += [NewJob(f"far{i:02d}", far[i % 2] + i % 3, "null") for i in range(20)]
    with (
        cs.open_store(redis_url, namespace=namespace) as redis_store,
        cs.open_store("memory://listing-reference") as reference,
    ):
        listings: list[list[StoredJob]] = []
        for store in (redis_store, reference):
            store._ops.put_jobs(jobs)
            claimed = store._ops.claim_due_jobs("me", 5, 60.0)
            assert len(claimed) == 5
            listings.append(store._ops.list_jobs())
        assert listings[0] == listings[1]
        assert len(listings[0]) == len(jobs) - 5


def test_a_due_entry_whose_job_was_evicted_does_not_stop_the_scheduler(
    redis_server: Any,
) -> None:
    """Regression: an entry of the ``due`` index whose job hash is gone (evicted under
    ``maxmemory``, or deleted by hand) made the claim return a job without run time or
    props; the scheduler's loop died on it, silently, with ``started`` still True."""
    namespace = f"ghost-{uuid.uuid4().hex[:8]}"
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    with cs.open_store(redis_server.url, namespace=namespace) as store:
        prefix = key_prefix(namespace)
        raw.zadd(prefix + "due", {"ghost": 0})
        raw.zadd(prefix + "runat", {"ghost": 0})
        fired: list[str] = []
        scheduler = cs.get_job_once_scheduler(store)
        scheduler.set_callback(lambda key, props: fired.append(key))
        scheduler.start()
        try:
            scheduler.schedule_once("real", datetime.now(UTC))
            deadline = time.monotonic() + 10
            while not fired and time.monotonic() < deadline:
                time.sleep(0.02)
            assert fired == ["real"]
            assert raw.zscore(prefix + "due", "ghost") is None, "the orphan entry stayed"
            assert scheduler.started
        finally:
            scheduler.stop(5)
    raw.close()
