"""Prometheus metrics, opt-in: :func:`enable_metrics` registers them with
``prometheus_client`` (extra ``clustersync[prometheus]``).

Until then :data:`ACTIVE` is None and every hook in the library is one ``is None`` check
(measured by ``benchmarks/bench_metrics.py``). The hooks are the methods of
:class:`Metrics`; they are called from the threading and the asyncio code alike, so they
never block (the pending-jobs gauge, which reads the store, is refreshed from a cache).

Gunicorn's multi-process mode (``PROMETHEUS_MULTIPROC_DIR`` set) is supported the way
``prometheus_client`` supports it: every process writes its samples to the directory and
the scrape handler aggregates them with ``MultiProcessCollector``. Custom collectors do
not work there, so the pending-jobs gauge is then a ``mostrecent`` gauge refreshed by the
running one-shot schedulers (at most every :data:`PENDING_REFRESH` seconds each) instead
of at scrape time.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from .exceptions import ConfigurationError, StoreUnavailableError
from .stores.contract import OPERATIONS

__all__ = ["ACTIVE", "LOCK_KINDS", "Metrics", "enable_metrics"]

#: What a lock metric's ``kind`` label says: the primitive that holds the lease.
LOCK_KINDS = frozenset({"mutex", "semaphore", "election", "job"})
#: Seconds a count of pending jobs is reused, at least (a count may scan an index).
PENDING_REFRESH = 15.0

_LOCK_SECONDS: tuple[float, ...] = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    *(2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
_JOB_SECONDS: tuple[float, ...] = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    *(60.0, 300.0, 900.0, 3600.0),
)
_LATENESS_SECONDS: tuple[float, ...] = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    *(5.0, 10.0, 30.0, 60.0, 300.0),
)
_STORE_SECONDS: tuple[float, ...] = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05),
    *(0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

#: The enabled metrics, or None (the default: nothing is recorded).
ACTIVE: Metrics | None = None
_enable_lock = threading.Lock()


def multiprocess_mode() -> bool:
    """Whether ``prometheus_client`` runs in multi-process mode (gunicorn)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def enable_metrics(registry: Any = None, *, name_labels: bool = False) -> None:
    """Record Prometheus metrics of every store of this process from now on.

    ``registry`` is a ``prometheus_client.CollectorRegistry`` (the default registry when
    None). With ``name_labels=True`` the metrics of locks and recurring jobs carry their
    ``name`` as a label too (one-shot job keys never become labels: there are too many).
    Calling it again with the same arguments does nothing; with others it raises
    :class:`~clustersync.ConfigurationError`, as it does when ``prometheus_client`` is
    not installed (``pip install 'clustersync[prometheus]'``).

    The metrics (see the Observability guide): ``clustersync_lock_acquisitions_total``,
    ``clustersync_lock_wait_seconds``, ``clustersync_lock_hold_seconds``,
    ``clustersync_lock_lost_total``, ``clustersync_job_runs_total``,
    ``clustersync_job_duration_seconds``, ``clustersync_job_lateness_seconds``,
    ``clustersync_jobs_pending``, ``clustersync_store_operation_seconds``,
    ``clustersync_store_errors_total``.
    """
    global ACTIVE  # noqa: PLW0603 - the one switch every hook reads
    if not isinstance(name_labels, bool):
        raise TypeError(f"name_labels must be True or False, not {name_labels!r}")
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(
            "metrics need prometheus_client: pip install 'clustersync[prometheus]'"
        ) from None
    if registry is None:
        registry = prometheus_client.REGISTRY
    elif not isinstance(registry, prometheus_client.CollectorRegistry):
        raise TypeError(
            f"registry must be a prometheus_client CollectorRegistry, not {type(registry).__name__}"
        )
    with _enable_lock:
        if ACTIVE is not None:
            if ACTIVE.registry is registry and ACTIVE.name_labels == name_labels:
                return
            raise ConfigurationError(
                "metrics are already enabled with another registry or name_labels"
            )
        ACTIVE = Metrics(registry, name_labels)


def disable_metrics() -> None:
    """Stop recording and unregister the metrics (for tests)."""
    global ACTIVE
    with _enable_lock:
        metrics, ACTIVE = ACTIVE, None
    if metrics is not None:
        metrics.unregister()


class Metrics:
    """The metric objects, and the hooks that record into them."""

    def __init__(self, registry: Any, name_labels: bool) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.registry = registry
        self.name_labels = name_labels
        self.multiprocess = multiprocess_mode()
        named = ("name",) if name_labels else ()

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Any:
            return Counter(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: Any) -> Any:
            return Histogram(name, doc, labels, registry=registry, buckets=buckets)

        self._lock_acquisitions = counter(
            "clustersync_lock_acquisitions",
            "Acquisitions of locks by kind and result (acquired, timeout, cancelled, error).",
            ("kind", "result", *named),
        )
        self._lock_wait = histogram(
            "clustersync_lock_wait_seconds",
            "Time from the start of an acquisition until the lock was acquired.",
            ("kind", *named),
            _LOCK_SECONDS,
        )
        self._lock_hold = histogram(
            "clustersync_lock_hold_seconds",
            "Time a lock was held, until released or lost.",
            ("kind", *named),
            _LOCK_SECONDS,
        )
        self._lock_lost = counter(
            "clustersync_lock_lost", "Locks lost while held.", ("kind", *named)
        )
        self._job_runs = counter(
            "clustersync_job_runs",
            "Job callback runs by type (recurring, once) and outcome (ok, error, retry).",
            ("type", "outcome", *named),
        )
        self._job_duration = histogram(
            "clustersync_job_duration_seconds",
            "Duration of job callback runs.",
            ("type", *named),
            _JOB_SECONDS,
        )
        self._job_lateness = histogram(
            "clustersync_job_lateness_seconds",
            "Start of a job run minus its due time.",
            ("type", *named),
            _LATENESS_SECONDS,
        )
        self._store_seconds = histogram(
            "clustersync_store_operation_seconds",
            "Duration of store operations.",
            ("operation",),
            _STORE_SECONDS,
        )
        self._store_errors = counter(
            "clustersync_store_errors",
            "Store operations that failed with a store error (unreachable, timeout).",
            ("operation",),
        )
        self.pending = PendingJobs()
        self._pending_gauge: Any = None
        self._pending_collector: PendingJobsCollector | None = None
        if self.multiprocess:
            self._pending_gauge = Gauge(
                "clustersync_jobs_pending",
                "One-shot jobs stored and not failed (pending or running).",
                registry=registry,
                multiprocess_mode="mostrecent",
            )
        else:
            self._pending_collector = PendingJobsCollector(self.pending)
            registry.register(self._pending_collector)
        self._collectors = [
            self._lock_acquisitions,
            self._lock_wait,
            self._lock_hold,
            self._lock_lost,
            self._job_runs,
            self._job_duration,
            self._job_lateness,
            self._store_seconds,
            self._store_errors,
        ]
        if self._pending_gauge is not None:
            self._collectors.append(self._pending_gauge)
        if self._pending_collector is not None:
            self._collectors.append(self._pending_collector)
        self._operation_children: dict[str, tuple[Any, Any]] = {}

    def unregister(self) -> None:
        for collector in self._collectors:
            self.registry.unregister(collector)

    def _named(self, name: str) -> tuple[str, ...]:
        return (name,) if self.name_labels else ()

    # -- locks -------------------------------------------------------------------------

    def lock_acquisition(self, kind: str, name: str, result: str, waited: float) -> None:
        """An acquisition ended: ``result`` is acquired, timeout, cancelled or error."""
        self._lock_acquisitions.labels(kind, result, *self._named(name)).inc()
        if result == "acquired":
            self._lock_wait.labels(kind, *self._named(name)).observe(waited)

    def lock_held(self, kind: str, name: str, seconds: float) -> None:
        self._lock_hold.labels(kind, *self._named(name)).observe(seconds)

    def lock_lost(self, kind: str, name: str) -> None:
        self._lock_lost.labels(kind, *self._named(name)).inc()

    # -- jobs ----------------------------------------------------------------------------

    def job_run(
        self, job_type: str, name: str, outcome: str, duration: float, lateness: float
    ) -> None:
        """A callback run ended; ``name`` is the recurring job's key ("" for one-shot)."""
        labels = (job_type, *self._named(name))
        self._job_runs.labels(job_type, outcome, *self._named(name)).inc()
        self._job_duration.labels(*labels).observe(duration)
        self._job_lateness.labels(*labels).observe(max(0.0, lateness))

    # -- store operations ----------------------------------------------------------------

    def _operation(self, operation: str) -> tuple[Any, Any]:
        children = self._operation_children.get(operation)
        if children is None:
            children = (
                self._store_seconds.labels(operation),
                self._store_errors.labels(operation),
            )
            self._operation_children[operation] = children
        return children

    def pending_counted(self, store: Any, count: int) -> None:
        """A scheduler counted the pending jobs of ``store`` (multi-process mode)."""
        self.pending.record(store, count)
        if self._pending_gauge is not None:
            self._pending_gauge.set(self.pending.cached_total())

    def instrument(self, backend: Any) -> Any:
        """``backend`` with its operations timed (and their store errors counted)."""
        return _TimedBackend(backend, self)


class _TimedBackend:
    """A store backend whose contract operations record their duration and store errors;
    everything else passes through."""

    def __init__(self, backend: Any, metrics: Metrics) -> None:
        self._backend = backend
        self._metrics = metrics

    def __getattr__(self, attribute: str) -> Any:
        target = getattr(self._backend, attribute)
        if attribute not in OPERATIONS:
            return target
        seconds, errors = self._metrics._operation(attribute)
        timed: Callable[..., Any]
        if inspect.iscoroutinefunction(target):

            async def timed_async(*args: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await target(*args)
                except StoreUnavailableError:
                    errors.inc()
                    raise
                finally:
                    seconds.observe(time.perf_counter() - started)

            timed = timed_async
        else:

            def timed_sync(*args: Any) -> Any:
                started = time.perf_counter()
                try:
                    return target(*args)
                except StoreUnavailableError:
                    errors.inc()
                    raise
                finally:
                    seconds.observe(time.perf_counter() - started)

            timed = timed_sync
        setattr(self, attribute, timed)  # found directly from now on
        return timed


def _store_loop(store: Any) -> asyncio.AbstractEventLoop | None:
    loop = getattr(store, "_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


class PendingJobs:
    """How many one-shot jobs the open stores of this process hold, counted at most
    every :data:`PENDING_REFRESH` seconds per store (a count may scan an index).

    A threading store is counted by the caller (the scrape thread); an asyncio store is
    counted by a task on its event loop, so a scrape never blocks a loop or waits for
    one: it reports the last count and asks for a fresh one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # store -> (count or None, monotonic time of the count, a refresh is running)
        self._counts: weakref.WeakKeyDictionary[Any, tuple[int | None, float, bool]] = (
            weakref.WeakKeyDictionary()
        )

    def total(self, stores: list[Any]) -> int | None:
        """The jobs of ``stores`` (one count per store URL and namespace), or None if none
        was counted yet."""
        seen: dict[tuple[str, str], int] = {}
        for store in stores:
            place = (store.url, store.namespace)
            if place in seen:
                continue
            count = self.count(store)
            if count is not None:
                seen[place] = count
        return sum(seen.values()) if seen else None

    def count(self, store: Any) -> int | None:
        now = time.monotonic()
        with self._lock:
            count, at, refreshing = self._counts.get(store, (None, -PENDING_REFRESH, False))
            stale = now - at >= PENDING_REFRESH and not refreshing
            if stale:
                self._counts[store] = (count, at, True)
        if not stale or store.closed:
            return count
        loop = _store_loop(store)
        if loop is None:
            return self._refresh_sync(store, count, at)
        try:
            loop.call_soon_threadsafe(self._spawn_refresh, store, count, at)
        except RuntimeError:  # the loop is closed
            with self._lock:
                self._counts[store] = (count, at, False)
        return count

    def _refresh_sync(self, store: Any, count: int | None, at: float) -> int | None:
        try:
            fresh: int = store._ops.count_jobs()
        except Exception:
            with self._lock:
                self._counts[store] = (count, at, False)
            return count
        with self._lock:
            self._counts[store] = (fresh, time.monotonic(), False)
        return fresh

    def _spawn_refresh(self, store: Any, count: int | None, at: float) -> None:
        task = asyncio.ensure_future(self._refresh_async(store, count, at))
        _REFRESHES.add(task)
        task.add_done_callback(_REFRESHES.discard)

    async def _refresh_async(self, store: Any, count: int | None, at: float) -> None:
        try:
            fresh: int = await store._ops.count_jobs()
        except Exception:
            with self._lock:
                self._counts[store] = (count, at, False)
            return
        with self._lock:
            self._counts[store] = (fresh, time.monotonic(), False)

    def record(self, store: Any, count: int) -> None:
        """A count made elsewhere (a scheduler in multi-process mode)."""
        with self._lock:
            self._counts[store] = (count, time.monotonic(), False)

    def cached_total(self) -> int:
        """The last counts of the open stores (one per store URL and namespace)."""
        seen: dict[tuple[str, str], int] = {}
        with self._lock:
            for store, (count, _, _) in list(self._counts.items()):
                if count is not None and not store.closed:
                    seen.setdefault((store.url, store.namespace), count)
        return sum(seen.values())

    def due(self, store: Any) -> bool:
        """Whether ``store`` should be counted again (multi-process mode)."""
        with self._lock:
            _, at, refreshing = self._counts.get(store, (None, -PENDING_REFRESH, False))
        return not refreshing and time.monotonic() - at >= PENDING_REFRESH


_REFRESHES: set[asyncio.Future[None]] = set()


def open_stores() -> list[Any]:
    """Every open store of this process, of both APIs."""
    from ._async.store import _OPEN_STORES as async_stores
    from ._sync.store import _OPEN_STORES as sync_stores

    stores: list[Any] = [*list(async_stores), *list(sync_stores)]
    return [store for store in stores if not store.closed]


class PendingJobsCollector:
    """``clustersync_jobs_pending`` at scrape time (single-process mode)."""

    def __init__(self, pending: PendingJobs) -> None:
        self._pending = pending

    def describe(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        return [GaugeMetricFamily("clustersync_jobs_pending", _PENDING_DOC)]

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("clustersync_jobs_pending", _PENDING_DOC)
        total = self._pending.total(open_stores())
        if total is not None:
            family.add_metric([], float(total))
        yield family


_PENDING_DOC = "One-shot jobs stored and not failed (pending or running)."
