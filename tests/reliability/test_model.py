"""Stateful model test: every durable store against the memory reference.

A hypothesis state machine drives two stores with the same random sequence of the narrow
``Store`` operations (acquire/renew/release/list leases, recurring-job metadata,
put/claim/renew/complete/cancel/list one-shot jobs, next due delay): the store under test
(SQLite, Redis or PostgreSQL) and a private ``memory://`` store, the reference. Each
example uses a fresh namespace, which isolates it on the shared servers.

Servers judge time by their own clock, so only outcomes that do not depend on exact times
are compared: whether a lease was acquired, renewed or released, owner checks, duplicate
errors, token *differences* (Redis starts a fresh counter at its clock, the others at 1),
which jobs are claimed, listing order, and whether the next due job is due now, later or
never. To keep that deterministic, a lease or claim is either long (it never expires
during an example) or short (it has expired on every store ``SETTLE`` seconds later, and
the rule waits that long); one-shot jobs run a day in the past or a day in the future,
each key at its own run time.

Invariants checked after every step, on the store under test: fencing tokens of a name
strictly increase, at most one live lease per name, and both stores list the same leases,
jobs and due state.

Budget: a few seconds per store by default; ``CLUSTERSYNC_SOAK=1`` runs ten times more
examples, twice as long.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

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
from clustersync.backends.base import ClaimedJob, LeaseInfo, NewJob
from tests.conftest import selected_backends

from .conftest import soak_mode

_T = TypeVar("_T")
_US = 1_000_000
DAY_US = 86_400 * _US

#: Never expires during one example.
LONG_TTL = 300.0
#: Expired on every store after SETTLE seconds (Redis counts whole milliseconds, >= 1).
SHORT_TTL = 0.002
SETTLE = 0.008

LEASE_NAMES = ["m:a", "m:b", "j:a"]  # a mutex and a recurring job with the same user name
OWNERS = ["o1", "o2", "o3"]
JOB_KEYS = ["k1", "k2", "k3", "k4", "m:a"]  # "m:a" as a job key must not touch the lease
META_KEYS = ["a", "b"]
PROPS = ["null", '{"a":1}', '[1,"é",null]', '"x"']

DURABLE = ("sqlite", "redis", "postgres")


@pytest.fixture(params=[b for b in selected_backends() if b in DURABLE])
def backend(request: pytest.FixtureRequest) -> str:
    """The store under test (the memory store is the reference)."""
    name: str = request.param
    return name


@dataclass(frozen=True)
class Held:
    """A lease granted on both stores (it may have expired or been released since)."""

    name: str
    owner: str
    ref_token: int
    sut_token: int


@dataclass(frozen=True)
class Claim:
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


class StoreComparison(RuleBasedStateMachine):
    """The store at ``url`` against a private memory store, operation by operation."""

    url = ""  # set by the test (a subclass per run)

    held = Bundle("held")
    claims = Bundle("claims")

    def __init__(self) -> None:
        super().__init__()
        namespace = f"model-{uuid.uuid4().hex[:12]}"
        self.ref = cs.open_store("memory://", namespace=namespace)
        try:
            self.sut = cs.open_store(self.url, namespace=namespace)
        except BaseException:
            self.ref.close()
            raise
        # The first token of each name on each store: tokens are compared as differences.
        self.base: dict[str, tuple[int, int]] = {}
        self.last_token: dict[str, int] = {}
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
        """The token on the store under test that corresponds to ``ref_token``."""
        base = self.base.get(name)
        if base is None:
            return ref_token
        return base[1] + (ref_token - base[0])

    def lease_view(self, leases: list[LeaseInfo], store: int) -> list[tuple[str, str, int]]:
        view = []
        for lease in leases:
            base = self.base.get(lease.name)
            assert base is not None, f"a live lease {lease.name!r} that was never acquired"
            view.append((lease.name, lease.owner, lease.token - base[store]))
            assert 0 < lease.expires_in <= LONG_TTL + 1, lease
        return view

    @staticmethod
    def settle(short: bool) -> None:
        if short:
            time.sleep(SETTLE)

    # -- leases ------------------------------------------------------------------------

    @rule(
        target=held,
        name=st.sampled_from(LEASE_NAMES),
        owner=st.sampled_from(OWNERS),
        short=st.booleans(),
    )
    def acquire(self, name: str, owner: str, short: bool) -> Any:
        ttl = SHORT_TTL if short else LONG_TTL
        ref = self.ref.acquire_lease(name, owner, ttl)
        sut = self.sut.acquire_lease(name, owner, ttl)
        self.settle(short)
        assert sut.acquired == ref.acquired, f"memory {ref}, store {sut}"
        if not ref.acquired:
            for result in (ref, sut):
                assert result.token is None
                assert result.retry_after is not None
                assert 0 < result.retry_after <= LONG_TTL + 1
            return multiple()
        assert ref.token is not None
        assert sut.token is not None
        last = self.last_token.get(name)
        assert last is None or sut.token > last, "fencing tokens must strictly increase"
        self.last_token[name] = sut.token
        if name not in self.base:
            self.base[name] = (ref.token, sut.token)
        base_ref, base_sut = self.base[name]
        assert sut.token - base_sut == ref.token - base_ref, "tokens must grow by one"
        return Held(name, owner, ref.token, sut.token)

    @rule(held=held, short=st.booleans(), other_owner=st.booleans())
    def renew_held(self, held: Held, short: bool, other_owner: bool) -> None:
        owner = "intruder" if other_owner else held.owner
        ttl = SHORT_TTL if short else LONG_TTL
        ref = self.ref.renew_lease(held.name, owner, held.ref_token, ttl)
        sut = self.sut.renew_lease(held.name, owner, held.sut_token, ttl)
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
        ref = self.ref.renew_lease(name, owner, token, LONG_TTL)
        sut = self.sut.renew_lease(name, owner, self.sut_token(name, token), LONG_TTL)
        assert sut == ref

    @rule(held=held, other_owner=st.booleans())
    def release_held(self, held: Held, other_owner: bool) -> None:
        owner = "intruder" if other_owner else held.owner
        ref = self.ref.release_lease(held.name, owner, held.ref_token)
        sut = self.sut.release_lease(held.name, owner, held.sut_token)
        assert sut == ref
        if other_owner:
            assert not sut, "released by someone else than the owner"

    @rule(
        name=st.sampled_from(LEASE_NAMES),
        owner=st.sampled_from(OWNERS),
        token=st.integers(min_value=0, max_value=6),
    )
    def release_random(self, name: str, owner: str, token: int) -> None:
        ref = self.ref.release_lease(name, owner, token)
        sut = self.sut.release_lease(name, owner, self.sut_token(name, token))
        assert sut == ref

    # -- recurring job metadata --------------------------------------------------------

    @rule(held=held, key=st.sampled_from(META_KEYS))
    def set_job_finished(self, held: Held, key: str) -> None:
        ref = self.ref.set_job_finished(key, held.name, held.owner, held.ref_token)
        sut = self.sut.set_job_finished(key, held.name, held.owner, held.sut_token)
        assert sut == ref, "metadata is written only by the live lease holder"

    @rule(key=st.sampled_from(META_KEYS))
    def get_job_metadata(self, key: str) -> None:
        ref = self.ref.get_job_metadata(key)
        sut = self.sut.get_job_metadata(key)
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
        before = self.sut.list_jobs()
        ref = _outcome(lambda: self.ref.put_jobs(jobs))
        sut = _outcome(lambda: self.sut.put_jobs(jobs))
        assert sut == ref
        if ref[0] == "duplicate":
            assert self.sut.list_jobs() == before, "a rejected batch stored something"

    @rule(
        target=claims,
        owner=st.sampled_from(OWNERS),
        limit=st.integers(min_value=1, max_value=4),
        short=st.booleans(),
    )
    def claim_due_jobs(self, owner: str, limit: int, short: bool) -> Any:
        ttl = SHORT_TTL if short else LONG_TTL
        ref = self.ref.claim_due_jobs(owner, limit, ttl)
        sut = self.sut.claim_due_jobs(owner, limit, ttl)
        self.settle(short)

        def view(claimed: list[ClaimedJob]) -> list[tuple[str, int, str]]:
            return sorted((c.key, c.run_at_us, c.props_json) for c in claimed)

        assert view(sut) == view(ref), "different jobs claimed"
        assert len(sut) <= limit
        assert len({c.key for c in sut}) == len(sut), "a job claimed twice at once"
        sut_claims = {c.key: c.claim for c in sut}
        return multiple(*(Claim(c.key, owner, c.claim, sut_claims[c.key]) for c in ref))

    @rule(
        picks=st.lists(st.tuples(st.sampled_from(JOB_KEYS), st.integers(0, 4)), max_size=3),
        owner=st.sampled_from(OWNERS),
    )
    def renew_random_claims(self, picks: list[tuple[str, int]], owner: str) -> None:
        ref = self.ref.renew_job_claims(owner, picks, LONG_TTL)
        sut = self.sut.renew_job_claims(owner, picks, LONG_TTL)
        assert sorted(sut) == sorted(ref)

    @rule(claim=claims, short=st.booleans(), other_owner=st.booleans())
    def renew_claim(self, claim: Claim, short: bool, other_owner: bool) -> None:
        owner = "intruder" if other_owner else claim.owner
        ttl = SHORT_TTL if short else LONG_TTL
        ref = self.ref.renew_job_claims(owner, [(claim.key, claim.ref_claim)], ttl)
        sut = self.sut.renew_job_claims(owner, [(claim.key, claim.sut_claim)], ttl)
        self.settle(short)
        assert sut == ref
        if other_owner:
            assert sut == []

    @rule(claim=claims, other_owner=st.booleans())
    def complete_claim(self, claim: Claim, other_owner: bool) -> None:
        owner = "intruder" if other_owner else claim.owner
        ref = self.ref.complete_job(claim.key, owner, claim.ref_claim)
        sut = self.sut.complete_job(claim.key, owner, claim.sut_claim)
        assert sut == ref
        if other_owner:
            assert not sut, "completed by someone else than the claim owner"

    @rule(key=st.sampled_from(JOB_KEYS))
    def cancel_job(self, key: str) -> None:
        ref = self.ref.cancel_job(key)
        sut = self.sut.cancel_job(key)
        assert sut == ref, "cancel reports whether the job was pending"

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def same_leases(self) -> None:
        ref = self.ref.list_leases()
        sut = self.sut.list_leases()
        names = [lease.name for lease in sut]
        assert names == sorted(set(names)), "at most one live lease per name"
        assert self.lease_view(sut, 1) == self.lease_view(ref, 0)

    @invariant()
    def same_jobs(self) -> None:
        assert self.sut.list_jobs() == self.ref.list_jobs()
        due = (_due_state(self.ref.next_job_delay()), _due_state(self.sut.next_job_delay()))
        assert due[1] == due[0], f"next due job: memory {due[0]}, store {due[1]}"


def _settings() -> settings:
    soak = soak_mode()
    return settings(
        max_examples=250 if soak else 25,
        stateful_step_count=60 if soak else 30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


@pytest.fixture
def machine(store_url: str) -> type[StoreComparison]:
    class Machine(StoreComparison):
        url = store_url

    return Machine


@pytest.mark.timeout(1800 if soak_mode() else 120)
def test_store_matches_memory_reference(machine: type[StoreComparison]) -> None:
    run_state_machine_as_test(machine, settings=_settings())
