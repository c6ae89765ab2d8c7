"""Model-based test: SQLiteBackend must behave exactly like MemoryBackend (the reference).

A hypothesis state machine drives both engines with the same random operations, under one
shared ManualClock, and asserts identical results (return values, DuplicateJobError raised
by both or neither, tokens, claims, listings). Each side has two engines on one namespace
(two "processes" sharing the data: two SQLite connections to one file, two MemoryEngines on
one MemoryState) and one engine on another namespace, so namespace isolation is checked too.

It also checks invariants of the lease protocol against a tiny model: fencing tokens of a
name strictly increase, and at most one live lease exists per name.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from clustersync._core.clock import ManualClock
from clustersync.exceptions import DuplicateJobError
from clustersync.stores import Backend, ClaimedJob, NewJob
from clustersync.stores.memory import MemoryBackend, MemoryState
from clustersync.stores.sqlite import SQLiteBackend

_T = TypeVar("_T")
_US = 1_000_000

# Connections: 0 and 1 share namespace "ns"; 2 is namespace "other".
CONNECTIONS = [("ns", 0), ("ns", 1), ("other", 0)]
LEASE_NAMES = ["m:a", "m:b", "j:a"]  # a mutex and a recurring job with the same user name
OWNERS = ["o1", "o2", "o3"]
JOB_KEYS = ["k1", "k2", "k3", "k4", "m:a"]  # "m:a" as a job key must not touch the lease
TTLS = [0.0000001, 0.001, 0.5, 1.0, 2.5, 10.0, 30.0]
ADVANCES = [0.0, 0.000001, 0.0005, 0.3, 0.5, 1.0, 2.5, 9.999999, 10.0, 30.0]
PROPS = ["null", '{"a":1}', '[1,"é",null]', '"x"']

conns = st.integers(min_value=0, max_value=len(CONNECTIONS) - 1)
lease_names = st.sampled_from(LEASE_NAMES)
owners = st.sampled_from(OWNERS)
job_keys = st.sampled_from(JOB_KEYS)
ttls = st.sampled_from(TTLS)
tokens = st.integers(min_value=0, max_value=6)
# Coarse offsets make equal run times (ties) common; the integers cover everything else.
run_at_offsets = st.sampled_from([-10 * _US, -1, 0, 1, _US // 2, _US, 10 * _US]) | st.integers(
    min_value=-10 * _US, max_value=60 * _US
)


@dataclass(frozen=True)
class Held:
    """A lease some owner was granted (it may have expired or been released since)."""

    conn: int
    name: str
    owner: str
    token: int


@dataclass(frozen=True)
class Claim:
    conn: int
    key: str
    owner: str
    claim: int


@dataclass
class ModelLease:
    owner: str | None
    token: int
    expires_us: int


def _put(engine: Backend, jobs: list[NewJob]) -> None:
    engine.put_jobs(jobs)


def _cancel(engine: Backend, key: str) -> bool:
    return engine.cancel_job(key)


class EngineComparison(RuleBasedStateMachine):
    held = Bundle[Held]("held")
    claims = Bundle[Claim]("claims")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="clustersync-model-"))
        self.clock = ManualClock()
        state = MemoryState()
        path = str(self.tmp / "model.db")
        self.memory: list[Backend] = []
        self.sqlite: list[Backend] = []
        for namespace, _ in CONNECTIONS:
            self.memory.append(MemoryBackend(state, namespace, self.clock))
            self.sqlite.append(SQLiteBackend(path, namespace, clock=self.clock))
        # (namespace, lease name) -> what the protocol says the lease is
        self.leases: dict[tuple[str, str], ModelLease] = {}

    def teardown(self) -> None:
        for engine in self.memory + self.sqlite:
            engine.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------

    def both(self, conn: int, op: Callable[[Backend], _T]) -> _T:
        """Run ``op`` on the reference and on SQLite; results (or duplicates) must agree."""
        outcomes: list[tuple[str, Any]] = []
        for engine in (self.memory[conn], self.sqlite[conn]):
            try:
                outcomes.append(("ok", op(engine)))
            except DuplicateJobError as exc:
                outcomes.append(("duplicate", exc.key))
        reference, sqlite = outcomes
        assert sqlite == reference, f"memory returned {reference!r}, sqlite {sqlite!r}"
        if reference[0] == "duplicate":
            raise DuplicateJobError(reference[1])
        result: _T = reference[1]
        return result

    def now_us(self) -> int:
        now = self.memory[0].now_us()
        assert self.sqlite[0].now_us() == now
        return now

    def model(self, conn: int, name: str) -> ModelLease | None:
        return self.leases.get((CONNECTIONS[conn][0], name))

    # -- time ------------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        assert self.now_us() == 1_700_000_000 * _US

    @rule(seconds=st.sampled_from(ADVANCES))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- leases ------------------------------------------------------------------------

    @rule(target=held, conn=conns, name=lease_names, owner=owners, ttl=ttls)
    def acquire_lease(self, conn: int, name: str, owner: str, ttl: float) -> Any:
        now = self.now_us()
        result = self.both(conn, lambda e: e.acquire_lease(name, owner, ttl))
        lease = self.model(conn, name)
        live = lease is not None and lease.owner is not None and lease.expires_us > now
        if live and lease is not None and lease.owner == owner:
            # The owner of the live lease retrying (an unknown outcome): it gets its own
            # lease back, with its token and a fresh ttl.
            assert result.acquired, "the owner of the live lease was refused its own lease"
            assert result.token == lease.token
            self.leases[(CONNECTIONS[conn][0], name)] = ModelLease(
                owner, lease.token, now + int(ttl * _US)
            )
            return Held(conn, name, owner, lease.token)
        if live:
            assert lease is not None
            assert not result.acquired, "two live leases for one name"
            assert result.token is None
            assert result.retry_after == (lease.expires_us - now) / _US
            assert result.retry_after is not None
            assert result.retry_after > 0
            return multiple()
        assert result.acquired, "a free or expired lease was refused"
        previous = lease.token if lease is not None else 0
        assert result.token is not None
        assert result.token == previous + 1, "fencing tokens must strictly increase by one"
        self.leases[(CONNECTIONS[conn][0], name)] = ModelLease(
            owner, result.token, now + int(ttl * _US)
        )
        return Held(conn, name, owner, result.token)

    @rule(held=held, ttl=ttls, other_conn=st.booleans())
    def renew_held(self, held: Held, ttl: float, other_conn: bool) -> None:
        conn = self._sibling(held.conn) if other_conn else held.conn
        self._renew(conn, held.name, held.owner, held.token, ttl)

    @rule(conn=conns, name=lease_names, owner=owners, token=tokens, ttl=ttls)
    def renew_random(self, conn: int, name: str, owner: str, token: int, ttl: float) -> None:
        self._renew(conn, name, owner, token, ttl)

    def _renew(self, conn: int, name: str, owner: str, token: int, ttl: float) -> None:
        now = self.now_us()
        renewed = self.both(conn, lambda e: e.renew_lease(name, owner, token, ttl))
        lease = self.model(conn, name)
        owns = (
            lease is not None
            and lease.owner == owner
            and lease.token == token
            and lease.expires_us > now
        )
        assert renewed == owns
        if renewed:
            assert lease is not None
            lease.expires_us = now + int(ttl * _US)

    @rule(held=held, other_conn=st.booleans())
    def release_held(self, held: Held, other_conn: bool) -> None:
        conn = self._sibling(held.conn) if other_conn else held.conn
        self._release(conn, held.name, held.owner, held.token)

    @rule(conn=conns, name=lease_names, owner=owners, token=tokens)
    def release_random(self, conn: int, name: str, owner: str, token: int) -> None:
        self._release(conn, name, owner, token)

    def _release(self, conn: int, name: str, owner: str, token: int) -> None:
        now = self.now_us()
        released = self.both(conn, lambda e: e.release_lease(name, owner, token))
        lease = self.model(conn, name)
        owns = (
            lease is not None
            and lease.owner == owner
            and lease.token == token
            and lease.expires_us > now
        )
        assert released == owns, "release must free only the caller's own live lease"
        if released:
            assert lease is not None
            lease.owner = None

    @staticmethod
    def _sibling(conn: int) -> int:
        """The other connection to the same namespace (0 <-> 1); 2 has none."""
        return {0: 1, 1: 0}.get(conn, conn)

    # -- recurring job metadata --------------------------------------------------------

    @rule(conn=conns, key=st.sampled_from(["a", "b"]))
    def get_job_metadata(self, conn: int, key: str) -> None:
        record = self.both(conn, lambda e: e.get_job_metadata(key))
        assert record.store_now_us == self.now_us()

    @rule(held=held, key=st.sampled_from(["a", "b"]))
    def set_job_finished_held(self, held: Held, key: str) -> None:
        self._set_finished(held.conn, key, held.name, held.owner, held.token)

    @rule(conn=conns, key=st.sampled_from(["a", "b"]), name=lease_names, owner=owners, token=tokens)
    def set_job_finished_random(
        self, conn: int, key: str, name: str, owner: str, token: int
    ) -> None:
        self._set_finished(conn, key, name, owner, token)

    def _set_finished(self, conn: int, key: str, name: str, owner: str, token: int) -> None:
        now = self.now_us()
        written = self.both(conn, lambda e: e.set_job_finished(key, name, owner, token, "ok", None))
        lease = self.model(conn, name)
        holder = (
            lease is not None
            and lease.owner == owner
            and lease.token == token
            and lease.expires_us > now
        )
        assert written == holder, "metadata is written only by the live lease holder"
        if written:
            record = self.both(conn, lambda e: e.get_job_metadata(key))
            assert record.last_finished_us == now

    # -- one-shot jobs -----------------------------------------------------------------

    @rule(
        conn=conns,
        batch=st.lists(
            st.tuples(
                job_keys,
                run_at_offsets,
                st.sampled_from(PROPS),
            ),
            max_size=4,
        ),
    )
    def put_jobs(self, conn: int, batch: list[tuple[str, int, str]]) -> None:
        now = self.now_us()
        jobs = [NewJob(key, now + offset, props) for key, offset, props in batch]
        before = self.both(conn, lambda e: e.list_jobs())
        try:
            self.both(conn, lambda e: e.put_jobs(jobs))
        except DuplicateJobError:
            # all or nothing: nothing was stored
            assert self.both(conn, lambda e: e.list_jobs()) == before
            keys = [job.key for job in jobs]
            assert len(set(keys)) < len(keys) or self._stored_keys(conn) & set(keys)
        else:
            assert len({job.key for job in jobs}) == len(jobs)

    def _stored_keys(self, conn: int) -> set[str]:
        """Every stored key (pending or claimed), found by trying to re-insert each."""
        stored: set[str] = set()
        for key in JOB_KEYS:
            probe = [NewJob(key, 0, "null")]
            try:
                self.both(conn, functools.partial(_put, jobs=probe))
            except DuplicateJobError:
                stored.add(key)
            else:
                assert self.both(conn, functools.partial(_cancel, key=key))
        return stored

    @rule(
        target=claims,
        conn=conns,
        owner=owners,
        limit=st.integers(min_value=1, max_value=4),
        claim_ttl=ttls,
    )
    def claim_due_jobs(self, conn: int, owner: str, limit: int, claim_ttl: float) -> Any:
        claimed: list[ClaimedJob] = self.both(
            conn, lambda e: e.claim_due_jobs(owner, limit, claim_ttl)
        )
        assert len(claimed) <= limit
        assert len({c.key for c in claimed}) == len(claimed), "a job claimed twice at once"
        delay = self.both(conn, lambda e: e.next_job_delay())
        pending = {job.key for job in self.both(conn, lambda e: e.list_jobs())}
        if int(claim_ttl * _US) > 0:  # else the claims expire at once and are due again
            if len(claimed) < limit:
                # everything due was claimed: nothing is due any more
                assert delay is None or delay > 0
            assert not pending & {c.key for c in claimed}, "a claimed job is still listed"
        return multiple(*(Claim(conn, c.key, owner, c.claim) for c in claimed))

    @rule(
        conn=conns,
        owner=owners,
        picks=st.lists(st.tuples(job_keys, tokens), max_size=3),
        claim_ttl=ttls,
    )
    def renew_random_claims(
        self, conn: int, owner: str, picks: list[tuple[str, int]], claim_ttl: float
    ) -> None:
        self.both(conn, lambda e: e.renew_job_claims(owner, picks, claim_ttl))

    @rule(claim=claims, claim_ttl=ttls, other_conn=st.booleans())
    def renew_claim(self, claim: Claim, claim_ttl: float, other_conn: bool) -> None:
        conn = self._sibling(claim.conn) if other_conn else claim.conn
        renewed = self.both(
            conn, lambda e: e.renew_job_claims(claim.owner, [(claim.key, claim.claim)], claim_ttl)
        )
        assert renewed in ([], [claim.key])

    @rule(claim=claims, other_conn=st.booleans())
    def complete_claim(self, claim: Claim, other_conn: bool) -> None:
        conn = self._sibling(claim.conn) if other_conn else claim.conn
        self.both(conn, lambda e: e.complete_job(claim.key, claim.owner, claim.claim))

    @rule(conn=conns, key=job_keys, owner=owners, claim=tokens)
    def complete_random(self, conn: int, key: str, owner: str, claim: int) -> None:
        self.both(conn, lambda e: e.complete_job(key, owner, claim))

    @rule(conn=conns, key=job_keys)
    def cancel_job(self, conn: int, key: str) -> None:
        pending = {job.key for job in self.both(conn, lambda e: e.list_jobs())}
        cancelled = self.both(conn, lambda e: e.cancel_job(key))
        assert cancelled == (key in pending), "cancel reports whether the job was pending"
        assert key not in self._stored_keys(conn)

    @rule(conn=conns)
    def list_jobs(self, conn: int) -> None:
        jobs = self.both(conn, lambda e: e.list_jobs())
        order = [(job.run_at_us, job.key) for job in jobs]
        assert order == sorted(order)

    @rule(conn=conns)
    def next_job_delay(self, conn: int) -> None:
        delay = self.both(conn, lambda e: e.next_job_delay())
        assert delay is None or delay >= 0

    @rule(conn=conns)
    def list_leases(self, conn: int) -> None:
        self.both(conn, lambda e: e.list_leases())

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def same_observable_state(self) -> None:
        now = self.now_us()
        for conn, (namespace, _) in enumerate(CONNECTIONS):
            leases = self.both(conn, lambda e: e.list_leases())
            names = [lease.name for lease in leases]
            assert names == sorted(set(names)), "at most one live lease per name"
            expected = {
                name: lease
                for (ns, name), lease in self.leases.items()
                if ns == namespace and lease.owner is not None and lease.expires_us > now
            }
            assert {lease.name: (lease.owner, lease.token) for lease in leases} == {
                name: (lease.owner, lease.token) for name, lease in expected.items()
            }
            for lease in leases:
                assert lease.expires_in == (expected[lease.name].expires_us - now) / _US
            self.both(conn, lambda e: e.list_jobs())
            self.both(conn, lambda e: e.next_job_delay())

    @invariant()
    def siblings_agree(self) -> None:
        # Two connections to one namespace see the same data.
        for engines in (self.memory, self.sqlite):
            assert engines[0].list_leases() == engines[1].list_leases()
            assert engines[0].list_jobs() == engines[1].list_jobs()
            assert engines[0].next_job_delay() == engines[1].next_job_delay()


EngineComparison.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineComparison = EngineComparison.TestCase


# -- regressions found by the state machine ---------------------------------------------------


def _engine_pair(tmp: Path, clock: ManualClock) -> list[Backend]:
    return [
        MemoryBackend(MemoryState(), "ns", clock),
        SQLiteBackend(str(tmp / "regression.db"), "ns", clock=clock),
    ]


def test_claims_of_equal_due_times_go_in_key_order(tmp_path: Path) -> None:
    """SQLite used to claim ties in insertion order; the reference claims by (due, key)."""
    clock = ManualClock()
    for engine in _engine_pair(tmp_path, clock):
        try:
            now = engine.now_us()
            engine.put_jobs([NewJob(k, now - _US, "null") for k in ("k3", "k1", "k2")])
            first = engine.claim_due_jobs("o", 1, 10.0)
            rest = engine.claim_due_jobs("o", 5, 10.0)
            assert [c.key for c in first] == ["k1"]
            assert [c.key for c in rest] == ["k2", "k3"]
        finally:
            engine.close()


def test_sub_microsecond_claim_ttl_claims_each_job_once_per_call(tmp_path: Path) -> None:
    """MemoryBackend used to claim a job again within one call when its claim (ttl < 1 µs)
    was due again at once, handing one job twice to the same scheduler."""
    clock = ManualClock()
    for engine in _engine_pair(tmp_path, clock):
        try:
            now = engine.now_us()
            engine.put_jobs([NewJob("k", now - _US, "null")])
            claimed = engine.claim_due_jobs("o", 5, 1e-7)
            assert [(c.key, c.claim) for c in claimed] == [("k", 1)]
            # The claim has already expired, so the next call may take it over.
            assert [(c.key, c.claim) for c in engine.claim_due_jobs("p", 5, 10.0)] == [("k", 2)]
        finally:
            engine.close()
