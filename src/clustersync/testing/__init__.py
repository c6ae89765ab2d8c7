"""Helpers for testing code that uses clustersync (and for clustersync's own suite)."""

from __future__ import annotations

from .._core.clock import ManualClock

__all__ = ["ManualClock"]
