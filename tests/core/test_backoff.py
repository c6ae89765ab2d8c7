"""Backoff for store errors: Go's wait_test intent, re-expressed for clustersync.

Go doubles the wait after each error up to five minutes (±250 ms) and polls every second
without errors. clustersync does not poll (waiters are woken by notifications), and its
error backoff is capped and jittered so that it never grows to minutes: every delay lies
in ``[step/2, step]`` with ``step = min(cap, base * 2**n)`` after ``n`` failures, and a
success (``reset()``) returns to ``base``.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustersync._core.backoff import Backoff


class _FixedJitter(random.Random):
    """An rng whose ``uniform`` always returns one end of the range."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def _step(base: float, cap: float, n: int) -> float:
    return min(cap, base * 2.0 ** min(n, 62))


# The Go table, error rows, with clustersync's defaults (base 50 ms, cap 2 s):
# each failure doubles the step until the cap; it never reaches Go's 5 minutes.
DEFAULT_STEPS = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0]


@pytest.mark.parametrize("high", [False, True])
def test_default_steps_double_up_to_the_cap(high: bool) -> None:
    backoff = Backoff(rng=_FixedJitter(high))
    delays = [backoff.next_delay() for _ in DEFAULT_STEPS]
    expected = DEFAULT_STEPS if high else [step / 2 for step in DEFAULT_STEPS]
    assert delays == pytest.approx(expected, rel=1e-12)


def test_defaults_never_grow_to_minutes() -> None:
    backoff = Backoff(rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10_000)]
    assert max(delays) <= 2.0
    assert min(delays[20:]) >= 1.0  # once capped, never below half the cap
    assert backoff.attempts == 10_000


def test_reset_returns_to_base() -> None:
    # Go: an attempt without error drops back to the base poll (1 s there).
    backoff = Backoff(base=0.1, cap=5.0, rng=random.Random(7))
    for _ in range(30):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert 0.05 <= backoff.next_delay() <= 0.1
    assert 0.1 <= backoff.next_delay() <= 0.2


def test_jitter_spreads_retries() -> None:
    delays = {Backoff(rng=random.Random(seed)).next_delay() for seed in range(50)}
    assert len(delays) > 40
    assert all(0.025 <= d <= 0.05 for d in delays)


def test_default_rng_is_random_per_instance() -> None:
    first = [Backoff().next_delay() for _ in range(20)]
    assert len(set(first)) > 1


@pytest.mark.parametrize(
    ("base", "cap"),
    [
        (0.0, 1.0),
        (-0.1, 1.0),
        (2.0, 1.0),
        (0.0, 0.0),
        (-1.0, -0.5),
        (math.nan, 1.0),
        (0.1, math.nan),
    ],
)
def test_invalid_base_or_cap_is_rejected(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(base=base, cap=cap)


def test_base_equal_to_cap_is_constant() -> None:
    backoff = Backoff(base=0.5, cap=0.5, rng=random.Random(3))
    assert all(0.25 <= backoff.next_delay() <= 0.5 for _ in range(100))


@given(
    base=st.floats(min_value=1e-4, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=1e4),
    failures=st.integers(min_value=0, max_value=200),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_every_delay_is_between_half_step_and_step(
    base: float, factor: float, failures: int, seed: int
) -> None:
    cap = base * factor
    backoff = Backoff(base=base, cap=cap, rng=random.Random(seed))
    previous_step = 0.0
    for n in range(failures):
        step = _step(base, cap, n)
        delay = backoff.next_delay()
        assert step / 2 <= delay <= step
        assert delay <= cap
        assert step >= previous_step  # the step never shrinks without a reset
        previous_step = step
    backoff.reset()
    assert base / 2 <= backoff.next_delay() <= base


@given(
    base=st.floats(min_value=1e-4, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=1e4),
    pattern=st.lists(st.booleans(), max_size=100),
)
def test_failures_and_successes_interleaved(
    base: float, factor: float, pattern: list[bool]
) -> None:
    """``True`` = a failure (next_delay), ``False`` = a success (reset)."""
    cap = base * factor
    backoff = Backoff(base=base, cap=cap, rng=random.Random(0))
    consecutive = 0
    for failed in pattern:
        if failed:
            step = _step(base, cap, consecutive)
            assert step / 2 <= backoff.next_delay() <= step
            consecutive += 1
        else:
            backoff.reset()
            consecutive = 0
        assert backoff.attempts == consecutive
