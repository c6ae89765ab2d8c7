"""Conformance tests of Election on every store (docs/guide/election.md)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from clustersync import aio as cs
from clustersync._concurrency import aio as shim
from clustersync.testing import inject_faults
from tests.conformance._async.conftest import eventually

#: Generous bound for "promptly" on a loaded machine.
PROMPT = 1.0


@pytest.fixture
async def other_store(store_url: str, namespace: str) -> AsyncIterator[cs.Store]:
    """A second connection to the same store and namespace: another instance."""
    opened = await cs.open_store(store_url, namespace=namespace, identity="other-instance")
    yield opened
    await opened.close()


class Recorder:
    """Records the callbacks of an election, and whether two ever overlapped."""

    def __init__(self, hold: float = 0.0) -> None:
        self.events: list[tuple[str, int | None, float]] = []
        self.overlaps = 0
        self._inside = False
        self._hold = hold

    def _enter(self, what: str, term: int | None) -> None:
        if self._inside:
            self.overlaps += 1
        self._inside = True
        self.events.append((what, term, shim.monotonic()))

    def elected(self, term: int) -> None:
        self._enter("elected", term)
        if self._hold:
            time.sleep(self._hold)  # a slow callback (plain: a worker thread in asyncio)
        self._inside = False

    def revoked(self) -> None:
        self._enter("revoked", None)
        self._inside = False

    def kinds(self) -> list[str]:
        return [what for what, _, _ in self.events]


def candidate(store: cs.Store, name: str, recorder: Recorder, ttl: float = 15.0) -> cs.Election:
    return cs.Election(
        store, name, ttl=ttl, on_elected=recorder.elected, on_revoked=recorder.revoked
    )


async def test_one_leader_with_a_term_then_handoff_on_resign(
    store: cs.Store, other_store: cs.Store
) -> None:
    first_log, second_log = Recorder(), Recorder()
    first = candidate(store, "leader", first_log)
    second = candidate(other_store, "leader", second_log)
    assert await first.leader() is None
    assert not first.is_leader
    assert first.term is None
    first.start()
    assert await first.wait_until_leader(timeout=5)
    second.start()
    assert not await second.wait_until_leader(timeout=0.3), "two leaders at once"
    assert first.is_leader
    term = first.term
    assert isinstance(term, int)
    assert await eventually(lambda: first_log.kinds() == ["elected"])
    assert first_log.events[0][1] == term
    info = await second.leader()
    assert info is not None
    assert isinstance(info, cs.LeaderInfo)
    assert (info.identity, info.term) == (store.identity, term)
    assert 0 < info.expires_in <= 15.0 + 1
    resigned_at = shim.monotonic()
    await first.resign()
    assert not first.is_leader, "resign gives leadership up at once"
    assert first.term is None
    assert await second.wait_until_leader(timeout=5)
    handoff = shim.monotonic() - resigned_at
    assert handoff < PROMPT, f"handoff took {handoff:.3f}s"
    assert second.term is not None
    assert second.term > term, "terms strictly increase"
    assert await eventually(lambda: first_log.kinds() == ["elected", "revoked"])
    assert not first.is_leader, "a resigned candidate stops campaigning"
    assert await first.stop(timeout=5)
    assert await second.stop(timeout=5)
    assert second_log.kinds() == ["elected", "revoked"], "stop waits for on_revoked"
    assert await second.leader() is None
    assert first_log.overlaps == second_log.overlaps == 0


async def test_callbacks_run_in_order_and_never_overlap(store: cs.Store) -> None:
    log = Recorder(hold=0.2)
    election = candidate(store, "ordered", log)
    for _ in range(2):
        election.start()
        election.start()  # already campaigning: nothing more
        assert await election.wait_until_leader(timeout=5)
        await election.resign()  # while on_elected still runs
        election.start()  # rejoins at once; campaigns after on_revoked
        assert await election.wait_until_leader(timeout=5)
        await election.resign()
    assert await election.stop(timeout=5)
    assert log.kinds() == ["elected", "revoked"] * 4, log.kinds()
    assert log.overlaps == 0
    terms = [term for what, term, _ in log.events if what == "elected" and term is not None]
    assert terms == sorted(set(terms)), terms


async def test_with_block_starts_and_stops(store: cs.Store) -> None:
    log = Recorder()
    async with candidate(store, "with", log) as election:
        assert await election.wait_until_leader(timeout=5)
    assert not election.is_leader
    assert log.kinds() == ["elected", "revoked"]
    assert await election.leader() is None


async def test_coroutine_callbacks_are_awaited(store: cs.Store) -> None:
    events: list[Any] = []

    async def elected(term: int) -> None:
        await shim.sleep(0.01)
        events.append(("elected", term))

    async def revoked() -> None:
        events.append("revoked")

    election = cs.Election(store, "coroutines", on_elected=elected, on_revoked=revoked)
    election.start()
    assert await election.wait_until_leader(timeout=5)
    assert await election.stop(timeout=5)
    assert [e if isinstance(e, str) else e[0] for e in events] == ["elected", "revoked"]


async def test_on_revoked_by_the_local_deadline_when_renewals_fail(
    store: cs.Store, other_store: cs.Store
) -> None:
    ttl = 0.6
    log = Recorder()
    leader = candidate(store, "renewals-fail", log, ttl=ttl)
    leader.start()
    assert await leader.wait_until_leader(timeout=5)
    faults = inject_faults(store)
    faults.fail()  # this instance loses the store
    hold = leader._lease.hold
    assert hold is not None
    deadline = hold.deadline  # renewals fail from now on: it never moves again
    assert await eventually(lambda: "revoked" in log.kinds(), 5.0)
    revoked_at = log.events[-1][2]
    # The thread API's timers may run 50 ms late; the election's own wait does not.
    assert revoked_at <= deadline + 0.1, f"on_revoked {revoked_at - deadline:.3f}s late"
    assert revoked_at >= deadline - ttl, "revoked before renewals could have failed"
    assert not leader.is_leader
    assert faults.failures["renew_lease"] >= 1
    successor = candidate(other_store, "renewals-fail", Recorder(), ttl=ttl)
    successor.start()
    assert await successor.wait_until_leader(timeout=5)
    faults.heal()
    # The old leader campaigns again (the store heals) but cannot lead while the
    # successor does.
    assert not await leader.wait_until_leader(timeout=0.3)
    assert await successor.stop(timeout=5)
    assert await leader.wait_until_leader(timeout=5)
    assert await leader.stop(timeout=5)
    assert log.kinds() == ["elected", "revoked", "elected", "revoked"]
    assert log.overlaps == 0


async def test_closing_the_store_revokes(store_url: str, namespace: str) -> None:
    store = await cs.open_store(store_url, namespace=namespace)
    log = Recorder()
    election = candidate(store, "closing", log)
    election.start()
    assert await election.wait_until_leader(timeout=5)
    await store.close()
    assert log.kinds() == ["elected", "revoked"]
    assert not election.is_leader
    with pytest.raises(cs.StoreUnavailableError):
        election.start()


async def test_leader_is_listed_and_apart_from_a_mutex(store: cs.Store) -> None:
    async with cs.Mutex(store, "shared-name"):
        election = cs.Election(store, "shared-name")
        election.start()
        assert await election.wait_until_leader(timeout=5)
        locks = await cs.list_locks(store)
        assert [(lock.kind, lock.name) for lock in locks] == [
            ("election", "shared-name"),
            ("mutex", "shared-name"),
        ]
        assert locks[0].token == election.term
        assert locks[0].holder == store.identity
        assert await election.stop(timeout=5)


async def test_invalid_arguments(store: cs.Store) -> None:
    with pytest.raises(ValueError):
        cs.Election(store, "")
    with pytest.raises(TypeError):
        cs.Election(store, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cs.Election(store, "x", ttl=0)
    with pytest.raises(ValueError):
        cs.Election(store, "x", ttl=math.inf)
    with pytest.raises(TypeError):
        cs.Election(store, "x", on_elected=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cs.Election(store, "x", on_revoked="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cs.Election("memory://", "x")  # type: ignore[arg-type]
    election = cs.Election(store, "x")
    with pytest.raises(ValueError):
        await election.wait_until_leader(timeout=-1)
    assert not await election.wait_until_leader(timeout=0)
    assert await election.stop(), "stopping an election never started is fine"
