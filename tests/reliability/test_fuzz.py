"""Bad input, fuzzed: every public entry point of the threading API (and an asyncio smoke
test) with hypothesis-generated names, keys, props, datetimes, URLs, namespaces, timeouts
and ttls, on every store (memory, SQLite, Redis, PostgreSQL).

Each call must either behave correctly — checked against an oracle written from the
documented rules (docs/guarantees.md, docs/choices.md), so that valid input is never refused
either — or raise a typed error: a ``ClusterSyncError`` of the error tree, or a plain
``ValueError``/``TypeError`` for argument validation. Never a driver error, an
``OverflowError``, a ``RecursionError`` or a ``UnicodeError`` (a ``ValueError`` subclass,
excluded on purpose). Every example must leave the store as it found it (same pending
jobs, same live leases), and the store must still work once the fuzzing is over.

Budgets are small by default (a few seconds per store); ``CLUSTERSYNC_SOAK=1`` multiplies
them by twenty.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as daytime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clustersync as cs
from clustersync import aio
from tests.conftest import selected_backends
from tests.servers import PostgresServer, RedisServer, free_port, start_or_skip

from .conftest import soak_mode

T = TypeVar("T")

EXAMPLES = 500 if soak_mode() else 25
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
pytestmark = pytest.mark.timeout(3600 if soak_mode() else 120)

MAX_TTL = 30 * 86_400.0
MAX_PROPS_BYTES = 65_536
MAX_DEPTH = 100
#: A job every fuzzed store holds, far in the future (never fires: no scheduler runs).
EXISTING = "fuzz-existing"
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)

# -- the error contract -------------------------------------------------------------------

FORBIDDEN = (UnicodeError, OverflowError, RecursionError)
TYPED_MODULES = {"builtins", "clustersync.exceptions"}


def check_error(exc: BaseException, *, unavailable_ok: bool = False) -> None:
    """``exc`` is a typed error a user may be handed."""
    assert not isinstance(exc, FORBIDDEN), f"untyped error escaped: {exc!r}"
    assert isinstance(exc, cs.ClusterSyncError | ValueError | TypeError), f"unexpected {exc!r}"
    assert type(exc).__module__ in TYPED_MODULES, f"driver error escaped: {exc!r}"
    if not unavailable_ok:
        assert not isinstance(exc, cs.StoreUnavailableError), f"store failed: {exc!r}"


def attempt(call: Callable[[], T], *, unavailable_ok: bool = False) -> tuple[bool, Any]:
    """``(True, result)``, or ``(False, error)`` for a typed error (anything else fails)."""
    try:
        return True, call()
    except Exception as exc:
        check_error(exc, unavailable_ok=unavailable_ok)
        return False, exc


# -- oracles: the documented rules, written independently of the library -------------------


def valid_name(value: object) -> bool:
    if not isinstance(value, str) or not 1 <= len(value) <= 255 or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def as_seconds(value: object) -> float | None:
    """The float a duration argument stands for, or None if it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def valid_ttl(value: object) -> bool:
    seconds = as_seconds(value)
    return seconds is not None and 0 < seconds <= MAX_TTL


def valid_timeout(value: object) -> bool:
    """``None`` or a non-negative number (huge ones mean "forever")."""
    if value is None:
        return True
    seconds = as_seconds(value)
    return seconds is not None and not math.isnan(seconds) and seconds >= 0


def as_utc(value: object) -> datetime | None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return None


def depth(value: object) -> int:
    """How deeply lists and objects nest in ``value`` (iterative: any depth)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list | tuple):
            stack += [(child, level + 1) for child in item]
        elif isinstance(item, dict):
            stack += [(child, level + 1) for child in item.values()]
        else:
            continue
        deepest = max(deepest, level + 1)
    return deepest


def props_roundtrip(value: object) -> tuple[bool, object]:
    """Whether ``value`` is acceptable props, and what decoding them gives back."""
    if depth(value) > MAX_DEPTH:
        return False, None
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError):
        return False, None
    return size <= MAX_PROPS_BYTES, json.loads(text)


# -- strategies -----------------------------------------------------------------------------

ANY_CHAR = st.characters(codec=None, exclude_categories=())  # controls, surrogates, all
TEXT = st.text(ANY_CHAR, max_size=12)
EDGE_NAMES = [
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "a\udfff",
    "x" * 255,
    "x" * 256,
    "é" * 255,
    "😀" * 255,
    "😀" * 256,
    "x" * 10_000,
    " ",
    "\t\n\r",
    "\x7f\x1b[0m",
    "%",
    "%25",
    "}",
    "{",
    "\\",
    "*",
    "?[]^",
    "m:a",
    "j:a",
    "}:l:m:x",
    "\u2028",
    "\ufeff",
    "\U0010ffff",
    "'; DROP TABLE clustersync_jobs; --",
    EXISTING,
]
NOT_STRINGS = [None, 0, 1.5, b"bytes", ["a"], ("a",), bytearray(b"x"), object()]
names = st.one_of(
    TEXT,
    st.sampled_from(EDGE_NAMES),
    st.integers(0, 10_000).map(lambda n: "k" * n),
    st.text(ANY_CHAR, min_size=250, max_size=260),
    st.sampled_from(NOT_STRINGS),
)
numbers = st.one_of(
    st.floats(),  # NaN, ±inf, ±0.0, subnormals, huge
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from(
        [
            0,
            -1,
            1e-300,
            5e-324,
            1e308,
            math.inf,
            -math.inf,
            math.nan,
            10**400,
            -(10**400),
            2**63,
            True,
            False,
            None,
            "1",
            b"1",
            [1],
            Decimal("1"),
            timedelta(seconds=1),
            MAX_TTL,
            MAX_TTL + 1,
            0.001,
            0.5,
            2.5,
            60,
        ]
    ),
)


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for index in range(levels):
        value = [value] if index % 2 else {"k": value}
    return value


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(ANY_CHAR))


def json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(
        st.text(ANY_CHAR, max_size=5), inner, max_size=4
    )


props = st.one_of(
    st.recursive(json_leaf, json_containers, max_leaves=20),
    st.integers(0, 3000).map(nested),
    st.sampled_from(
        [
            nested(MAX_DEPTH),
            nested(MAX_DEPTH + 1),
            10**4000,  # a long but valid JSON number
            10**5000,  # beyond Python's int-to-str limit
            [math.nan],
            {"a": -math.inf},
            object(),
            {1: "int key"},
            {(1, 2): "tuple key"},
            {None: 1},
            {1, 2},
            b"bytes",
            datetime(2020, 1, 1, tzinfo=UTC),
            Decimal("1.5"),
            ("tuple", 1),
            complex(1, 2),
            "\ud800",
            "\x00",
        ]
    ),
    st.integers(MAX_PROPS_BYTES - 40, MAX_PROPS_BYTES + 40).map(lambda n: "x" * (n - 2)),
    st.integers(16_370, 16_400).map(lambda n: "😀" * n),  # 4 bytes each, around the limit
)
fixed_offsets = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
).map(timezone)
run_ats = st.one_of(
    st.datetimes(
        min_value=datetime.min,
        max_value=datetime.max,
        timezones=st.one_of(st.none(), st.just(UTC), fixed_offsets, st.timezones()),
    ),
    st.sampled_from(
        [
            datetime(1, 1, 1, tzinfo=UTC),
            datetime.max.replace(tzinfo=UTC),
            datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),  # before year 1 in UTC
            datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))),  # after 9999 in UTC
            datetime(2020, 1, 1),
            date(2020, 1, 1),
            "2020-01-01T00:00:00Z",
            1_700_000_000,
            None,
            daytime(1),
        ]
    ),
)
intervals = st.one_of(
    st.timedeltas(),
    st.sampled_from(
        [
            timedelta(0),
            timedelta(microseconds=-1),
            timedelta.min,
            timedelta.max,
            timedelta(days=400 * 365),
            timedelta(microseconds=1),
            5,
            None,
            "PT5M",
        ]
    ),
)


# -- stores -----------------------------------------------------------------------------------


def scheduler(store: cs.Store) -> cs.JobOnceScheduler:
    return cs.get_job_once_scheduler(store)


def snapshot(store: cs.Store) -> tuple[list[Any], list[Any]]:
    """What must not change: the pending jobs and the live leases."""
    jobs = [
        (job.key, job.run_at, json.dumps(job.props, sort_keys=True))
        for job in scheduler(store).list_scheduled_jobs()
    ]
    leases = [(lease.name, lease.owner, lease.token) for lease in store._ops.list_leases()]
    return jobs, leases


def assert_store_works(store: cs.Store) -> None:
    mutex = cs.Mutex(store, "fuzz-still-works", ttl=30)
    assert mutex.acquire(timeout=10)
    mutex.release()
    jobs = scheduler(store)
    jobs.schedule_once("fuzz-still-works", FAR_FUTURE, {"ok": True})
    assert any(job.key == "fuzz-still-works" for job in jobs.list_scheduled_jobs())
    assert jobs.cancel("fuzz-still-works")


@pytest.fixture
def store(store_url: str, namespace: str) -> Iterator[cs.Store]:
    """The store under test, holding the job ``EXISTING``; checked unchanged and working
    at the end."""
    with cs.open_store(store_url, namespace=namespace) as opened:
        scheduler(opened).schedule_once(EXISTING, FAR_FUTURE, {"kept": True})
        before = snapshot(opened)
        yield opened
        assert snapshot(opened) == before
        assert_store_works(opened)


# -- mutex ----------------------------------------------------------------------------------


def test_mutex_names_and_ttls(store: cs.Store) -> None:
    @FUZZ
    @given(name=names, ttl=numbers)
    def run(name: object, ttl: object) -> None:
        before = snapshot(store)
        ok, mutex = attempt(lambda: cs.Mutex(store, name, ttl=ttl))  # type: ignore[arg-type]
        assert ok == (valid_name(name) and valid_ttl(ttl)), (name, ttl, mutex)
        if ok:
            seconds = as_seconds(ttl)
            assert seconds is not None
            acquired = mutex.acquire(blocking=False)
            if seconds >= 2:
                assert acquired, "a free mutex was refused"
                assert isinstance(mutex.token, int)
                assert mutex.locked()
                held = {lease.name: lease.token for lease in store._ops.list_leases()}
                assert held.get("m:" + str(name)) == mutex.token
            if acquired:
                try:
                    mutex.release()
                except cs.LockLostError:
                    assert seconds < 2, "a long lease was lost"
            assert mutex.token is None
        assert snapshot(store) == before

    run()


def test_acquire_timeouts(store: cs.Store) -> None:
    holder = cs.Mutex(store, "fuzz-held", ttl=60)
    assert holder.acquire(blocking=False)
    try:

        @FUZZ
        @given(blocking=st.booleans(), timeout=numbers)
        def run(blocking: bool, timeout: object) -> None:
            before = snapshot(store)
            expected = valid_timeout(timeout) and (blocking or timeout is None)
            seconds = as_seconds(timeout)
            # Long or endless waits go to a free mutex; short ones to the held one.
            free = expected and (timeout is None or (seconds is not None and seconds > 0.05))
            mutex = cs.Mutex(store, "fuzz-free" if free else "fuzz-held", ttl=60)
            began = time.monotonic()
            ok, got = attempt(lambda: mutex.acquire(blocking, timeout))  # type: ignore[arg-type]
            assert ok == expected, (blocking, timeout, got)
            if ok:
                assert got is free
                if free:
                    mutex.release()
                else:
                    assert seconds is not None
                    assert time.monotonic() - began < seconds + 5
            assert snapshot(store) == before

        run()
    finally:
        holder.release()


# -- one-shot jobs ----------------------------------------------------------------------------


def check_scheduled(store: cs.Store, key: str, run_at: datetime, value: object) -> None:
    listed = scheduler(store).list_scheduled_jobs()
    order = [(job.run_at, job.key) for job in listed]
    assert order == sorted(order), "pending jobs must be listed by run_at, then key"
    mine = [job for job in listed if job.key == key]
    assert len(mine) == 1
    assert mine[0].run_at == run_at
    assert mine[0].run_at.utcoffset() == timedelta(0)
    assert mine[0].props == value


def test_schedule_once(store: cs.Store) -> None:
    jobs = scheduler(store)

    @FUZZ
    @given(key=names, run_at=run_ats, value=props)
    def run(key: object, run_at: object, value: object) -> None:
        before = snapshot(store)
        props_ok, decoded = props_roundtrip(value)
        when = as_utc(run_at)
        valid = valid_name(key) and when is not None and props_ok
        ok, job = attempt(lambda: jobs.schedule_once(key, run_at, value))  # type: ignore[arg-type]
        if valid and key == EXISTING:
            assert isinstance(job, cs.DuplicateJobError)
            assert job.key == EXISTING
        else:
            assert ok == valid, (key, run_at, job)
        if ok:
            assert when is not None
            assert job.key == key
            assert job.run_at == when
            assert job.props == decoded
            check_scheduled(store, str(key), when, decoded)
            assert jobs.cancel(str(key)) is True
            assert jobs.cancel(str(key)) is False
        assert snapshot(store) == before

    run()


entries = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["a", "b", EXISTING, "", "\x00"]) | names,
            st.sampled_from([FAR_FUTURE, datetime(2000, 1, 1, tzinfo=UTC)]) | run_ats,
        ),
        st.tuples(
            st.sampled_from(["a", "b", "c"]) | names,
            st.sampled_from([FAR_FUTURE, datetime(2000, 1, 1)]) | run_ats,
            st.sampled_from([None, {"a": 1}, [math.nan], object()]) | props,
        ),
        st.sampled_from([("k",), ("k", FAR_FUTURE, None, "extra"), (), "ab", None, 5]),
    ),
    max_size=5,
)


def test_schedule_many_is_all_or_nothing(store: cs.Store) -> None:
    jobs = scheduler(store)

    @FUZZ
    @given(batch=entries)
    def run(batch: list[Any]) -> None:
        before = snapshot(store)
        expected: list[tuple[str, datetime, object]] = []
        valid = True
        for entry in batch:
            if not isinstance(entry, tuple) or len(entry) not in (2, 3):
                valid = False
                break
            key, run_at, *rest = entry
            props_ok, decoded = props_roundtrip(rest[0] if rest else None)
            when = as_utc(run_at)
            if not (valid_name(key) and when is not None and props_ok):
                valid = False
                break
            expected.append((key, when, decoded))
        keys = [key for key, _, _ in expected]
        duplicate = valid and (len(set(keys)) < len(keys) or EXISTING in keys)
        ok, result = attempt(lambda: jobs.schedule_many(batch))
        assert ok == (valid and not duplicate), (batch, result)
        if duplicate:
            assert isinstance(result, cs.DuplicateJobError)
        if ok:
            assert [(j.key, j.run_at, j.props) for j in result] == expected
            for key, when, decoded in expected:
                check_scheduled(store, key, when, decoded)
            for key in keys:
                assert jobs.cancel(key)
        assert snapshot(store) == before

    run()


def test_cancel_keys(store: cs.Store) -> None:
    jobs = scheduler(store)

    @FUZZ
    @given(key=names.filter(lambda k: k != EXISTING))
    def run(key: object) -> None:
        before = snapshot(store)
        ok, result = attempt(lambda: jobs.cancel(key))  # type: ignore[arg-type]
        assert ok == valid_name(key), (key, result)
        if ok:
            assert result is False  # nothing pending under that key
        assert snapshot(store) == before

    run()


def test_scheduler_callbacks_and_stop_timeouts(store: cs.Store) -> None:
    jobs = scheduler(store)
    fired: list[str] = []

    @FUZZ
    @given(callback=st.sampled_from([None, 1, "f", b"x", object()]), timeout=numbers)
    def run(callback: object, timeout: object) -> None:
        before = snapshot(store)
        ok, _ = attempt(lambda: jobs.set_callback(callback))  # type: ignore[arg-type]
        assert not ok, "a non-callable callback was accepted"
        if not jobs._handlers:
            ok, error = attempt(jobs.start)
            assert isinstance(error, cs.SchedulerError)
        jobs.set_callback(lambda key, props: fired.append(key))
        jobs.start()
        ok, stopped = attempt(lambda: jobs.stop(timeout=timeout))  # type: ignore[arg-type]
        assert ok == valid_timeout(timeout), (timeout, stopped)
        seconds = as_seconds(timeout)
        if ok and (timeout is None or (seconds is not None and seconds >= 5)):
            assert stopped is True
        if not (ok and stopped):
            assert jobs.stop(timeout=10) is True
        assert not jobs.started
        assert snapshot(store) == before

    run()
    assert fired == [], "a job far in the future fired"


# -- recurring jobs -----------------------------------------------------------------------------


def test_recurring_job_keys_ttls_intervals_and_close_timeouts(store: cs.Store) -> None:
    @FUZZ
    @given(
        key=names,
        ttl=numbers,
        interval=intervals,
        rounded=st.booleans(),
        close_timeout=numbers,
    )
    def run(
        key: object, ttl: object, interval: object, rounded: bool, close_timeout: object
    ) -> None:
        before = snapshot(store)
        helper = cs.wait_for_rounded_interval if rounded else cs.wait_for_interval
        ok, next_wait = attempt(lambda: helper(interval))  # type: ignore[arg-type]
        assert ok == (isinstance(interval, timedelta) and interval > timedelta(0)), interval
        if not ok:
            next_wait = cs.wait_for_interval(timedelta(hours=1))
        ran = threading.Event()
        ok, job = attempt(lambda: cs.schedule(store, key, next_wait, ran.set, ttl=ttl))  # type: ignore[arg-type]
        assert ok == (valid_name(key) and valid_ttl(ttl)), (key, ttl, job)
        if ok:
            closed, result = attempt(lambda: job.close(timeout=close_timeout))
            assert closed == valid_timeout(close_timeout), (close_timeout, result)
            assert job.close(timeout=30) is True
        assert snapshot(store) == before

    run()


def test_interval_and_cron_helpers() -> None:
    now = datetime(2030, 6, 1, tzinfo=UTC)

    @FUZZ
    @given(
        interval=intervals,
        expression=st.one_of(
            TEXT,
            st.sampled_from(
                ["* * * * *", "0 0 30 2 *", "0 0 29 2 *", "*/0 * * * *", "61 * * * *", "@hourly"]
            ),
            st.sampled_from(NOT_STRINGS),
        ),
        tz=st.one_of(TEXT, st.sampled_from(["UTC", "Europe/Paris", "../etc/passwd", ""])),
        last=st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
    )
    def run(interval: object, expression: object, tz: object, last: datetime | None) -> None:
        metadata = cs.JobMetadata(last)
        for helper in (cs.wait_for_interval, cs.wait_for_rounded_interval):
            ok, next_wait = attempt(lambda: helper(interval))  # type: ignore[arg-type]  # noqa: B023
            assert ok == (isinstance(interval, timedelta) and interval > timedelta(0))
            if ok:
                wait = next_wait(now, metadata)
                assert isinstance(wait, timedelta)
                assert wait >= timedelta(0)
        ok, next_wait = attempt(lambda: cs.wait_for_cron(expression, tz))  # type: ignore[arg-type]
        if ok:
            wait = next_wait(now, metadata)
            assert wait >= timedelta(0)

    run()


def test_scheduler_options() -> None:
    @FUZZ
    @given(claim_ttl=numbers, max_running=numbers, max_props_bytes=numbers)
    def run(claim_ttl: object, max_running: object, max_props_bytes: object) -> None:
        with cs.open_store("memory://") as fresh:
            ok, _ = attempt(
                lambda: cs.get_job_once_scheduler(
                    fresh,
                    claim_ttl=claim_ttl,
                    max_running=max_running,
                    max_props_bytes=max_props_bytes,
                )
            )

            def count(value: object, least: int) -> bool:
                return type(value) is int and value >= least

            expected = valid_ttl(claim_ttl) and count(max_running, 1) and count(max_props_bytes, 2)
            assert ok == expected

    run()


# -- URLs and namespaces -------------------------------------------------------------------------


def open_and_use(url: str, **options: Any) -> bool:
    """Open ``url``: True if it worked (and the store is usable), False for a typed error."""
    ok, opened = attempt(
        lambda: cs.open_store(url, namespace="fuzz-urls", **options), unavailable_ok=True
    )
    if ok:
        with opened:
            ok, _ = attempt(opened._ops.list_leases, unavailable_ok=True)
    return ok


SCHEMES = [
    "memory://",
    "MEMORY://",
    "sqlite://",
    "sqlite:///",
    "sqlite:",
    "ftp://",
    "http://",
    "mysql://",
    "redis",
    "://",
    "postgresql:/",
    " memory://",
    "unix://",
]
EDGE_URLS = [
    "memory://\x00",
    "memory://\ud800",
    "sqlite:///\x00.db",
    "sqlite:///\ud800.db",
    "redis://\ud800",
    "redis://127.0.0.1:1/\x00",
    "postgresql://\x00@127.0.0.1:1/db",
    "postgresql://\ud800",
    "postgres://[::1",
    "redis://[::1",
    "\ud800://",
    "",
]
# Never an absolute path or a way out of the test's directory (files get created).
relative = TEXT.filter(lambda text: ".." not in text and not text.startswith("/"))


def needs(backend: str) -> None:
    if backend not in selected_backends():
        pytest.skip(f"{backend} not in CLUSTERSYNC_TEST_BACKENDS")


def test_malformed_and_unknown_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative SQLite paths land here

    @FUZZ
    @given(
        url=st.one_of(
            TEXT.filter(lambda text: "://" not in text),
            st.builds(lambda scheme, rest: scheme + rest, st.sampled_from(SCHEMES), relative),
            st.builds(lambda rest: f"sqlite:///{tmp_path}/{rest}", relative),
            st.sampled_from(NOT_STRINGS[1:]),
            st.sampled_from(EDGE_URLS),
        )
    )
    def run(url: object) -> None:
        open_and_use(url)  # type: ignore[arg-type]

    run()


@pytest.fixture(scope="module")
def redis_with_password() -> Iterator[RedisServer]:
    with start_or_skip(RedisServer(requirepass="s3cret:/@pass")) as server:
        yield server


def test_redis_urls_and_credentials(request: pytest.FixtureRequest) -> None:
    needs("redis")
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    redis_with_password: RedisServer = request.getfixturevalue("redis_with_password")
    closed = free_port()

    @FUZZ
    @given(
        password=st.sampled_from([None, "", "wrong", "s3cret%3A%2F%40pass"]) | TEXT,
        server=st.sampled_from([redis_server, redis_with_password]),
        port=st.sampled_from(["real", str(closed), "0", "99999", "abc", "", "-1"]),
        db=st.sampled_from(["", "/0", "/15", "/16", "/-1", "/abc"]) | TEXT.map(lambda t: "/" + t),
        query=st.sampled_from(
            [
                "",
                "?socket_timeout=1",
                "?socket_timeout=1e400",
                "?socket_timeout=-1",
                "?socket_timeout=nan",
                "?socket_timeout=0",
                "?socket_connect_timeout=abc",
                "?health_check_interval=1e400",
                "?foo=bar",
                "?db=x",
                "?protocol=9",
                "?max_connections=0",
            ]
        )
        | TEXT.map(lambda t: "?" + t),
    )
    def run(password: str | None, server: RedisServer, port: str, db: str, query: str) -> None:
        auth = "" if password is None else f":{password}@"
        where = str(server.port) if port == "real" else port
        url = f"redis://{auth}127.0.0.1:{where}{db}{query}"
        right = server.password is None or password == "s3cret%3A%2F%40pass"
        works = open_and_use(url)
        if works:
            assert right or server.password is None, f"{url} worked with a wrong password"

    run()


def test_postgres_urls_and_credentials(request: pytest.FixtureRequest) -> None:
    needs("postgres")
    srv: PostgresServer = request.getfixturevalue("postgres_server")
    closed = free_port()

    @FUZZ
    @given(
        user=st.sampled_from([srv.user, "postgres", "nobody", ""]) | TEXT,
        password=st.sampled_from([srv.password, "wrong", ""]) | TEXT,
        port=st.sampled_from([str(srv.port), str(closed), "0", "99999", "abc"]),
        dbname=st.sampled_from([srv.dbname, "missing", ""]) | TEXT,
        query=st.sampled_from(
            [
                "",
                "?connect_timeout=abc",
                "?connect_timeout=-1",
                "?sslmode=require",
                "?sslmode=bogus",
                "?application_name=%00",
                "?foo=bar",
                "?target_session_attrs=read-only",
            ]
        ),
    )
    def run(user: str, password: str, port: str, dbname: str, query: str) -> None:
        from urllib.parse import quote

        def q(text: str) -> str:  # lone surrogates become invalid UTF-8 bytes
            return quote(text, safe="", errors="surrogatepass")

        url = f"postgresql://{q(user)}:{q(password)}@127.0.0.1:{port}/{q(dbname)}{query}"
        works = open_and_use(url)
        if works:
            assert password == srv.password, f"{url} worked with a wrong password"

    run()


def test_server_store_options(store_url: str, backend: str, store: cs.Store) -> None:
    if backend not in ("redis", "postgres", "redis-notify"):
        pytest.skip("options of the server stores")
    option_names = (
        ["socket_timeout", "connect_timeout", "max_connections", "handoff"]
        if backend.startswith("redis")
        else [
            "socket_timeout",
            "connect_timeout",
            "pool_timeout",
            "max_connections",
            "prepared_statements",
        ]
    )

    @FUZZ
    @given(name=st.sampled_from([*option_names, "bogus"]), value=numbers)
    def run(name: str, value: object) -> None:
        open_and_use(store_url, **{name: value})

    run()


#: Namespaces that are special to some store (Redis key prefixes and SCAN patterns).
EDGE_NAMESPACES = ["a\\b", "\\", "x[y]", "a]b", "*", "?", "a}b", "{a}", "%", "%7D", "}:l:m:x"]


def test_namespaces_are_validated_and_isolated(store_url: str, store: cs.Store) -> None:
    @FUZZ
    @given(
        namespace=(st.sampled_from(EDGE_NAMESPACES) | names).filter(lambda n: n != store.namespace)
    )
    def run(namespace: object) -> None:
        before = snapshot(store)
        ok, other = attempt(lambda: cs.open_store(store_url, namespace=namespace))  # type: ignore[arg-type]
        assert ok == valid_name(namespace), (namespace, other)
        if ok:
            with other:
                assert scheduler(other).list_scheduled_jobs() == []
                mutex = cs.Mutex(other, "fuzz-iso", ttl=30)
                assert mutex.acquire(blocking=False), "the namespace is not empty"
                assert [lease.name for lease in other._ops.list_leases()] == ["m:fuzz-iso"]
                assert snapshot(store) == before, "a namespace touched another one"
                mutex.release()
        assert snapshot(store) == before

    run()


# -- asyncio smoke ------------------------------------------------------------------------------


def test_aio_smoke(store_url: str, namespace: str) -> None:
    """The asyncio API validates the same way (a smaller sample of names, keys, props,
    datetimes and timeouts)."""
    loop = asyncio.new_event_loop()
    try:
        store = loop.run_until_complete(aio.open_store(store_url, namespace=namespace))
        jobs = aio.get_job_once_scheduler(store)

        async def state() -> tuple[list[Any], list[Any]]:
            listed = await jobs.list_scheduled_jobs()
            leases = await store._ops.list_leases()
            return [(j.key, j.run_at) for j in listed], [(le.name, le.token) for le in leases]

        async def example(name: object, run_at: object, value: object, timeout: object) -> None:
            before = await state()
            ok, mutex = attempt(lambda: aio.Mutex(store, name, ttl=30))  # type: ignore[arg-type]
            assert ok == valid_name(name)
            if ok:
                try:
                    got = await mutex.acquire(timeout=timeout)
                except Exception as exc:
                    check_error(exc)
                    assert not valid_timeout(timeout)
                else:
                    assert valid_timeout(timeout)
                    assert got
                    await mutex.release()
            props_ok, decoded = props_roundtrip(value)
            when = as_utc(run_at)
            try:
                job = await jobs.schedule_once(name, run_at, value)  # type: ignore[arg-type]
            except Exception as exc:
                check_error(exc)
                assert not (valid_name(name) and when is not None and props_ok)
            else:
                assert (job.run_at, job.props) == (when, decoded)
                assert await job.cancel()
            assert await state() == before

        @settings(FUZZ, max_examples=max(10, EXAMPLES // 2))
        @given(name=names, run_at=run_ats, value=props, timeout=numbers)
        def run(name: object, run_at: object, value: object, timeout: object) -> None:
            loop.run_until_complete(example(name, run_at, value, timeout))

        run()
        mutex = aio.Mutex(store, "fuzz-still-works")
        assert loop.run_until_complete(mutex.acquire(timeout=10))
        loop.run_until_complete(mutex.release())
        loop.run_until_complete(store.close())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
