"""Observability: traces (OpenTelemetry API), metrics (Prometheus) and structured logs.

Both integrations are optional and cost nothing until used: without
``opentelemetry-api`` installed no span is made, and until :func:`enable_metrics` is
called no metric is recorded (the hooks below are a single ``is None`` check).
"""

from __future__ import annotations

from typing import Any

_propagate: Any
_trace: Any
try:  # pragma: no cover - exercised with and without the extra
    import opentelemetry.propagate as _propagate
    import opentelemetry.trace as _trace
except ImportError:  # the extra "otel" is not installed
    _propagate = _trace = None


def current_trace() -> str:
    """The W3C ``traceparent`` of the current span (stored with a one-shot job so that
    its run links to the span that scheduled it), or ``""``."""
    if _propagate is None:
        return ""
    carrier: dict[str, Any] = {}
    _propagate.inject(carrier)
    traceparent = carrier.get("traceparent", "")
    return traceparent if isinstance(traceparent, str) else ""
