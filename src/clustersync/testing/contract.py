"""The store contract suite: the tests every store passes, in this package or out of it.

A store written outside clustersync (registered through the ``clustersync.stores``
entry-point group or :func:`clustersync.stores.register_store`) runs the same suite as
the built-in ones. Subclass :class:`StoreContract` in a test module and give it a
``store_url`` fixture returning the URL of a fresh or shared store of your kind::

    import pytest
    from clustersync.testing.contract import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store_url(self, tmp_path) -> str:
            return f"mystore:///{tmp_path}/data"

Each test uses a namespace of its own, so a shared server is fine. Optionally override
``store_options`` (a fixture: keyword options for ``open_store``) and
``model_settings`` (the hypothesis budget of the model test).

Two parts, both through the store contract's operations (the ``_ops`` of a
:class:`clustersync.Store`):

- **deterministic cases**, one or a few per operation: owner checks, fencing tokens,
  semaphore slots (limit, one counter, the line of waiters, expiry, breaking),
  expiry, all-or-nothing batches, claim order, listings, namespaces, closing;
- **a model test**: a hypothesis state machine drives the store under test and the
  memory store (the reference implementation) with the same random operations and
  compares every outcome that does not depend on exact times.

Expiry is tested with real time (leases of a fraction of a second), so the suite works
for stores that judge time by their own clock. It needs ``pytest`` and ``hypothesis``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

import clustersync as cs
from clustersync import aio

from ..stores.contract import (
    CAPABILITIES,
    REQUIRED_OPERATIONS,
    ClaimedJob,
    LeaseInfo,
    NewJob,
    RecurringJobRecord,
)

__all__ = ["StoreContract", "StoreModel"]

_T = TypeVar("_T")
_US = 1_000_000
DAY_US = 86_400 * _US

#: A lease or claim that never expires during a test.
LONG_TTL = 300.0
#: Short enough to wait for: expired on every store after EXPIRED seconds.
SHORT_TTL = 0.2
EXPIRED = 0.4


class StoreContract:
    """The contract tests; subclass it and define a ``store_url`` fixture."""

    #: The hypothesis budget of :meth:`test_matches_memory_reference`.
    model_settings: ClassVar[settings] = settings(
        max_examples=25,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        """Keyword options for ``open_store`` (none by default)."""
        return {}

    @pytest.fixture
    def contract_namespace(self) -> str:
        return f"contract-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def opened(
        self, store_url: str, contract_namespace: str, store_options: dict[str, Any]
    ) -> Iterator[cs.Store]:
        """The store under test, in a namespace of its own."""
        with cs.open_store(store_url, namespace=contract_namespace, **store_options) as store:
            yield store

    @pytest.fixture
    def sibling(
        self, store_url: str, contract_namespace: str, store_options: dict[str, Any]
    ) -> Iterator[cs.Store]:
        """A second store object on the same namespace (another instance)."""
        with cs.open_store(store_url, namespace=contract_namespace, **store_options) as store:
            yield store

    # -- the backend as opened --------------------------------------------------------------

    def test_backend_provides_every_operation(self, opened: cs.Store) -> None:
        backend = opened._ops
        missing = [
            name for name in REQUIRED_OPERATIONS if not callable(getattr(backend, name, None))
        ]
        assert not missing, f"operations missing from the backend: {missing}"
        unknown = set(backend.capabilities) - set(CAPABILITIES)
        assert not unknown, f"unknown capabilities {sorted(unknown)}"
        for capability in backend.capabilities:
            absent = [
                name
                for name in CAPABILITIES[capability]
                if not callable(getattr(backend, name, None))
            ]
            assert not absent, f"capability {capability!r} lacks {absent}"

    def test_clock_moves_forward(self, opened: cs.Store) -> None:
        first = opened._ops.now_us()
        second = opened._ops.now_us()
        assert second >= first, "the store's clock went backwards"
        assert first > 1_600_000_000 * _US, "now_us is not microseconds since the epoch"

    # -- leases ---------------------------------------------------------------------------

    def test_acquire_mints_strictly_increasing_tokens(
        self, opened: cs.Store, sibling: cs.Store
    ) -> None:
        tokens = []
        for round_ in range(3):
            store = opened if round_ % 2 == 0 else sibling
            result = store._ops.acquire_lease("m:a", f"owner-{round_}", LONG_TTL)
            assert result.acquired, result
            assert isinstance(result.token, int), result
            tokens.append(result.token)
            assert store._ops.release_lease("m:a", f"owner-{round_}", result.token)
        assert tokens == sorted(set(tokens)), f"tokens not strictly increasing: {tokens}"
        other = opened._ops.acquire_lease("m:b", "owner", LONG_TTL)
        assert other.acquired, "names are independent"

    def test_a_retried_acquisition_gets_its_own_lease_back(
        self, opened: cs.Store, sibling: cs.Store
    ) -> None:
        first = opened._ops.acquire_lease("m:a", "owner", SHORT_TTL)
        assert first.token is not None
        again = sibling._ops.acquire_lease("m:a", "owner", LONG_TTL)
        assert again.acquired, "the owner of the live lease was refused its own lease"
        assert again.token == first.token
        time.sleep(EXPIRED)  # past the first ttl: the retry gave it the new one
        assert [lease.owner for lease in opened._ops.list_leases()] == ["owner"]
        assert opened._ops.release_lease("m:a", "owner", first.token)
        later = opened._ops.acquire_lease("m:a", "owner", LONG_TTL)
        assert later.token is not None
        assert later.token > first.token, "a new acquisition after a release gets a new token"

    def test_held_lease_is_refused_with_its_remaining_life(
        self, opened: cs.Store, sibling: cs.Store
    ) -> None:
        held = opened._ops.acquire_lease("m:a", "first", 10.0)
        assert held.acquired
        refused = sibling._ops.acquire_lease("m:a", "second", 10.0)
        assert not refused.acquired
        assert refused.token is None
        assert refused.retry_after is not None
        assert 0 < refused.retry_after <= 10.0 + 1, refused

    def test_renew_and_release_are_owner_checked(self, opened: cs.Store) -> None:
        held = opened._ops.acquire_lease("m:a", "owner", LONG_TTL)
        assert held.token is not None
        assert not opened._ops.renew_lease("m:a", "intruder", held.token, LONG_TTL)
        assert not opened._ops.renew_lease("m:a", "owner", held.token + 1, LONG_TTL)
        assert not opened._ops.release_lease("m:a", "intruder", held.token)
        assert not opened._ops.release_lease("m:a", "owner", held.token - 1)
        assert [lease.token for lease in opened._ops.list_leases()] == [held.token]
        assert opened._ops.renew_lease("m:a", "owner", held.token, LONG_TTL)
        assert opened._ops.release_lease("m:a", "owner", held.token)
        assert not opened._ops.release_lease("m:a", "owner", held.token), "released twice"
        assert not opened._ops.renew_lease("m:a", "owner", held.token, LONG_TTL)
        assert opened._ops.list_leases() == []

    def test_an_expired_lease_is_taken_over_and_never_comes_back(
        self, opened: cs.Store, sibling: cs.Store
    ) -> None:
        old = opened._ops.acquire_lease("m:a", "old", SHORT_TTL)
        assert old.token is not None
        time.sleep(EXPIRED)
        assert opened._ops.list_leases() == []
        new = sibling._ops.acquire_lease("m:a", "new", LONG_TTL)
        assert new.acquired
        assert new.token is not None
        assert new.token > old.token
        assert not opened._ops.renew_lease("m:a", "old", old.token, LONG_TTL)
        assert not opened._ops.release_lease("m:a", "old", old.token)
        assert [lease.owner for lease in opened._ops.list_leases()] == ["new"]

    def test_break_lease_ends_it_whoever_holds_it(
        self, opened: cs.Store, sibling: cs.Store
    ) -> None:
        assert not opened._ops.break_lease("m:a"), "nothing to break"
        held = opened._ops.acquire_lease("m:a", "owner", LONG_TTL)
        assert held.token is not None
        assert sibling._ops.break_lease("m:a")
        assert opened._ops.list_leases() == []
        assert not opened._ops.renew_lease("m:a", "owner", held.token, LONG_TTL)
        assert not opened._ops.release_lease("m:a", "owner", held.token)
        assert not sibling._ops.break_lease("m:a"), "broken twice"
        after = sibling._ops.acquire_lease("m:a", "next", LONG_TTL)
        assert after.token is not None
        assert after.token > held.token, "the next holder's writes must fence the old one off"

    def test_list_leases(self, opened: cs.Store) -> None:
        tokens = {}
        for name in ("m:b", "j:a", "m:a"):
            result = opened._ops.acquire_lease(name, f"owner-{name}", 30.0)
            assert result.token is not None
            tokens[name] = result.token
        listed = opened._ops.list_leases()
        assert [lease.name for lease in listed] == ["j:a", "m:a", "m:b"], "sorted by name"
        for lease in listed:
            assert isinstance(lease, LeaseInfo)
            assert lease.owner == f"owner-{lease.name}"
            assert lease.token == tokens[lease.name]
            assert 0 < lease.expires_in <= 30.0 + 1, lease

    def test_read_lease(self, opened: cs.Store, sibling: cs.Store) -> None:
        assert opened._ops.read_lease("e:a") is None
        held = opened._ops.acquire_lease("e:a", "owner", 30.0)
        assert held.token is not None
        lease = sibling._ops.read_lease("e:a")
        assert isinstance(lease, LeaseInfo)
        assert (lease.name, lease.owner, lease.token) == ("e:a", "owner", held.token)
        assert 0 < lease.expires_in <= 30.0 + 1, lease
        assert sibling._ops.read_lease("e:b") is None
        assert opened._ops.release_lease("e:a", "owner", held.token)
        assert sibling._ops.read_lease("e:a") is None, "a released lease is not read"
        opened._ops.acquire_lease("e:a", "short", SHORT_TTL)
        time.sleep(EXPIRED)
        assert sibling._ops.read_lease("e:a") is None, "an expired lease is not read"

    # -- slots ----------------------------------------------------------------------------

    def test_slots_up_to_the_limit_share_one_counter(
        self, opened: cs.Store, sibling: cs.Store
    ) -> None:
        first = opened._ops.acquire_slot("s:a", "one", 2, 10.0, 0)
        second = sibling._ops.acquire_slot("s:a", "two", 2, 10.0, 0)
        assert first.acquired
        assert second.acquired
        assert first.token is not None
        assert second.token is not None
        assert second.token > first.token, "one counter for every slot of a name"
        refused = sibling._ops.acquire_slot("s:a", "three", 2, 10.0, 0)
        assert not refused.acquired
        assert refused.token is None
        assert refused.retry_after is not None
        assert 0 < refused.retry_after <= 10.0 + 1, refused
        again = sibling._ops.acquire_slot("s:a", "one", 2, LONG_TTL, 0)
        assert (again.acquired, again.token) == (True, first.token), "a retry gets its slot"
        wider = opened._ops.acquire_slot("s:a", "four", 3, 10.0, 0)
        assert wider.acquired, "each acquisition is judged against the caller's limit"
        assert wider.token is not None
        assert wider.token > second.token
        assert not opened._ops.acquire_slot("s:a", "five", 3, 10.0, 0).acquired
        slots = sibling._ops.list_slots("s:a")
        assert [(s.name, s.owner, s.token) for s in slots] == [
            ("s:a", "one", first.token),
            ("s:a", "two", second.token),
            ("s:a", "four", wider.token),
        ], "sorted by token"
        assert all(0 < s.expires_in <= LONG_TTL + 1 for s in slots), slots
        assert opened._ops.release_slot("s:a", "one", first.token)
        third = sibling._ops.acquire_slot("s:a", "three", 3, 10.0, 0)
        assert third.token is not None
        assert third.token > wider.token
        assert opened._ops.list_slots("s:b") == []
        assert opened._ops.acquire_slot("s:b", "one", 1, 10.0, 0).acquired, "names are apart"

    def test_slot_waiters_are_served_in_arrival_order(
        self, opened: cs.Store, sibling: cs.Store
    ) -> None:
        holder = opened._ops.acquire_slot("s:a", "holder", 1, LONG_TTL, 0)
        assert holder.token is not None
        for owner in ("first", "second"):
            assert not sibling._ops.acquire_slot("s:a", owner, 1, LONG_TTL, LONG_TTL).acquired
        again = opened._ops.acquire_slot("s:a", "first", 1, LONG_TTL, LONG_TTL)
        assert not again.acquired, "still full: the first waiter keeps its place"
        assert opened._ops.release_slot("s:a", "holder", holder.token)
        second = sibling._ops.acquire_slot("s:a", "second", 1, LONG_TTL, LONG_TTL)
        assert not second.acquired, "the second waiter went before the first"
        assert second.retry_after is not None
        assert 0 < second.retry_after <= LONG_TTL + 1, "until the first waiter's place lapses"
        barging = opened._ops.acquire_slot("s:a", "newcomer", 1, LONG_TTL, 0)
        assert not barging.acquired, "a newcomer went before the waiters"
        assert opened._ops.list_slots("s:a") == []
        first = opened._ops.acquire_slot("s:a", "first", 1, LONG_TTL, LONG_TTL)
        assert first.token is not None
        assert first.token > holder.token
        assert opened._ops.release_slot("s:a", "first", first.token)
        second = sibling._ops.acquire_slot("s:a", "second", 1, LONG_TTL, LONG_TTL)
        assert second.token is not None, "taking a slot left the line"
        # A place lapses when its waiter stops checking in.
        assert not opened._ops.acquire_slot("s:a", "gone", 1, LONG_TTL, SHORT_TTL).acquired
        assert sibling._ops.release_slot("s:a", "second", second.token)
        time.sleep(EXPIRED)
        assert opened._ops.acquire_slot("s:a", "newcomer", 1, LONG_TTL, 0).acquired

    def test_a_waiter_that_gives_up_leaves_the_line(
        self, opened: cs.Store, sibling: cs.Store
    ) -> None:
        assert not opened._ops.leave_slot_queue("s:a", "nobody")
        holder = opened._ops.acquire_slot("s:a", "holder", 2, LONG_TTL, 0)
        other = opened._ops.acquire_slot("s:a", "other", 2, LONG_TTL, 0)
        assert holder.token is not None
        assert other.token is not None
        for owner in ("quitter", "patient"):
            assert not sibling._ops.acquire_slot("s:a", owner, 2, LONG_TTL, LONG_TTL).acquired
        assert sibling._ops.leave_slot_queue("s:a", "quitter")
        assert not sibling._ops.leave_slot_queue("s:a", "quitter"), "left twice"
        assert opened._ops.release_slot("s:a", "holder", holder.token)
        assert sibling._ops.acquire_slot("s:a", "patient", 2, LONG_TTL, LONG_TTL).acquired
        late = sibling._ops.acquire_slot("s:a", "late", 3, LONG_TTL, 0)
        assert late.acquired, "nobody is left in the line"

    def test_slots_are_owner_checked_and_expire(self, opened: cs.Store, sibling: cs.Store) -> None:
        held = opened._ops.acquire_slot("s:a", "owner", 1, LONG_TTL, 0)
        assert held.token is not None
        assert not opened._ops.renew_slot("s:a", "intruder", held.token, LONG_TTL)
        assert not opened._ops.renew_slot("s:a", "owner", held.token + 1, LONG_TTL)
        assert not opened._ops.release_slot("s:a", "intruder", held.token)
        assert not opened._ops.release_slot("s:a", "owner", held.token - 1)
        assert opened._ops.renew_slot("s:a", "owner", held.token, SHORT_TTL)
        time.sleep(EXPIRED)
        assert opened._ops.list_slots("s:a") == []
        assert not opened._ops.renew_slot("s:a", "owner", held.token, LONG_TTL)
        assert not opened._ops.release_slot("s:a", "owner", held.token)
        taken = sibling._ops.acquire_slot("s:a", "next", 1, LONG_TTL, 0)
        assert taken.token is not None
        assert taken.token > held.token
        assert sibling._ops.release_slot("s:a", "next", taken.token)
        assert not sibling._ops.release_slot("s:a", "next", taken.token), "released twice"
        assert opened._ops.list_slots("s:a") == []

    def test_slots_and_leases_of_one_name_are_apart(self, opened: cs.Store) -> None:
        lease = opened._ops.acquire_lease("s:a", "owner", LONG_TTL)
        slot = opened._ops.acquire_slot("s:a", "owner", 1, LONG_TTL, 0)
        assert lease.acquired
        assert slot.acquired
        assert opened._ops.acquire_slot("s:a", "other", 2, LONG_TTL, 0).acquired
        assert [lease.name for lease in opened._ops.list_leases()] == ["s:a"]
        assert opened._ops.read_lease("s:a") is not None
        assert len(opened._ops.list_slots("s:a")) == 2

    def test_break_slots(self, opened: cs.Store, sibling: cs.Store) -> None:
        assert opened._ops.break_slots("s:a", None) == 0, "nothing to break"
        tokens = []
        for owner in ("one", "two", "three"):
            result = opened._ops.acquire_slot("s:a", owner, 3, LONG_TTL, 0)
            assert result.token is not None
            tokens.append(result.token)
        assert sibling._ops.break_slots("s:a", tokens[1]) == 1
        assert [s.owner for s in opened._ops.list_slots("s:a")] == ["one", "three"]
        assert not opened._ops.renew_slot("s:a", "two", tokens[1], LONG_TTL)
        assert sibling._ops.break_slots("s:a", tokens[1]) == 0, "broken twice"
        assert sibling._ops.break_slots("s:a", None) == 2
        assert opened._ops.list_slots("s:a") == []
        assert not opened._ops.release_slot("s:a", "one", tokens[0])
        after = opened._ops.acquire_slot("s:a", "next", 1, LONG_TTL, 0)
        assert after.token is not None
        assert after.token > tokens[2], "the next holder's writes must fence the old ones off"

    # -- recurring job metadata -----------------------------------------------------------

    def test_job_metadata_is_written_only_by_the_lease_holder(self, opened: cs.Store) -> None:
        record = opened._ops.get_job_metadata("report")
        assert record.last_finished_us is None
        assert abs(record.store_now_us - opened._ops.now_us()) < 60 * _US
        held = opened._ops.acquire_lease("j:report", "owner", LONG_TTL)
        assert held.token is not None
        assert not opened._ops.set_job_finished(
            "report", "j:report", "intruder", held.token, "ok", None
        )
        assert not opened._ops.set_job_finished(
            "report", "j:other", "owner", held.token, "ok", None
        )
        assert opened._ops.get_job_metadata("report").last_finished_us is None
        before = opened._ops.now_us()
        assert opened._ops.set_job_finished("report", "j:report", "owner", held.token, "ok", None)
        record = opened._ops.get_job_metadata("report")
        assert record.last_finished_us is not None
        assert before <= record.last_finished_us <= record.store_now_us

    def test_recurring_job_registry(self, opened: cs.Store, sibling: cs.Store) -> None:
        assert opened._ops.list_recurring_jobs() == []
        assert not opened._ops.control_recurring_job("report", "pause"), "never registered"
        opened._ops.register_recurring_job("report", "one", "every 1h", None, LONG_TTL)
        sibling._ops.register_recurring_job("report", "two", "every 1h", 123, LONG_TTL)
        opened._ops.register_recurring_job("backup", "one", "cron 0 2 * * * UTC", 7, LONG_TTL)
        records = opened._ops.list_recurring_jobs()
        assert [r.key for r in records] == ["backup", "report"], "sorted by key"
        report = records[1]
        assert isinstance(report, RecurringJobRecord)
        assert (report.schedule, report.instances, report.next_run_us) == ("every 1h", 2, 123)
        assert not report.paused
        assert not report.triggered
        assert report.last_started_us is None
        assert report.last_outcome is None
        sibling._ops.register_recurring_job("report", "two", "every 1h", 456, SHORT_TTL)
        time.sleep(EXPIRED)  # "two" stopped refreshing its registration
        report = opened._ops.list_recurring_jobs()[1]
        assert (report.instances, report.next_run_us) == (1, None)
        opened._ops.unregister_recurring_job("report", "one")
        assert opened._ops.list_recurring_jobs()[1].instances == 0

    def test_recurring_job_runs_pause_and_trigger(self, opened: cs.Store) -> None:
        opened._ops.register_recurring_job("report", "one", "every 1h", None, LONG_TTL)
        held = opened._ops.acquire_lease("j:report", "owner", LONG_TTL)
        assert held.token is not None
        meta = opened._ops.get_job_metadata("report")
        assert (meta.paused, meta.triggered) == (False, False)
        assert not opened._ops.start_job_run("report", "j:report", "intruder", held.token)
        assert opened._ops.start_job_run("report", "j:report", "owner", held.token)
        assert opened._ops.set_job_finished(
            "report", "j:report", "owner", held.token, "error", "ValueError: broken"
        )
        (record,) = opened._ops.list_recurring_jobs()
        assert (record.last_outcome, record.last_error) == ("error", "ValueError: broken")
        assert record.last_started_us is not None
        assert record.last_finished_us is not None
        assert record.last_started_us <= record.last_finished_us
        assert opened._ops.control_recurring_job("report", "pause")
        assert opened._ops.get_job_metadata("report").paused
        assert not opened._ops.start_job_run("report", "j:report", "owner", held.token)
        assert opened._ops.control_recurring_job("report", "trigger")
        assert opened._ops.get_job_metadata("report").triggered
        assert opened._ops.start_job_run("report", "j:report", "owner", held.token)
        meta = opened._ops.get_job_metadata("report")
        assert (meta.paused, meta.triggered) == (True, False), "the run consumed the trigger"
        assert not opened._ops.start_job_run("report", "j:report", "owner", held.token)
        assert opened._ops.control_recurring_job("report", "resume")
        assert opened._ops.start_job_run("report", "j:report", "owner", held.token)
        assert opened._ops.set_job_finished("report", "j:report", "owner", held.token, "ok", None)
        (record,) = opened._ops.list_recurring_jobs()
        assert (record.last_outcome, record.last_error, record.paused) == ("ok", None, False)

    # -- one-shot jobs --------------------------------------------------------------------

    @staticmethod
    def _job(key: str, seconds_from_now: float, props: str = "null") -> NewJob:
        """A job due that many seconds from now."""
        return NewJob(key, int((time.time() + seconds_from_now) * _US), props)

    def test_put_jobs_is_all_or_nothing(self, opened: cs.Store) -> None:
        opened._ops.put_jobs([self._job("a", 60), self._job("b", 60)])
        with pytest.raises(cs.DuplicateJobError) as raised:
            opened._ops.put_jobs([self._job("c", 60), self._job("a", 60)])
        assert raised.value.key == "a"
        with pytest.raises(cs.DuplicateJobError) as raised:
            opened._ops.put_jobs([self._job("d", 60), self._job("d", 61)])
        assert raised.value.key == "d"
        assert [job.key for job in opened._ops.list_jobs()] == ["a", "b"], "a batch stored"
        opened._ops.put_jobs([])

    def test_storing_an_identical_job_again_is_a_retry(self, opened: cs.Store) -> None:
        first = [self._job("a", 60, '{"n":1}'), self._job("b", 60)]
        opened._ops.put_jobs(first)
        opened._ops.put_jobs(first)  # the same call again (after an unknown outcome)
        opened._ops.put_jobs([first[0], self._job("c", 60)])  # identical + new: stored
        assert [job.key for job in opened._ops.list_jobs()] == ["a", "b", "c"]
        other_props = NewJob("a", first[0].run_at_us, '{"n":2}')
        other_time = NewJob("a", first[0].run_at_us + 1, first[0].props_json)
        for changed in (other_props, other_time):
            with pytest.raises(cs.DuplicateJobError) as raised:
                opened._ops.put_jobs([self._job("d", 60), changed])
            assert raised.value.key == "a"
        assert [job.key for job in opened._ops.list_jobs()] == ["a", "b", "c"], "d stored"
        stored = {job.key: job for job in opened._ops.list_jobs()}
        assert stored["a"].props_json == '{"n":1}'

    def test_list_jobs_by_run_time_then_key(self, opened: cs.Store) -> None:
        base = int(time.time() * _US) + 3600 * _US
        jobs = [
            NewJob("b", base, '{"n":1}'),
            NewJob("a", base, "[1,2]"),
            NewJob("c", base - 1, '"x"'),
        ]
        opened._ops.put_jobs(jobs)
        listed = opened._ops.list_jobs()
        assert [(job.key, job.run_at_us, job.props_json) for job in listed] == [
            ("c", base - 1, '"x"'),
            ("a", base, "[1,2]"),
            ("b", base, '{"n":1}'),
        ]

    def test_pages_of_jobs_by_key_prefix(self, opened: cs.Store) -> None:
        later = int(time.time() + 3600) * _US
        keys = ["user:1:a", "user:1:b", "user:10:a", "user:2:a", "other", "user:1", "usex"]
        opened._ops.put_jobs([NewJob(key, later, "null") for key in keys])
        opened._ops.put_jobs([NewJob("user:1:running", int(time.time() - 1) * _US, "null")])
        opened._ops.claim_due_jobs("owner", 5, LONG_TTL)
        assert opened._ops.count_jobs() == len(keys) + 1, "running jobs count too"
        seen: list[str] = []
        after = None
        while True:
            page, after = opened._ops.list_jobs_page("user:1", after, 2)
            assert len(page) <= 2
            seen += [job.key for job in page]
            if after is None:
                break
        assert seen == ["user:1", "user:10:a", "user:1:a", "user:1:b"], "key order, no claimed"
        everything, cursor = opened._ops.list_jobs_page("", None, 100)
        assert cursor is None
        assert [job.key for job in everything] == sorted(keys)
        assert everything[0].run_at_us == later
        assert opened._ops.list_jobs_page("zzz", None, 10) == ([], None)
        # A cursor before the prefix's range starts at the prefix; one past it ends there.
        before, _ = opened._ops.list_jobs_page("user:1", "other", 10)
        assert [job.key for job in before] == ["user:1", "user:10:a", "user:1:a", "user:1:b"]
        assert opened._ops.list_jobs_page("user:1", "user:2", 10) == ([], None)
        inside, _ = opened._ops.list_jobs_page("user:1", "user:10:a", 10)
        assert [job.key for job in inside] == ["user:1:a", "user:1:b"]

    def test_next_job_delay(self, opened: cs.Store) -> None:
        assert opened._ops.next_job_delay() is None
        opened._ops.put_jobs([self._job("later", 60)])
        delay = opened._ops.next_job_delay()
        assert delay is not None
        assert 50 < delay <= 61, delay
        opened._ops.put_jobs([self._job("now", -5)])
        assert opened._ops.next_job_delay() == 0

    def test_claims(self, opened: cs.Store, sibling: cs.Store) -> None:
        now = int(time.time()) * _US
        opened._ops.put_jobs(
            [
                NewJob("b", now - 10 * _US, "null"),
                NewJob("a", now - 10 * _US, "null"),
                NewJob("c", now - 20 * _US, "null"),
                NewJob("z", now + 60 * _US, "null"),
            ]
        )
        first = opened._ops.claim_due_jobs("one", 2, LONG_TTL)
        assert [job.key for job in first] == ["c", "a"], "earliest first, then by key"
        assert all(isinstance(job, ClaimedJob) for job in first)
        rest = sibling._ops.claim_due_jobs("two", 10, LONG_TTL)
        assert [job.key for job in rest] == ["b"], "claimed jobs are not claimed again"
        assert sibling._ops.claim_due_jobs("two", 10, LONG_TTL) == []
        assert [job.key for job in opened._ops.list_jobs()] == ["z"], "claimed is not pending"
        claim_c = first[0]
        assert opened._ops.renew_job_claims("one", [(claim_c.key, claim_c.claim)], LONG_TTL) == [
            "c"
        ]
        assert opened._ops.renew_job_claims("two", [(claim_c.key, claim_c.claim)], LONG_TTL) == []
        assert not opened._ops.complete_job("c", "two", claim_c.claim, "ok", None)
        assert not opened._ops.complete_job("c", "one", claim_c.claim + 1, "ok", None)
        assert opened._ops.complete_job("c", "one", claim_c.claim, "ok", None)
        assert not opened._ops.complete_job("c", "one", claim_c.claim, "ok", None), (
            "completed twice"
        )

    def test_an_expired_claim_is_claimed_again_with_a_new_number(
        self, opened: cs.Store, sibling: cs.Store
    ) -> None:
        opened._ops.put_jobs([self._job("a", -1, '{"x":1}')])
        (first,) = opened._ops.claim_due_jobs("one", 5, SHORT_TTL)
        time.sleep(EXPIRED)
        assert [job.key for job in opened._ops.list_jobs()] == ["a"], "pending again"
        (second,) = sibling._ops.claim_due_jobs("two", 5, LONG_TTL)
        assert (second.key, second.run_at_us, second.props_json) == (
            first.key,
            first.run_at_us,
            first.props_json,
        )
        assert second.claim != first.claim
        assert opened._ops.renew_job_claims("one", [("a", first.claim)], LONG_TTL) == []
        assert not opened._ops.complete_job("a", "one", first.claim, "ok", None)
        assert sibling._ops.complete_job("a", "two", second.claim, "ok", None)

    def test_attempts_retries_and_failed_jobs(self, opened: cs.Store) -> None:
        now = int(time.time()) * _US
        opened._ops.put_jobs([NewJob("job", now - _US, '{"n":1}', "web-1", "00-trace-01")])
        (first,) = opened._ops.claim_due_jobs("one", 5, LONG_TTL)
        assert (first.attempt, first.due_us, first.scheduled_by, first.trace) == (
            1,
            now - _US,
            "web-1",
            "00-trace-01",
        )
        assert first.claimed_us >= now - _US
        assert not opened._ops.retry_job("job", "two", first.claim, 0.0, "boom", True)
        # A retry delay of a second: "not before the delay" must hold on a loaded machine.
        assert opened._ops.retry_job("job", "one", first.claim, 1.0, "ValueError: x", True)
        assert [job.key for job in opened._ops.list_jobs()] == ["job"], "pending again"
        assert opened._ops.claim_due_jobs("two", 5, LONG_TTL) == [], "not before the delay"
        time.sleep(1.0 + EXPIRED)
        (second,) = opened._ops.claim_due_jobs("two", 5, LONG_TTL)
        assert second.attempt == 2
        assert second.due_us > first.claimed_us, "the retry's due time, not run_at"
        assert second.run_at_us == now - _US
        # A claim given back without running (no handler) does not count.
        assert opened._ops.retry_job("job", "two", second.claim, 0.0, None, False)
        (third,) = opened._ops.claim_due_jobs("three", 5, LONG_TTL)
        assert third.attempt == 2
        assert not opened._ops.fail_job("job", "two", third.claim, "stale owner")
        assert opened._ops.fail_job("job", "three", third.claim, "ValueError: for good")
        assert opened._ops.list_jobs() == []
        assert opened._ops.next_job_delay() is None
        assert opened._ops.count_jobs() == 0
        (failed,) = opened._ops.list_failed_jobs()
        assert (failed.key, failed.run_at_us, failed.props_json, failed.attempts) == (
            "job",
            now - _US,
            '{"n":1}',
            2,
        )
        assert failed.last_error == "ValueError: for good"
        with pytest.raises(cs.DuplicateJobError):
            opened._ops.put_jobs([NewJob("job", now - _US, '{"n":1}')])  # even identical
        assert opened._ops.retry_failed_job("job")
        assert not opened._ops.retry_failed_job("job")
        assert opened._ops.list_failed_jobs() == []
        (again,) = opened._ops.claim_due_jobs("four", 5, LONG_TTL)
        assert again.attempt == 1, "a fresh attempt count"
        assert opened._ops.fail_job("job", "four", again.claim, "once more")
        assert opened._ops.cancel_job("job"), "cancel removes a failed job"
        assert opened._ops.list_failed_jobs() == []
        assert not opened._ops.cancel_job("job")

    def test_recent_runs(self, opened: cs.Store) -> None:
        now = int(time.time()) * _US
        opened._ops.put_jobs([NewJob(f"k{n}", now - _US, "null") for n in range(3)])
        claims = {job.key: job for job in opened._ops.claim_due_jobs("one", 5, LONG_TTL)}
        assert opened._ops.complete_job("k0", "one", claims["k0"].claim, "ok", None)
        assert opened._ops.retry_job("k1", "one", claims["k1"].claim, 60.0, "E: retry", True)
        assert opened._ops.complete_job("k2", "one", claims["k2"].claim, "error", "E: done")
        held = opened._ops.acquire_lease("j:tick", "lease-owner", LONG_TTL)
        assert held.token is not None
        assert opened._ops.start_job_run("tick", "j:tick", "lease-owner", held.token)
        assert opened._ops.set_job_finished("tick", "j:tick", "lease-owner", held.token, "ok", None)
        runs = opened._ops.recent_runs(10)
        assert [(r.kind, r.key, r.outcome, r.error) for r in runs] == [
            ("recurring", "tick", "ok", None),
            ("once", "k2", "error", "E: done"),
            ("once", "k1", "retry", "E: retry"),
            ("once", "k0", "ok", None),
        ], "newest first"
        once = runs[-1]
        assert (once.due_us, once.owner, once.attempt) == (now - _US, "one", 1)
        assert once.started_us is not None
        assert once.started_us <= once.finished_us
        assert runs[0].started_us is not None
        assert runs[0].due_us is None
        assert len(opened._ops.recent_runs(2)) == 2

    def test_cancel(self, opened: cs.Store) -> None:
        opened._ops.put_jobs([self._job("pending", 60), self._job("running", -1)])
        opened._ops.claim_due_jobs("owner", 5, LONG_TTL)
        assert opened._ops.cancel_job("pending")
        assert not opened._ops.cancel_job("pending"), "cancelled twice"
        assert not opened._ops.cancel_job("running"), "a running job is not pending"
        assert not opened._ops.cancel_job("missing")
        assert opened._ops.list_jobs() == []
        opened._ops.put_jobs([self._job("pending", 30)])  # the key is free again

    # -- namespaces and closing -----------------------------------------------------------

    def test_namespaces_isolate(
        self, opened: cs.Store, store_url: str, store_options: dict[str, Any]
    ) -> None:
        held = opened._ops.acquire_lease("m:a", "owner", LONG_TTL)
        assert held.token is not None
        opened._ops.put_jobs([self._job("a", -1)])
        assert opened._ops.set_job_finished("a", "m:a", "owner", held.token, "ok", None)
        namespace = f"{opened.namespace}-other"
        with cs.open_store(store_url, namespace=namespace, **store_options) as other:
            assert other._ops.list_leases() == []
            assert other._ops.list_jobs() == []
            assert other._ops.next_job_delay() is None
            assert other._ops.get_job_metadata("a").last_finished_us is None
            assert other._ops.acquire_lease("m:a", "owner", LONG_TTL).acquired
            assert other._ops.claim_due_jobs("owner", 5, LONG_TTL) == []
            other._ops.put_jobs([self._job("a", 60)])
            assert other._ops.cancel_job("a")
        assert [job.key for job in opened._ops.list_jobs()] == ["a"]

    def test_operations_after_close_raise_store_unavailable(
        self, store_url: str, contract_namespace: str, store_options: dict[str, Any]
    ) -> None:
        store = cs.open_store(store_url, namespace=contract_namespace, **store_options)
        store.close()
        store.close()  # idempotent
        with pytest.raises(cs.StoreUnavailableError):
            store._ops.now_us()

    def test_data_is_shared_between_store_objects(
        self, opened: cs.Store, sibling: cs.Store
    ) -> None:
        opened._ops.put_jobs([self._job("a", 60)])
        assert [job.key for job in sibling._ops.list_jobs()] == ["a"]
        held = sibling._ops.acquire_lease("m:a", "owner", LONG_TTL)
        assert not opened._ops.acquire_lease("m:a", "other", LONG_TTL).acquired
        assert held.token is not None
        assert opened._ops.release_lease("m:a", "owner", held.token)

    def test_asyncio_api_opens_the_same_store(
        self, opened: cs.Store, store_url: str, store_options: dict[str, Any]
    ) -> None:
        async def use() -> None:
            async with await aio.open_store(
                store_url, namespace=opened.namespace, **store_options
            ) as store:
                held = await store._ops.acquire_lease("m:a", "async-owner", LONG_TTL)
                assert held.token is not None
                assert [lease.owner for lease in opened._ops.list_leases()] == ["async-owner"]
                assert await store._ops.release_lease("m:a", "async-owner", held.token)

        asyncio.run(use())

    # -- the model test -------------------------------------------------------------------

    def test_matches_memory_reference(self, store_url: str, store_options: dict[str, Any]) -> None:
        class Model(StoreModel):
            url = store_url
            options = store_options

        run_state_machine_as_test(Model, settings=self.model_settings)


# =========================================================================================
# The model: the store under test against the memory reference
# =========================================================================================

#: Never expires during one example.
MODEL_LONG_TTL = 300.0
#: Expired on every store after MODEL_SETTLE seconds (Redis counts whole milliseconds).
MODEL_SHORT_TTL = 0.002
MODEL_SETTLE = 0.008

LEASE_NAMES = ["m:a", "m:b", "j:a"]  # a mutex and a recurring job with the same user name
SLOT_NAMES = ["s:a", "m:a"]  # "m:a" as a slot name must not touch the lease
OWNERS = ["o1", "o2", "o3"]
JOB_KEYS = ["k1", "k2", "k3", "k4", "m:a"]  # "m:a" as a job key must not touch the lease
META_KEYS = ["a", "b"]
PROPS = ["null", '{"a":1}', '[1,"é",null]', '"x"']


@dataclass(frozen=True)
class _Held:
    """A lease granted on both stores (it may have expired or been released since)."""

    name: str
    owner: str
    ref_token: int
    sut_token: int


@dataclass(frozen=True)
class _Slot:
    """A slot granted on both stores (it may have expired, been released or broken)."""

    name: str
    owner: str
    ref_token: int
    sut_token: int


@dataclass(frozen=True)
class _Claim:
    """A job claim granted on both stores."""

    key: str
    owner: str
    ref_claim: int
    sut_claim: int


def _outcome(call: Callable[[], _T]) -> tuple[str, Any]:
    try:
        return ("ok", call())
    except cs.DuplicateJobError as exc:
        return ("duplicate", exc.key)


def _due_state(delay: float | None) -> str:
    if delay is None:
        return "nothing"
    return "now" if delay == 0 else "later"


class StoreModel(RuleBasedStateMachine):
    """A hypothesis state machine: the store at ``url`` against a private memory store,
    operation by operation.

    Servers judge time by their own clock, so only outcomes that do not depend on exact
    times are compared: whether a lease was acquired, renewed or released, owner checks,
    duplicate errors, which jobs are claimed, listing order, whether the next due job is
    due now, later or never, and tokens by *order and identity*, not value (the others
    count from 1, Redis tokens follow its clock): an acquisition that mints a token on
    the reference mints a new one on the store under test, higher than every token of
    the name before; one that gets its token back (the owner's retry) gets it back on
    both; a listed lease carries the token of the same acquisition on both. To keep that
    deterministic, a lease or claim is either long (it never expires during an example)
    or short (it has expired on every store ``MODEL_SETTLE`` seconds later, and the rule
    waits that long); one-shot jobs run a day in the past or a day in the future, each
    key at its own run time.

    Invariants checked after every step, on the store under test: fencing tokens of a
    name strictly increase, at most one live lease per name, and both stores list the
    same leases, jobs and due state. Set ``url`` (and ``options``) in a subclass.
    """

    url: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}

    held = Bundle("held")
    slots = Bundle("slots")
    claims = Bundle("claims")

    def __init__(self) -> None:
        super().__init__()
        namespace = f"model-{uuid.uuid4().hex[:12]}"
        self.ref = cs.open_store("memory://", namespace=namespace)
        try:
            self.sut = cs.open_store(self.url, namespace=namespace, **self.options)
        except BaseException:
            self.ref.close()
            raise
        # Per name: the token each acquisition got on the reference -> on the store under
        # test, and back (tokens are compared by identity and order, not by value).
        self.tokens: dict[str, dict[int, int]] = {}
        self.ref_tokens: dict[str, dict[int, int]] = {}
        self.slot_tokens: dict[str, dict[int, int]] = {}
        self.last_token: dict[str, int] = {}
        self.last_owner: dict[str, str] = {}
        now = int(time.time() * _US)
        self.past_us = now - DAY_US
        self.future_us = now + DAY_US

    def teardown(self) -> None:
        self.sut.close()
        self.ref.close()

    # -- helpers -----------------------------------------------------------------------

    def run_at(self, key: str, past: bool) -> int:
        """Each key has its own run time, a day in the past or a day in the future."""
        return (self.past_us if past else self.future_us) + JOB_KEYS.index(key) * 1000

    def sut_token(self, name: str, ref_token: int) -> int:
        """The token on the store under test of the acquisition that got ``ref_token`` on
        the reference; for a token the reference never handed out, one that the store
        under test never hands out either (tokens are positive)."""
        return self.tokens.get(name, {}).get(ref_token, -1 - ref_token)

    def lease_view(self, leases: list[LeaseInfo], store: int) -> list[tuple[str, str, int]]:
        """(name, owner, token on the reference) of each live lease."""
        view = []
        for lease in leases:
            token = lease.token
            if store == 1:
                known = self.ref_tokens.get(lease.name, {})
                assert token in known, f"a live lease {lease} with a token never handed out"
                token = known[token]
            else:
                known = self.tokens.get(lease.name, {})
                assert token in known, f"a live lease {lease} that was never acquired"
            view.append((lease.name, lease.owner, token))
            assert 0 < lease.expires_in <= MODEL_LONG_TTL + 1, lease
        return view

    @staticmethod
    def settle(short: bool) -> None:
        if short:
            time.sleep(MODEL_SETTLE)

    @staticmethod
    def ttl(short: bool) -> float:
        return MODEL_SHORT_TTL if short else MODEL_LONG_TTL

    # -- leases ------------------------------------------------------------------------

    @rule(
        target=held,
        name=st.sampled_from(LEASE_NAMES),
        owner=st.sampled_from(OWNERS),
        short=st.booleans(),
    )
    def acquire(self, name: str, owner: str, short: bool) -> Any:
        ref = self.ref._ops.acquire_lease(name, owner, self.ttl(short))
        sut = self.sut._ops.acquire_lease(name, owner, self.ttl(short))
        self.settle(short)
        assert sut.acquired == ref.acquired, f"memory {ref}, store {sut}"
        if not ref.acquired:
            for result in (ref, sut):
                assert result.token is None
                assert result.retry_after is not None
                assert 0 < result.retry_after <= MODEL_LONG_TTL + 1
            return multiple()
        assert ref.token is not None
        assert sut.token is not None
        last = self.last_token.get(name)
        if last is not None and sut.token == last:  # the live lease's owner, retrying
            assert self.last_owner[name] == owner, "a token was handed out twice"
        else:
            assert last is None or sut.token > last, "fencing tokens must strictly increase"
        self.last_token[name] = sut.token
        self.last_owner[name] = owner
        tokens = self.tokens.setdefault(name, {})
        ref_tokens = self.ref_tokens.setdefault(name, {})
        if ref.token in tokens:  # the reference gave the owner its token back: so must the store
            assert tokens[ref.token] == sut.token, "a retry must get the same token back"
        else:  # a new token on the reference: a new one on the store too
            assert sut.token not in ref_tokens, "a token was handed out twice"
            tokens[ref.token] = sut.token
            ref_tokens[sut.token] = ref.token
        return _Held(name, owner, ref.token, sut.token)

    @rule(held=held, short=st.booleans(), other_owner=st.booleans())
    def renew_held(self, held: _Held, short: bool, other_owner: bool) -> None:
        owner = "intruder" if other_owner else held.owner
        ref = self.ref._ops.renew_lease(held.name, owner, held.ref_token, self.ttl(short))
        sut = self.sut._ops.renew_lease(held.name, owner, held.sut_token, self.ttl(short))
        self.settle(short)
        assert sut == ref
        if other_owner:
            assert not sut, "renewed by someone else than the owner"

    @rule(
        name=st.sampled_from(LEASE_NAMES),
        owner=st.sampled_from(OWNERS),
        token=st.integers(min_value=0, max_value=6),
    )
    def renew_random(self, name: str, owner: str, token: int) -> None:
        ref = self.ref._ops.renew_lease(name, owner, token, MODEL_LONG_TTL)
        sut = self.sut._ops.renew_lease(name, owner, self.sut_token(name, token), MODEL_LONG_TTL)
        assert sut == ref

    @rule(held=held, other_owner=st.booleans())
    def release_held(self, held: _Held, other_owner: bool) -> None:
        owner = "intruder" if other_owner else held.owner
        ref = self.ref._ops.release_lease(held.name, owner, held.ref_token)
        sut = self.sut._ops.release_lease(held.name, owner, held.sut_token)
        assert sut == ref
        if other_owner:
            assert not sut, "released by someone else than the owner"

    @rule(
        name=st.sampled_from(LEASE_NAMES),
        owner=st.sampled_from(OWNERS),
        token=st.integers(min_value=0, max_value=6),
    )
    def release_random(self, name: str, owner: str, token: int) -> None:
        ref = self.ref._ops.release_lease(name, owner, token)
        sut = self.sut._ops.release_lease(name, owner, self.sut_token(name, token))
        assert sut == ref

    @rule(name=st.sampled_from(LEASE_NAMES))
    def break_lease(self, name: str) -> None:
        ref = self.ref._ops.break_lease(name)
        sut = self.sut._ops.break_lease(name)
        assert sut == ref, "break_lease reports whether a live lease was ended"

    # -- slots -------------------------------------------------------------------------

    @rule(
        target=slots,
        name=st.sampled_from(SLOT_NAMES),
        owner=st.sampled_from(OWNERS),
        limit=st.integers(min_value=1, max_value=3),
        short=st.booleans(),
        queue=st.booleans(),
    )
    def acquire_slot(self, name: str, owner: str, limit: int, short: bool, queue: bool) -> Any:
        wait = MODEL_LONG_TTL if queue else 0.0
        ref = self.ref._ops.acquire_slot(name, owner, limit, self.ttl(short), wait)
        sut = self.sut._ops.acquire_slot(name, owner, limit, self.ttl(short), wait)
        self.settle(short)
        assert sut.acquired == ref.acquired, f"memory {ref}, store {sut}"
        if not ref.acquired:
            assert sut.token is None
            assert sut.retry_after is not None
            assert 0 < sut.retry_after <= MODEL_LONG_TTL + 1
            return multiple()
        assert ref.token is not None
        assert sut.token is not None
        pairs = self.slot_tokens.setdefault(name, {})
        if ref.token in pairs:  # a retry of a live slot's owner
            assert sut.token == pairs[ref.token], "the owner of a live slot keeps its token"
        else:
            assert all(sut.token > old for old in pairs.values()), "slot tokens must increase"
            pairs[ref.token] = sut.token
        return _Slot(name, owner, ref.token, sut.token)

    @rule(name=st.sampled_from(SLOT_NAMES), owner=st.sampled_from(OWNERS))
    def leave_slot_queue(self, name: str, owner: str) -> None:
        ref = self.ref._ops.leave_slot_queue(name, owner)
        sut = self.sut._ops.leave_slot_queue(name, owner)
        assert sut == ref, "leave_slot_queue reports whether the owner was in the line"

    @rule(slot=slots, short=st.booleans(), other_owner=st.booleans())
    def renew_slot(self, slot: _Slot, short: bool, other_owner: bool) -> None:
        owner = "intruder" if other_owner else slot.owner
        ref = self.ref._ops.renew_slot(slot.name, owner, slot.ref_token, self.ttl(short))
        sut = self.sut._ops.renew_slot(slot.name, owner, slot.sut_token, self.ttl(short))
        self.settle(short)
        assert sut == ref
        if other_owner:
            assert not sut, "a slot renewed by someone else than its owner"

    @rule(slot=slots, other_owner=st.booleans())
    def release_slot(self, slot: _Slot, other_owner: bool) -> None:
        owner = "intruder" if other_owner else slot.owner
        ref = self.ref._ops.release_slot(slot.name, owner, slot.ref_token)
        sut = self.sut._ops.release_slot(slot.name, owner, slot.sut_token)
        assert sut == ref
        if other_owner:
            assert not sut, "a slot released by someone else than its owner"

    @rule(slot=slots, every=st.booleans())
    def break_slots(self, slot: _Slot, every: bool) -> None:
        ref = self.ref._ops.break_slots(slot.name, None if every else slot.ref_token)
        sut = self.sut._ops.break_slots(slot.name, None if every else slot.sut_token)
        assert sut == ref, "break_slots reports how many live slots it ended"

    @invariant()
    def same_slots(self) -> None:
        for name in SLOT_NAMES:
            views = []
            for store, index in ((self.ref, 0), (self.sut, 1)):
                listed = store._ops.list_slots(name)
                pairs = self.slot_tokens.get(name, {})
                as_ref = (
                    {sut: ref for ref, sut in pairs.items()} if index else {r: r for r in pairs}
                )
                assert all(s.token in as_ref for s in listed), f"a slot never acquired: {listed}"
                views.append([(s.owner, as_ref[s.token]) for s in listed])
                assert all(0 < s.expires_in <= MODEL_LONG_TTL + 1 for s in listed), listed
            assert views[1] == views[0], f"slots of {name!r}: memory {views[0]}, store {views[1]}"

    # -- recurring job metadata --------------------------------------------------------

    @rule(held=held, key=st.sampled_from(META_KEYS))
    def set_job_finished(self, held: _Held, key: str) -> None:
        ref = self.ref._ops.set_job_finished(key, held.name, held.owner, held.ref_token, "ok", None)
        sut = self.sut._ops.set_job_finished(key, held.name, held.owner, held.sut_token, "ok", None)
        assert sut == ref, "metadata is written only by the live lease holder"

    @rule(key=st.sampled_from(META_KEYS))
    def get_job_metadata(self, key: str) -> None:
        ref = self.ref._ops.get_job_metadata(key)
        sut = self.sut._ops.get_job_metadata(key)
        assert (sut.last_finished_us is None) == (ref.last_finished_us is None)
        if sut.last_finished_us is not None:
            assert sut.last_finished_us <= sut.store_now_us

    # -- one-shot jobs -----------------------------------------------------------------

    @rule(
        batch=st.lists(
            st.tuples(st.sampled_from(JOB_KEYS), st.booleans(), st.sampled_from(PROPS)),
            max_size=4,
        )
    )
    def put_jobs(self, batch: list[tuple[str, bool, str]]) -> None:
        jobs = [NewJob(key, self.run_at(key, past), props) for key, past, props in batch]
        before = self.sut._ops.list_jobs()
        ref = _outcome(lambda: self.ref._ops.put_jobs(jobs))
        sut = _outcome(lambda: self.sut._ops.put_jobs(jobs))
        assert sut == ref
        if ref[0] == "duplicate":
            assert self.sut._ops.list_jobs() == before, "a rejected batch stored something"

    @rule(
        target=claims,
        owner=st.sampled_from(OWNERS),
        limit=st.integers(min_value=1, max_value=4),
        short=st.booleans(),
    )
    def claim_due_jobs(self, owner: str, limit: int, short: bool) -> Any:
        ref = self.ref._ops.claim_due_jobs(owner, limit, self.ttl(short))
        sut = self.sut._ops.claim_due_jobs(owner, limit, self.ttl(short))
        self.settle(short)

        def view(claimed: list[ClaimedJob]) -> list[tuple[str, int, str]]:
            return sorted((c.key, c.run_at_us, c.props_json) for c in claimed)

        assert view(sut) == view(ref), "different jobs claimed"
        assert len(sut) <= limit
        assert len({c.key for c in sut}) == len(sut), "a job claimed twice at once"
        sut_claims = {c.key: c.claim for c in sut}
        return multiple(*(_Claim(c.key, owner, c.claim, sut_claims[c.key]) for c in ref))

    @rule(
        picks=st.lists(st.tuples(st.sampled_from(JOB_KEYS), st.integers(0, 4)), max_size=3),
        owner=st.sampled_from(OWNERS),
    )
    def renew_random_claims(self, picks: list[tuple[str, int]], owner: str) -> None:
        ref = self.ref._ops.renew_job_claims(owner, picks, MODEL_LONG_TTL)
        sut = self.sut._ops.renew_job_claims(owner, picks, MODEL_LONG_TTL)
        assert sorted(sut) == sorted(ref)

    @rule(claim=claims, short=st.booleans(), other_owner=st.booleans())
    def renew_claim(self, claim: _Claim, short: bool, other_owner: bool) -> None:
        owner = "intruder" if other_owner else claim.owner
        ttl = self.ttl(short)
        ref = self.ref._ops.renew_job_claims(owner, [(claim.key, claim.ref_claim)], ttl)
        sut = self.sut._ops.renew_job_claims(owner, [(claim.key, claim.sut_claim)], ttl)
        self.settle(short)
        assert sut == ref
        if other_owner:
            assert sut == []

    @rule(claim=claims, other_owner=st.booleans())
    def complete_claim(self, claim: _Claim, other_owner: bool) -> None:
        owner = "intruder" if other_owner else claim.owner
        ref = self.ref._ops.complete_job(claim.key, owner, claim.ref_claim, "ok", None)
        sut = self.sut._ops.complete_job(claim.key, owner, claim.sut_claim, "ok", None)
        assert sut == ref
        if other_owner:
            assert not sut, "completed by someone else than the claim owner"

    @rule(key=st.sampled_from(JOB_KEYS))
    def cancel_job(self, key: str) -> None:
        ref = self.ref._ops.cancel_job(key)
        sut = self.sut._ops.cancel_job(key)
        assert sut == ref, "cancel reports whether the job was pending"

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def same_leases(self) -> None:
        ref = self.ref._ops.list_leases()
        sut = self.sut._ops.list_leases()
        names = [lease.name for lease in sut]
        assert names == sorted(set(names)), "at most one live lease per name"
        assert self.lease_view(sut, 1) == self.lease_view(ref, 0)

    @invariant()
    def same_jobs(self) -> None:
        assert self.sut._ops.list_jobs() == self.ref._ops.list_jobs()
        due = (
            _due_state(self.ref._ops.next_job_delay()),
            _due_state(self.sut._ops.next_job_delay()),
        )
        assert due[1] == due[0], f"next due job: memory {due[0]}, store {due[1]}"
