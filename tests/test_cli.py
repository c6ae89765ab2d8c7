"""The ``clustersync`` command line: locks, jobs, errors and the demo.

Most tests run ``main(argv)`` in-process on a SQLite file in ``tmp_path``; a few run
``python -m clustersync`` for real (the no-traceback error path, the demo end to end and
its Ctrl-C cleanup).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import clustersync as cs
from clustersync import _demo, cli
from clustersync._core.info import format_duration
from clustersync.cli import main

SRC = str(Path(cs.__file__).resolve().parent.parent)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def store(url: str) -> Iterator[cs.Store]:
    with cs.open_store(url, namespace="default") as opened:
        yield opened


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    status, out, err = run(capsys, *argv, "--json")
    assert status == 0, err
    return json.loads(out)


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status != 0
    assert err.startswith("clustersync: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    env.pop("CLUSTERSYNC_URL", None)
    return env


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("2d", 172800),
        ("1m30s", 90),
        (" 5M ", 300),
        ("0s", 0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert cli.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "-5s", "m", "1m1h", "1.s", "5 m", "1h 30m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(cli.CLIError, match="duration"):
        cli.parse_duration(text)


def test_parse_time() -> None:
    assert cli.parse_time("2030-01-31T09:00:00Z") == datetime(2030, 1, 31, 9, tzinfo=UTC)
    assert cli.parse_time("2030-01-31T10:00:00+01:00") == datetime(2030, 1, 31, 9, tzinfo=UTC)
    assert cli.parse_time("2030-01-31 09:00z").tzinfo is UTC
    with pytest.raises(cli.CLIError, match="no timezone"):
        cli.parse_time("2030-01-31T09:00:00")
    with pytest.raises(cli.CLIError, match="no timezone"):
        cli.parse_time("2030-01-31")
    with pytest.raises(cli.CLIError, match="invalid time"):
        cli.parse_time("tomorrow")


def test_format_helpers() -> None:
    assert cli.format_time(datetime(2030, 1, 31, 9, tzinfo=UTC)) == "2030-01-31T09:00:00Z"
    assert format_duration(0.25) == "250ms"
    assert format_duration(12.34) == "12.3s"
    assert format_duration(303) == "5m03s"
    assert format_duration(59.97) == "1m00s"
    assert format_duration(7500) == "2h05m"
    assert format_duration(3 * 86400 + 4 * 3600) == "3d04h"
    assert cli.split_lease_name("m:a:b") == ("mutex", "a:b")
    assert cli.split_lease_name("j:tick") == ("job", "tick")
    assert cli.split_lease_name("x") == ("other", "x")


# -- jobs ------------------------------------------------------------------------------------


def test_jobs_schedule_list_cancel_json(capsys: pytest.CaptureFixture[str], url: str) -> None:
    before = datetime.now(UTC)
    job = run_json(capsys, "--url", url, "jobs", "schedule", "remind:42", "--in", "5m",
                   "--props", '{"user": 42, "tags": ["a"]}')  # fmt: skip
    assert job["key"] == "remind:42"
    assert job["props"] == {"user": 42, "tags": ["a"]}
    run_at = datetime.fromisoformat(job["run_at"])
    assert job["run_at"].endswith("Z")
    assert before + timedelta(minutes=5) <= run_at <= datetime.now(UTC) + timedelta(minutes=5)

    at = run_json(capsys, "--url", url, "jobs", "schedule", "later", "--at",
                  "2030-01-31T10:00:00+01:00")  # fmt: skip
    assert at == {"key": "later", "run_at": "2030-01-31T09:00:00Z", "props": None}

    listed = run_json(capsys, "--url", url, "jobs", "list")
    assert [j["key"] for j in listed] == ["remind:42", "later"]  # sorted by run_at
    assert listed[0]["props"] == {"user": 42, "tags": ["a"]}
    assert listed[1]["run_at"] == "2030-01-31T09:00:00Z"

    # The library sees what the CLI stored, in the same namespace.
    with cs.open_store(url) as store:
        keys = [j.key for j in cs.get_job_once_scheduler(store).list_scheduled_jobs()]
    assert keys == ["remind:42", "later"]

    assert run_json(capsys, "--url", url, "jobs", "cancel", "later") == {
        "key": "later",
        "cancelled": True,
    }
    assert [j["key"] for j in run_json(capsys, "--url", url, "jobs", "list")] == ["remind:42"]

    status, out, err = run(capsys, "--url", url, "jobs", "cancel", "later", "--json")
    assert json.loads(out) == {"key": "later", "cancelled": False}
    assert_one_line_error(status, err, "no pending or failed one-shot job", "'later'")


def test_jobs_human_output(capsys: pytest.CaptureFixture[str], url: str) -> None:
    status, out, _ = run(capsys, "--url", url, "jobs", "schedule", "a", "--in", "1h30m")
    assert status == 0
    assert "scheduled one-shot job 'a'" in out
    assert "in 1h29m" in out or "in 1h30m" in out
    status, out, _ = run(capsys, "--url", url, "jobs", "schedule", "past", "--at",
                         "2000-01-01T00:00:00Z", "--props", "[1, 2]")  # fmt: skip
    assert status == 0
    assert "in the past" in out

    status, out, _ = run(capsys, "--url", url, "jobs", "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "RUN", "AT", "(UTC)", "DUE", "PROPS"]
    assert lines[1].startswith("past ")
    assert "2000-01-01T00:00:00Z" in lines[1]
    assert "[1,2]" in lines[1]
    assert lines[2].startswith("a ")
    assert "null" in lines[2]

    status, out, _ = run(capsys, "--url", url, "jobs", "cancel", "a")
    assert (status, out) == (0, "cancelled one-shot job 'a'\n")
    run(capsys, "--url", url, "jobs", "cancel", "past")
    status, out, _ = run(capsys, "--url", url, "jobs", "list")
    assert status == 0
    assert out.startswith("no pending one-shot jobs in namespace 'default'")
    assert run_json(capsys, "--url", url, "jobs", "list") == []


def test_namespaces_are_separate(capsys: pytest.CaptureFixture[str], url: str) -> None:
    assert (
        run(capsys, "--url", url, "--namespace", "a", "jobs", "schedule", "k", "--in", "1m")[0] == 0
    )
    assert run_json(capsys, "--url", url, "--namespace", "b", "jobs", "list") == []
    assert len(run_json(capsys, "--url", url, "--namespace", "a", "jobs", "list")) == 1


def test_global_options_after_the_command(capsys: pytest.CaptureFixture[str], url: str) -> None:
    argv = ["jobs", "schedule", "k", "--in", "1m", "--url", url, "--namespace", "n"]
    assert run(capsys, *argv)[0] == 0
    assert run_json(capsys, "--url", url, "--namespace", "n", "jobs", "list")[0]["key"] == "k"
    assert run_json(capsys, "jobs", "list", "--url", url, "--namespace", "n")[0]["key"] == "k"
    assert run_json(capsys, "locks", "--namespace", "n", "--url", url) == []
    # After the command wins over before it.
    assert run_json(capsys, "--namespace", "x", "jobs", "list", "--url", url, "--namespace", "n")


def test_url_from_environment_and_default(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLUSTERSYNC_URL", url)
    assert run(capsys, "jobs", "schedule", "env", "--in", "1m")[0] == 0
    assert [j["key"] for j in run_json(capsys, "--url", url, "jobs", "list")] == ["env"]

    monkeypatch.delenv("CLUSTERSYNC_URL")
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "jobs", "schedule", "default", "--in", "1m")[0] == 0
    assert (tmp_path / "clustersync.db").exists()  # sqlite:///clustersync.db
    listed = run_json(capsys, "--url", "sqlite:///clustersync.db", "jobs", "list")
    assert [j["key"] for j in listed] == ["default"]


# -- locks -----------------------------------------------------------------------------------


def test_locks(capsys: pytest.CaptureFixture[str], url: str, store: cs.Store) -> None:
    status, out, _ = run(capsys, "--url", url, "locks")
    assert status == 0
    assert out.startswith("no locks held in namespace 'default'")
    assert run_json(capsys, "--url", url, "locks") == []

    running, finish = threading.Event(), threading.Event()

    def callback() -> None:
        running.set()
        finish.wait(10)

    mutex = cs.Mutex(store, "billing-export", ttl=30)
    assert mutex.acquire(timeout=5)
    job = cs.schedule(store, "nightly", cs.wait_for_interval(timedelta(hours=1)), callback)
    try:
        assert running.wait(10)
        locks = run_json(capsys, "--url", url, "locks")
        assert [(lock["kind"], lock["name"]) for lock in locks] == [
            ("job", "nightly"),
            ("mutex", "billing-export"),
        ]
        held = locks[1]
        assert held["lease"] == "m:billing-export"
        assert held["token"] == mutex.token
        assert f":{os.getpid()}:" in held["holder"]
        assert 0 < held["expires_in"] <= 30
        assert locks[0]["lease"] == "j:nightly"

        status, out, _ = run(capsys, "--url", url, "locks")
        assert status == 0
        lines = out.splitlines()
        assert lines[0].split() == ["KIND", "NAME", "HOLDER", "TOKEN", "EXPIRES", "IN"]
        assert lines[2].split()[:2] == ["mutex", "billing-export"]
        assert lines[2].split()[3] == str(mutex.token)

        # Another namespace sees nothing.
        assert run_json(capsys, "--url", url, "--namespace", "other", "locks") == []
    finally:
        finish.set()
        mutex.release()
        assert job.close(timeout=10)
    assert run_json(capsys, "--url", url, "locks") == []


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--url", "foo://x", "locks"], "unsupported store URL 'foo://x'"),
        (["--url", "sqlite://x.db", "jobs", "list"], "invalid SQLite URL"),
        (["--url", "sqlite:///", "jobs", "schedule", "k", "--in", "1s"], "no database file named"),
        (["--url", "sqlite:////nonexistent-dir-cs/x.db", "jobs", "schedule", "k", "--in", "1s"],
         "does not exist"),
        (["--url", "sqlite:////nonexistent-dir-cs/x.db", "locks"], "no SQLite store"),
        (["--url", "memory://", "demo"], "memory://"),
        (["--url", "memory://", "--namespace", "", "locks"], "namespace must not be empty"),
    ],
)  # fmt: skip
def test_store_errors(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    status, out, err = run(capsys, *argv)
    assert_one_line_error(status, err, fragment)
    assert status == 1
    assert out == ""


def test_missing_store_file_is_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for argv in (["locks"], ["jobs", "list"], ["jobs", "cancel", "k"]):
        status, _, err = run(capsys, "--url", f"sqlite:///{tmp_path / 'typo.db'}", *argv)
        assert_one_line_error(status, err, "no SQLite store at", "typo.db")
    assert not (tmp_path / "typo.db").exists()


def test_not_a_database(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not sqlite\n" * 100)
    status, _, err = run(capsys, "--url", f"sqlite:///{path}", "locks")
    assert_one_line_error(status, err, "not a database")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--at", "2030-01-31T09:00:00"], "has no timezone"),
        (["--at", "next tuesday"], "invalid time"),
        (["--in", "5 minutes"], "invalid duration"),
        (["--in", "99999999999d"], "too large"),
        (["--in", "1m", "--props", "{bad json"], "--props is not valid JSON"),
        (["--in", "1m", "--props", "x" * 10], "--props is not valid JSON"),
        (["--in", "1m", "--props", json.dumps("x" * 70000)], "limit is 65536"),
    ],
)
def test_schedule_input_errors(
    capsys: pytest.CaptureFixture[str], url: str, store: cs.Store, args: list[str], fragment: str
) -> None:
    status, out, err = run(capsys, "--url", url, "jobs", "schedule", "k", *args)
    assert_one_line_error(status, err, fragment)
    assert out == ""
    assert run_json(capsys, "--url", url, "jobs", "list") == []


def test_schedule_bad_key(capsys: pytest.CaptureFixture[str], url: str) -> None:
    status, _, err = run(capsys, "--url", url, "jobs", "schedule", "k" * 300, "--in", "1s")
    assert_one_line_error(status, err, "at most 255 characters")


def test_duplicate_key(capsys: pytest.CaptureFixture[str], url: str) -> None:
    assert run(capsys, "--url", url, "jobs", "schedule", "k", "--in", "1m", "--props", "1")[0] == 0
    status, _, err = run(capsys, "--url", url, "jobs", "schedule", "k", "--in", "2m")
    assert_one_line_error(status, err, "a one-shot job with key 'k' already exists")
    assert run_json(capsys, "--url", url, "jobs", "list")[0]["props"] == 1


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["jobs"],
        ["jobs", "schedule", "k"],
        ["jobs", "schedule", "k", "--in", "1s", "--at", "2030-01-01T00:00:00Z"],
        ["jobs", "cancel"],
        ["locks", "--frobnicate"],
        ["demo", "--workers", "many"],
    ],
)
def test_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert_one_line_error(2, err, "--help")


@pytest.mark.parametrize(
    "args", [["--workers", "0"], ["--seconds", "0.5"], ["--jobs", "-1"], ["--workers", "99"]]
)
def test_demo_argument_ranges(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    status, _, err = run(capsys, "demo", *args)
    assert_one_line_error(status, err, "must be between")


def test_ctrl_c_exits_130_quietly(
    capsys: pytest.CaptureFixture[str], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_locks", interrupted)
    assert run(capsys, "--url", url, "locks") == (130, "", "")


def test_subprocess_error_has_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clustersync", "--url", "nope://x", "jobs", "list"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_line_error(result.returncode, result.stderr, "unsupported store URL")

    result = subprocess.run(
        [sys.executable, "-m", "clustersync", "--url", f"sqlite:///{tmp_path / 'x.db'}",
         "jobs", "schedule", "k", "--at", "2030-01-01T00:00"],
        capture_output=True, text=True, env=subprocess_env(), timeout=30, check=False,
    )  # fmt: skip
    assert_one_line_error(result.returncode, result.stderr, "has no timezone")


# -- demo: verification logic ----------------------------------------------------------------


def _hold(w: str, token: int, start: float, end: float) -> dict[str, Any]:
    return {"ev": "hold", "w": w, "mono": end, "token": token, "start": start, "end": end}


def _tick(w: str, start: float, end: float) -> dict[str, Any]:
    return {"ev": "tick", "w": w, "mono": end, "start": start, "end": end}


def _fire(w: str, key: str, late: float = 0.001) -> dict[str, Any]:
    return {"ev": "fire", "w": w, "mono": 0.0, "key": key, "by": "parent", "late": late}


def _good_events() -> list[dict[str, Any]]:
    return [
        _hold("w1", 1, 0.0, 0.1),
        _hold("w2", 2, 0.1, 0.2),
        _hold("w1", 3, 0.25, 0.3),
        _tick("w1", 0.0, 0.2),
        _tick("w2", 1.3, 1.5),
        _fire("w1", "a"),
        _fire("w2", "b"),
    ]


def _verify(events: list[dict[str, Any]], **overrides: Any) -> list[_demo.Check]:
    options: dict[str, Any] = {
        "expected_jobs": {"a": "parent", "b": "w1"},
        "cancelled_key": "c",
        "cancel_ok": True,
        "exit_codes": {"w1": 0, "w2": 0},
    }
    options.update(overrides)
    return _demo.verify(events, **options)


def _failed(checks: list[_demo.Check]) -> list[str]:
    return [c.message for c in checks if not c.ok]


def test_verify_passes_on_good_events() -> None:
    checks = _verify(_good_events())
    assert _failed(checks) == []
    assert len(checks) == 7


def test_verify_detects_overlapping_holds_and_bad_tokens() -> None:
    events = [*_good_events(), _hold("w2", 2, 0.05, 0.15)]
    failed = _failed(_verify(events))
    assert any("OVERLAPPING" in m and "demo-lock" in m for m in failed)
    assert any("NOT strictly increasing" in m for m in failed)


def test_verify_detects_missing_duplicated_unexpected_and_early_jobs() -> None:
    events = [e for e in _good_events() if e.get("key") != "b"]
    events += [_fire("w2", "a"), _fire("w1", "zzz"), _fire("w1", "c"), _fire("w1", "a", -1.0)]
    failed = _failed(_verify(events))
    joined = "\n".join(failed)
    assert "missing: b" in joined
    assert "duplicated: a x3" in joined
    assert "unexpected: zzz" in joined
    assert "fired EARLY" in joined
    assert "'c' FIRED anyway" in joined


def test_verify_detects_recurring_problems_and_unclean_workers() -> None:
    events = [*_good_events(), _tick("w2", 0.1, 0.3), _tick("w1", 1.6, 1.7)]
    events.append({"ev": "error", "w": "w2", "mono": 1.0, "msg": "boom"})
    failed = _failed(_verify(events, exit_codes={"w1": 0, "w2": None}, cancel_ok=False))
    joined = "\n".join(failed)
    assert "recurring job" in joined
    assert "OVERLAPPING" in joined
    assert "too soon" in joined
    assert "1/2 workers exited cleanly (not: w2 status None)" in joined
    assert "w2: boom" in joined
    assert "did not report a removal" in joined


def test_verify_without_events_fails() -> None:
    failed = _failed(_verify([]))
    assert len(failed) >= 4


# -- demo: end to end ------------------------------------------------------------------------

_TMPDIR_RE = re.compile(r"on sqlite:///(\S+)/demo\.db")


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clustersync", "demo", "--workers", "2", "--seconds", "3"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
        timeout=50,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in result.stderr
    assert "w1 started" in out
    assert "w2 started" in out
    assert "one-shot demo-job-" in out
    assert "fired" in out
    assert "recurring job 'demo-tick' run #1" in out
    verification = out[out.index("verification:") :].splitlines()
    assert verification[-1] == "all 7 checks passed"
    checks = verification[1:-1]
    assert len(checks) == 7, out
    assert all(line.startswith("  PASS  ") for line in checks), out
    assert re.search(r"mutex 'demo-lock': \d+ holds \(w1 \d+, w2 \d+\), no two overlapping", out)
    assert re.search(r"fencing tokens strictly increasing \(1 -> \d+\)", out)
    assert "one-shot jobs: 30/30 fired exactly once" in out
    assert "cancelled job 'demo-cancelled' never fired" in out
    assert re.search(r"recurring job 'demo-tick': \d+ runs .*never overlapping", out)
    assert "2/2 workers exited cleanly, no lost lease, no errors" in out
    # Nothing left behind: the temporary directory is gone, nothing in the cwd.
    match = _TMPDIR_RE.search(out)
    assert match is not None
    assert not Path(match.group(1)).exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_demo_ctrl_c_cleans_up(tmp_path: Path) -> None:
    # Restore the default SIGINT handler in case this test runs with SIGINT ignored.
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from clustersync.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "demo", "--workers", "2", "--seconds", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "one-shot jobs scheduled" in line or not line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    text = "".join(lines) + out
    assert proc.returncode == 130, text + err
    assert err == ""
    pids = [int(p) for p in re.findall(r"started \(pid (\d+)\)", text)]
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    match = _TMPDIR_RE.search(text)
    assert match is not None
    assert not Path(match.group(1)).exists()


# -- operating: recurring jobs, breaking locks --------------------------------------------------


def test_recurring_jobs_pause_resume_trigger_and_break(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    runs: list[float] = []
    with cs.open_store(url, identity="web-1") as store:
        job = cs.schedule(
            store, "report", cs.wait_for_interval(timedelta(hours=1)), lambda: runs.append(1.0)
        )
        try:
            deadline = time.monotonic() + 10
            while (
                not runs
                or not run_json(capsys, "--url", url, "jobs", "recurring")[0]["last_outcome"]
            ):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            (listed,) = run_json(capsys, "--url", url, "jobs", "recurring")
            assert listed["key"] == "report"
            assert listed["schedule"] == "every 1h"
            assert listed["last_outcome"] == "ok"
            assert listed["instances"] == 1
            assert not listed["paused"]
            status, out, _ = run(capsys, "--url", url, "jobs", "recurring")
            assert status == 0
            assert out.splitlines()[0].split()[:3] == ["KEY", "SCHEDULE", "STATE"]
            assert run_json(capsys, "--url", url, "jobs", "pause", "report") == {
                "key": "report",
                "pause": True,
            }
            assert run_json(capsys, "--url", url, "jobs", "recurring")[0]["paused"]
            status, out, _ = run(capsys, "--url", url, "jobs", "trigger", "report")
            assert status == 0
            assert "triggered recurring job 'report'" in out
            deadline = time.monotonic() + 10
            while len(runs) < 2:
                assert time.monotonic() < deadline, "the trigger did not run the job"
                time.sleep(0.05)
            status, out, _ = run(capsys, "--url", url, "jobs", "resume", "report")
            assert status == 0
            status, _, err = run(capsys, "--url", url, "jobs", "pause", "nope")
            assert status == 1
            assert "no recurring job 'nope'" in err
        finally:
            job.close(timeout=10)
        mutex = cs.Mutex(store, "export", ttl=30)
        assert mutex.acquire()
        (lock,) = run_json(capsys, "--url", url, "locks")
        assert lock["identity"] == "web-1"
        assert run_json(capsys, "--url", url, "locks", "break", "export") == {
            "name": "export",
            "broken": True,
        }
        assert run_json(capsys, "--url", url, "locks") == []
        status, _, err = run(capsys, "--url", url, "locks", "break", "export")
        assert status == 1
        assert "not held" in err
        with pytest.raises(cs.LockLostError):
            mutex.release()
        # Semaphores (one slot by token) and election leaders.
        slots = [cs.Semaphore(store, "render", limit=2, ttl=30) for _ in range(2)]
        for sem in slots:
            assert sem.acquire()
        election = cs.Election(store, "leader", ttl=30)
        election.start()
        assert election.wait_until_leader(timeout=10)
        listed = run_json(capsys, "--url", url, "locks")
        assert [(lock["kind"], lock["name"]) for lock in listed] == [("election", "leader")]
        token = str(slots[1].token)
        assert run_json(capsys, "--url", url, "locks", "break", "render", "--token", token) == {
            "name": "render",
            "broken": True,
        }
        status, _, err = run(capsys, "--url", url, "locks", "break", "render", "--token", token)
        assert status == 1
        assert "not held" in err
        assert [h.token for h in slots[0].holders()] == [slots[0].token]
        status, out, _ = run(capsys, "--url", url, "locks", "break", "render")
        assert status == 0
        assert "broke 'render'" in out
        assert slots[0].holders() == []
        assert election.stop(timeout=10)


def test_failed_jobs_list_retry_and_cancel(capsys: pytest.CaptureFixture[str], url: str) -> None:
    attempts: list[int] = []
    retry = cs.Retry(attempts=2, backoff=timedelta(milliseconds=50))
    with cs.open_store(url) as store:
        scheduler = cs.get_job_once_scheduler(store, retry=retry)

        def callback(key: str, props: Any, context: cs.JobContext) -> None:
            attempts.append(context.attempt)
            raise ValueError(f"bad invoice {props['n']}")

        scheduler.set_callback(callback)
        scheduler.schedule_once("invoice:7", datetime.now(UTC), {"n": 7})
        scheduler.schedule_once("invoice:8", datetime.now(UTC) + timedelta(days=1), {"n": 8})
        scheduler.start()
        deadline = time.monotonic() + 10
        while not scheduler.list_failed_jobs():
            assert time.monotonic() < deadline, attempts
            time.sleep(0.02)
        scheduler.stop()
    assert attempts == [1, 2]

    (failed,) = run_json(capsys, "--url", url, "jobs", "failed")
    assert failed["key"] == "invoice:7"
    assert failed["attempts"] == 2
    assert failed["last_error"] == "ValueError: bad invoice 7"
    assert failed["props"] == {"n": 7}
    assert datetime.fromisoformat(failed["failed_at"]) <= datetime.now(UTC)
    status, out, _ = run(capsys, "--url", url, "jobs", "failed")
    assert status == 0
    assert out.splitlines()[0].split() == ["KEY", "FAILED", "ATTEMPTS", "LAST", "ERROR", "PROPS"]
    assert "ValueError: bad invoice 7" in out
    # failed jobs are not pending
    assert [j["key"] for j in run_json(capsys, "--url", url, "jobs", "list")] == ["invoice:8"]

    status, _, err = run(capsys, "--url", url, "jobs", "retry", "invoice:8")
    assert_one_line_error(status, err, "no failed one-shot job with key 'invoice:8'")
    assert run_json(capsys, "--url", url, "jobs", "retry", "invoice:7") == {
        "key": "invoice:7",
        "retried": True,
    }
    assert run_json(capsys, "--url", url, "jobs", "failed") == []
    pending = run_json(capsys, "--url", url, "jobs", "list")
    assert [j["key"] for j in pending] == ["invoice:7", "invoice:8"]
    assert datetime.fromisoformat(pending[0]["run_at"]) <= datetime.now(UTC)

    # cancel removes a failed job too
    with cs.open_store(url) as store:
        scheduler = cs.get_job_once_scheduler(store, retry=retry)
        scheduler.set_callback(lambda key, props: (_ for _ in ()).throw(ValueError("again")))
        scheduler.start()
        deadline = time.monotonic() + 10
        while not scheduler.list_failed_jobs():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        scheduler.stop()
    status, out, _ = run(capsys, "--url", url, "jobs", "cancel", "invoice:7")
    assert status == 0, out
    assert run_json(capsys, "--url", url, "jobs", "failed") == []
    status, _, err = run(capsys, "--url", url, "jobs", "cancel", "invoice:7")
    assert_one_line_error(status, err, "no pending or failed one-shot job")
