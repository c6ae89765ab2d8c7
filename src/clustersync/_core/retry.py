"""Retries of one-shot jobs whose callback raised: how long to wait before each one."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

__all__ = ["Retry"]


@dataclass(frozen=True, slots=True)
class Retry:
    """Run a one-shot job whose callback raised again later, on any instance, until it
    succeeds or ``attempts`` runs have failed; then it is kept as failed
    (``list_failed_jobs``).

    The n-th retry waits ``min(backoff × 2^(n-1), max_backoff)``, of which up to half is
    random jitter (so never less than half of it). Attempts are counted in the store: a
    run cut short by a crash counts too, and a restart does not reset the count.
    """

    attempts: int = 5
    backoff: timedelta = timedelta(seconds=10)
    max_backoff: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError(f"attempts must be an int, not {type(self.attempts).__name__}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        for name in ("backoff", "max_backoff"):
            value = getattr(self, name)
            if not isinstance(value, timedelta):
                raise TypeError(f"{name} must be a timedelta, not {type(value).__name__}")
            if value <= timedelta(0):
                raise ValueError(f"{name} must be positive, got {value}")
        if self.max_backoff < self.backoff:
            raise ValueError("max_backoff must not be shorter than backoff")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = self.max_backoff.total_seconds()
        step = self.backoff.total_seconds()
        for _ in range(retry - 1):  # doubling until the cap; no overflow for huge counts
            step *= 2
            if step >= ceiling:
                break
        step = min(step, ceiling)
        draw = (rng or random).random()
        return step / 2 + draw * step / 2
