"""Clocks: SystemClock and the ManualClock tests use to move time instead of sleeping."""

from __future__ import annotations

import math
import threading
import time

import pytest

import clustersync.testing
from clustersync._core.clock import SYSTEM_CLOCK, Clock, ManualClock, SystemClock


def test_system_clock_is_the_wall_clock() -> None:
    before = time.time()
    now = SYSTEM_CLOCK.time()
    after = time.time()
    assert before <= now <= after
    assert isinstance(SYSTEM_CLOCK, SystemClock)


def test_public_manual_clock_is_the_core_one() -> None:
    assert clustersync.testing.ManualClock is ManualClock
    clock: Clock = ManualClock()  # satisfies the protocol
    assert clock.time() == 1_700_000_000.0


def test_manual_clock_only_moves_when_told() -> None:
    clock = ManualClock(start=100.0)
    assert clock.time() == 100.0
    time.sleep(0.01)
    assert clock.time() == 100.0
    clock.advance(2.5)
    assert clock.time() == 102.5
    clock.advance(0)
    assert clock.time() == 102.5


@pytest.mark.parametrize("seconds", [-1.0, -1e-9, -math.inf, math.nan, math.inf])
def test_manual_clock_rejects_bad_steps(seconds: float) -> None:
    clock = ManualClock(start=100.0)
    calls: list[None] = []
    clock.add_listener(lambda: calls.append(None))
    with pytest.raises(ValueError):
        clock.advance(seconds)
    assert clock.time() == 100.0
    assert calls == []


def test_listeners_are_called_after_time_moved() -> None:
    clock = ManualClock(start=0.0)
    seen: list[tuple[str, float]] = []

    def first() -> None:
        seen.append(("first", clock.time()))  # reading the clock here must not deadlock

    def second() -> None:
        seen.append(("second", clock.time()))

    clock.add_listener(first)
    clock.add_listener(second)
    clock.advance(5)
    assert seen == [("first", 5.0), ("second", 5.0)]
    clock.remove_listener(first)
    clock.advance(1)
    assert seen[2:] == [("second", 6.0)]
    clock.remove_listener(first)  # removing twice is harmless
    clock.remove_listener(second)
    clock.advance(1)
    assert len(seen) == 3


def test_listener_may_change_listeners_and_advance_is_not_reentrant_deadlock() -> None:
    clock = ManualClock(start=0.0)
    calls: list[str] = []

    def late() -> None:
        calls.append("late")

    def once() -> None:
        calls.append("once")
        clock.remove_listener(once)
        clock.add_listener(late)

    clock.add_listener(once)
    clock.advance(1)
    assert calls == ["once"]  # listeners added during a notification wait for the next one
    clock.advance(1)
    assert calls == ["once", "late"]


def test_same_listener_twice_is_called_twice() -> None:
    clock = ManualClock()
    calls: list[None] = []

    def listener() -> None:
        calls.append(None)

    clock.add_listener(listener)
    clock.add_listener(listener)
    clock.advance(1)
    assert len(calls) == 2


def test_concurrent_advances_are_not_lost() -> None:
    clock = ManualClock(start=0.0)
    counted = [0]
    count_lock = threading.Lock()

    def listener() -> None:
        with count_lock:
            counted[0] += 1

    clock.add_listener(listener)
    threads_n, steps = 8, 1_000
    start = threading.Barrier(threads_n)

    def worker() -> None:
        start.wait()
        for _ in range(steps):
            clock.advance(1.0)
            assert clock.time() >= 1.0

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert clock.time() == float(threads_n * steps)
    assert counted[0] == threads_n * steps


def test_concurrent_listener_changes_while_advancing() -> None:
    clock = ManualClock(start=0.0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():

                def listener() -> None:
                    pass

                clock.add_listener(listener)
                clock.remove_listener(listener)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    churners = [threading.Thread(target=churn) for _ in range(4)]
    for thread in churners:
        thread.start()
    try:
        for _ in range(2_000):
            clock.advance(0.5)
    finally:
        stop.set()
        for thread in churners:
            thread.join(timeout=30)
    assert errors == []
    assert clock.time() == 1_000.0
