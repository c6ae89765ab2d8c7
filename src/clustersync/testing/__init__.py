"""Helpers for testing code that uses clustersync (and for clustersync's own suite)."""

from __future__ import annotations

from .._core.clock import ManualClock
from .faults import FaultController, InjectedFault, inject_faults

__all__ = ["FaultController", "InjectedFault", "ManualClock", "inject_faults"]
