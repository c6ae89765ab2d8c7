"""A count of places taken without waiting, shared by threads (or one event loop)."""

from __future__ import annotations

import threading


class Places:
    """``size`` places: :meth:`take` gets one if any is free, never blocks."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take a place; False if none is free."""
        with self._lock:
            if self._free <= 0:
                return False
            self._free -= 1
            return True

    def give_back(self) -> None:
        """Give back a place taken by :meth:`take`."""
        with self._lock:
            self._free += 1
