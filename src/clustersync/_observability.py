"""Traces (OpenTelemetry API) and structured log records.

Tracing is optional and costs nothing without it: when ``opentelemetry-api`` (extra
``clustersync[otel]``) is not installed no span is made. With the API but no SDK
configured, its no-op tracer makes the spans (cheaply). Metrics are in
:mod:`clustersync._metrics`.

Every state change is logged through :func:`log_event` with its facts as ``extra``
fields, so that a JSON formatter (structlog, python-json-logger) picks them up:
``event`` (``"lock.acquired"``, ``"job.failed"``, ...), ``lock`` or ``job`` (the name or
key — ``name`` is taken by ``LogRecord``), and as they apply ``kind``, ``type``,
``token``, ``identity``, ``attempt``, ``duration_s``, ``lateness_s`` and ``error``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_propagate: Any
_trace: Any
try:  # pragma: no cover - exercised with and without the extra
    import opentelemetry.propagate as _propagate
    import opentelemetry.trace as _trace
except ImportError:  # the extra "otel" is not installed
    _propagate = _trace = None

#: The tracer, once; a proxy that follows a tracer provider configured later.
_tracer: Any = None if _trace is None else _trace.get_tracer("clustersync")


def current_trace() -> str:
    """The W3C ``traceparent`` of the current span (stored with a one-shot job so that
    its run links to the span that scheduled it), or ``""``."""
    if _propagate is None:
        return ""
    carrier: dict[str, Any] = {}
    _propagate.inject(carrier)
    traceparent = carrier.get("traceparent", "")
    return traceparent if isinstance(traceparent, str) else ""


def _links(traceparent: str) -> list[Any]:
    """A link to the span that ``traceparent`` names, if it is valid."""
    if not traceparent:
        return []
    context = _propagate.extract({"traceparent": traceparent})
    span_context = _trace.get_current_span(context).get_span_context()
    return [_trace.Link(span_context)] if span_context.is_valid else []


class JobSpan:
    """What a job run tells its span: its outcome, once known."""

    def __init__(self, span: Any) -> None:
        self._span = span

    def failed(self, error: BaseException) -> None:
        if self._span is not None:
            self._span.record_exception(error)
            self._span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(error)))


@contextmanager
def job_span(
    key: str, job_type: str, attempt: int, lateness: float, traceparent: str = ""
) -> Iterator[JobSpan]:
    """The span ``clustersync.job.run`` around one callback run, current while it runs
    (so the callback's own spans are its children), linked to the span that scheduled a
    one-shot job."""
    if _tracer is None:
        yield JobSpan(None)
        return
    attributes = {
        "clustersync.job.key": key,
        "clustersync.job.type": job_type,
        "clustersync.job.attempt": attempt,
        "clustersync.job.lateness_s": lateness,
    }
    with _tracer.start_as_current_span(
        "clustersync.job.run",
        kind=_trace.SpanKind.CONSUMER,
        attributes=attributes,
        links=_links(traceparent),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield JobSpan(span)


class LockWaitSpan:
    """The span ``clustersync.lock.wait`` of one acquisition that had to wait: started
    by :meth:`waiting` (when an attempt found the lock held) with the time the
    acquisition began, so an uncontended acquisition makes no span."""

    __slots__ = ("_kind", "_name", "_span", "_started_ns")

    def __init__(self, name: str, kind: str, started_ns: int) -> None:
        self._name = name
        self._kind = kind
        self._started_ns = started_ns
        self._span: Any = None

    def waiting(self) -> None:
        """The acquisition waits: the span starts (once)."""
        if self._span is None and _tracer is not None:
            self._span = _tracer.start_span(
                "clustersync.lock.wait",
                attributes={
                    "clustersync.lock.name": self._name,
                    "clustersync.lock.kind": self._kind,
                },
                start_time=self._started_ns,
            )

    def end(self, result: str) -> None:
        span = self._span
        if span is not None:
            self._span = None
            span.set_attribute("clustersync.lock.result", result)
            if result == "error":
                span.set_status(_trace.Status(_trace.StatusCode.ERROR))
            span.end()


def now_ns() -> int:
    """The wall clock in ns, as spans count it."""
    return time.time_ns()


def log_event(
    logger: logging.Logger,
    level: int,
    event: str,
    message: str,
    *args: Any,
    exc_info: bool = False,
    **fields: Any,
) -> None:
    """One log record of a state change, with ``event`` and ``fields`` as ``extra``."""
    if logger.isEnabledFor(level):
        fields["event"] = event
        logger.log(level, message, *args, exc_info=exc_info, extra=fields, stacklevel=2)
