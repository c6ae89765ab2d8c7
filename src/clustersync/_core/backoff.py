"""Capped, jittered exponential backoff for retrying store errors.

Unlike the Go package (which doubles up to five minutes), the cap is small — a waiter
returns to normal within ``cap`` seconds of the store coming back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays ``base * 2**n`` capped at ``cap``, with "equal jitter" (50–100 % of the step).

    Equal jitter keeps a floor (no hot retry loop) while spreading retries of many
    clients. ``reset()`` after a success.
    """

    base: float = 0.05
    cap: float = 2.0
    #: None: the ``random`` module's shared generator (reseeded in forked children).
    #: Seeding a ``random.Random()`` per instance costs ~20 µs of ``os.urandom`` and
    #: hashing, and a Backoff is created on every acquisition and release.
    rng: random.Random | None = None
    attempts: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap):
            raise ValueError("Backoff needs 0 < base <= cap")

    def next_delay(self) -> float:
        """The delay before the next retry; each call counts one failure."""
        step: float = min(self.cap, self.base * float(2 ** min(self.attempts, 62)))
        self.attempts += 1
        uniform = random.uniform if self.rng is None else self.rng.uniform
        return step / 2 + uniform(0, step / 2)

    def reset(self) -> None:
        self.attempts = 0
