"""The safety checker catches what it must and only that (pure, instant)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

import clustersync
from clustersync.testing.checker import (
    FencedResource,
    FenceWrite,
    Firing,
    HoldLog,
    Run,
    SafetyViolation,
    SharedFencedResource,
    check,
    check_holds,
    check_one_shot,
    check_recurring,
    check_slot_holds,
    check_writes,
    hold_violations,
    job_violations,
    run_violations,
    slot_hold_violations,
    write_violations,
)


def test_sequential_holds_pass() -> None:
    holds = [HoldLog("m", t, float(t), t + 0.5, f"p{t % 2}") for t in range(1, 50)]
    report = check_holds(holds)
    assert (report.holds, report.names, report.lost, report.told_overlaps) == (49, 1, 0, 0)


def test_overlapping_holds_are_a_violation() -> None:
    with pytest.raises(SafetyViolation, match="overlapping holds"):
        check_holds([HoldLog("m", 1, 0.0, 2.0, "a"), HoldLog("m", 2, 1.0, 3.0, "b")])


def test_overlap_is_allowed_when_the_older_lease_was_lost_and_told() -> None:
    holds = [HoldLog("m", 1, 0.0, 2.0, "a", lost=True), HoldLog("m", 2, 1.0, 3.0, "b")]
    assert check_holds(holds).told_overlaps == 1
    # The paused holder logged its start late: still the older lease that was lost.
    late = [HoldLog("m", 2, 1.0, 1.5, "b"), HoldLog("m", 1, 1.2, 3.0, "a", lost=True)]
    assert check_holds(late).told_overlaps == 1
    # But the newer one being "lost" does not excuse the older one never being told.
    with pytest.raises(SafetyViolation):
        check_holds([HoldLog("m", 1, 0.0, 2.0, "a"), HoldLog("m", 2, 1.0, 3.0, "b", lost=True)])


def test_slot_holds_allow_up_to_the_limit_at_once() -> None:
    # Three slots: holds 1-3 overlap, 4 starts when 1 ended; 5 overlaps 2, 3 and 4.
    holds = [
        HoldLog("s", 1, 0.0, 1.0, "a"),
        HoldLog("s", 2, 0.5, 3.0, "b"),
        HoldLog("s", 3, 0.6, 3.0, "c"),
        HoldLog("s", 4, 1.0, 3.0, "a"),
        HoldLog("s", 6, 3.0, 4.0, "b"),
        HoldLog("n", 1, 0.0, 9.0, "other name"),
    ]
    report = check_slot_holds(holds, limit=3)
    assert (report.holds, report.names, report.told_overlaps) == (6, 2, 0)
    with pytest.raises(SafetyViolation, match=r"3 holds at once \(limit 2\)"):
        check_slot_holds(holds, limit=2)
    too_many = [*holds, HoldLog("s", 5, 2.0, 2.5, "d")]
    _, violations = slot_hold_violations(too_many, limit=3)
    assert len(violations) == 1
    assert "4 holds at once" in violations[0]
    assert "token 5" in violations[0]


def test_slot_holds_excuse_only_holders_told_they_lost() -> None:
    holds = [
        HoldLog("s", 1, 0.0, 5.0, "paused", lost=True),
        HoldLog("s", 2, 1.0, 2.0, "a"),
        HoldLog("s", 3, 1.5, 3.0, "b"),
    ]
    assert check_slot_holds(holds, limit=2).told_overlaps == 1
    untold = [HoldLog("s", 1, 0.0, 5.0, "paused"), *holds[1:]]
    with pytest.raises(SafetyViolation, match="3 holds at once"):
        check_slot_holds(untold, limit=2)


def test_slot_tokens_must_increase_and_be_unique_across_slots() -> None:
    with pytest.raises(SafetyViolation, match="token used twice"):
        check_slot_holds([HoldLog("s", 1, 0.0, 1.0, "a"), HoldLog("s", 1, 0.5, 1.5, "b")], 2)
    with pytest.raises(SafetyViolation, match="token not increasing"):
        check_slot_holds([HoldLog("s", 5, 0.0, 1.0, "a"), HoldLog("s", 4, 2.0, 3.0, "b")], 2)


def test_other_names_may_overlap() -> None:
    check_holds([HoldLog("m", 1, 0.0, 2.0), HoldLog("n", 1, 1.0, 3.0)])


def test_tokens_must_increase_and_be_unique() -> None:
    with pytest.raises(SafetyViolation, match="token not increasing"):
        check_holds([HoldLog("m", 5, 0.0, 1.0), HoldLog("m", 4, 2.0, 3.0)])
    with pytest.raises(SafetyViolation, match="token used twice"):
        check_holds([HoldLog("m", 5, 0.0, 1.0), HoldLog("m", 5, 2.0, 3.0)])


def test_hold_ending_before_it_starts_is_a_violation() -> None:
    with pytest.raises(SafetyViolation, match="hold ends before it starts"):
        check_holds([HoldLog("m", 1, 2.0, 1.0)])


def test_all_violations_are_listed() -> None:
    holds = [HoldLog("m", 10 - i, float(i), i + 1.5) for i in range(5)]
    with pytest.raises(SafetyViolation) as info:
        check_holds(holds)
    assert len(info.value.violations) == 7  # 4 overlaps, 3 tokens out of order


def test_fenced_resource_rejects_stale_tokens() -> None:
    resource = FencedResource()
    assert resource.write(1)
    assert resource.write(2)
    assert resource.write(2)  # the same hold writing again
    assert not resource.write(1)
    assert resource.write(1, name="other")
    assert (resource.accepted, resource.rejected, resource.highest()) == (4, 1, 2)
    holds = [HoldLog("resource", 1, 0, 1, lost=True), HoldLog("resource", 2, 1, 2)]
    report = check_writes(resource.writes, holds)
    assert (report.accepted, report.rejected) == (4, 1)


def test_rejected_write_of_an_untold_holder_is_a_violation() -> None:
    writes = [FenceWrite("r", 2, True, seq=0), FenceWrite("r", 1, False, "a", seq=1)]
    with pytest.raises(SafetyViolation, match="never told"):
        check_writes(writes, [HoldLog("r", 1, 0, 1, "a"), HoldLog("r", 2, 0.5, 2)])


def test_rejected_write_of_an_unknown_hold_is_a_violation() -> None:
    writes = [FenceWrite("r", 2, True, seq=0), FenceWrite("r", 1, False, "a", seq=1)]
    with pytest.raises(SafetyViolation, match="its hold unknown"):
        check_writes(writes, [HoldLog("r", 2, 0.5, 2)])


def test_rejected_fresh_write_is_a_resource_bug() -> None:
    writes = [FenceWrite("r", 1, True, seq=0), FenceWrite("r", 2, False, seq=1)]
    with pytest.raises(SafetyViolation, match="fresh write rejected"):
        check_writes(writes)


def test_stale_accepted_write_is_a_violation() -> None:
    writes = [FenceWrite("r", 2, True, seq=0), FenceWrite("r", 1, True, "a", seq=1)]
    with pytest.raises(SafetyViolation, match="stale write accepted"):
        check_writes(writes)


def _hammer(path: str, start: int, count: int) -> None:
    with SharedFencedResource(path) as resource:
        for token in range(start, start + count * 2, 2):
            resource.write(token, name="r", holder=str(start))


def test_shared_resource_orders_writes_of_several_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "fence.journal")
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_hammer, args=(path, s, 200)) for s in (1, 2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    writes = SharedFencedResource.read(path)
    assert len(writes) == 400
    report = check_writes(writes)  # accepted tokens never go down in journal order
    assert report.accepted >= 200
    accepted = [w.token for w in writes if w.accepted]
    assert accepted == sorted(accepted)


def test_one_shot_jobs() -> None:
    firings = [Firing("a", "p1", 1.0, 1.1), Firing("b", "p2", 1.0, 1.2)]
    report = check_one_shot(["a", "b"], firings)
    assert (report.scheduled, report.fired, report.lost, report.run_twice) == (2, 2, 0, 0)
    with pytest.raises(SafetyViolation, match="never fired"):
        check_one_shot(["a", "b", "c"], firings)
    with pytest.raises(SafetyViolation, match="never scheduled"):
        check_one_shot(["a"], firings)
    twice = [*firings, Firing("a", "p2", 5.0, 5.1)]
    with pytest.raises(SafetyViolation, match="no process running it had crashed"):
        check_one_shot(["a", "b"], twice)
    assert check_one_shot(["a", "b"], twice, crashes={"p1": [3.0]}).run_twice == 1
    with pytest.raises(SafetyViolation):  # a crash after the second firing excuses nothing
        check_one_shot(["a", "b"], twice, crashes={"p1": [6.0]})


def test_one_shot_figures_tell_exactly_once_from_at_least_once() -> None:
    firings = [
        Firing("a", "p1", 1.0),
        Firing("b", "p1", 1.0),
        Firing("b", "p2", 2.0),
        Firing("b", "p3", 3.0),
        Firing("x", "p2", 1.5),
    ]
    report, violations = job_violations(["a", "b", "c"], firings)
    assert (report.scheduled, report.fired, report.lost, report.run_twice) == (3, 2, 1, 1)
    assert report.exactly_once == 1  # "a"; "b" fired at least once, but three times
    assert report.never_fired == ("c",)
    assert report.unscheduled == ("x",)
    assert dict(report.repeated) == {"b": 3}
    assert len(violations) == 4  # c never fired, x unscheduled, b fired again twice
    # After crashes the repeats are excused, yet still not "exactly once".
    report, violations = job_violations(["a", "b"], firings[:4], {"p1": [1.2], "p2": [2.2]})
    assert violations == []
    assert (report.fired, report.exactly_once, report.run_twice) == (2, 1, 1)


def test_recurring_runs() -> None:
    assert check_recurring([Run("k", 0, 1), Run("k", 1, 2), Run("j", 0.5, 3)]).runs == 3
    with pytest.raises(SafetyViolation, match="concurrent runs") as info:
        check_recurring([Run("k", 0, 3), Run("k", 1, 2), Run("k", 2.5, 4)])
    assert len(info.value.violations) == 2  # (0, 3) overlaps both later runs
    with pytest.raises(SafetyViolation, match="run ends before it starts"):
        check_recurring([Run("k", 2, 1)])
    report, violations = run_violations([Run("k", 0, 2, "p1"), Run("k", 1, 3, "p2")])
    assert (report.runs, report.keys) == (2, 1)
    assert violations == [
        "recurring job 'k': concurrent runs 'k' run by p1 [0.000000, 2.000000]"
        " and 'k' run by p2 [1.000000, 3.000000]"
    ]


def test_violations_functions_do_not_raise() -> None:
    holds, violations = hold_violations([HoldLog("m", 1, 0, 2), HoldLog("m", 2, 1, 3)])
    assert holds.holds == 2
    assert [v.split(":")[0] for v in violations] == ["overlapping holds"]
    writes, violations = write_violations([FenceWrite("r", 2, True), FenceWrite("r", 1, True)])
    assert (writes.accepted, writes.rejected, len(violations)) == (2, 0, 1)


def test_a_long_list_of_violations_is_cut_in_the_message_only() -> None:
    holds = [HoldLog("m", 1, float(i), i + 0.5) for i in range(30)]  # token 1 used 30 times
    with pytest.raises(SafetyViolation) as info:
        check_holds(holds)
    assert len(info.value.violations) == 29 + 29  # used twice, and not increasing
    message = str(info.value)
    assert message.startswith("58 hold violation(s):")
    assert message.endswith("... and 38 more")


def test_check_merges_everything() -> None:
    report = check(
        holds=[HoldLog("m", 1, 0, 1)],
        writes=[FenceWrite("m", 1, True)],
        scheduled=["a"],
        firings=[Firing("a", "p", 0)],
        runs=[Run("k", 0, 1)],
    )
    assert report.holds is not None
    assert report.holds.holds == 1
    assert report.violations == []
    bad = check(runs=[Run("k", 0, 2), Run("k", 1, 3)], scheduled=["x"], raise_on_violation=False)
    assert len(bad.violations) == 2


def test_checker_needs_only_the_standard_library() -> None:
    # Importable (as is the demo that uses it) where pytest and hypothesis are not.
    code = (
        "import sys; sys.modules['pytest'] = sys.modules['hypothesis'] = None; "
        "import clustersync.testing, clustersync.testing.checker, clustersync._demo"
    )
    src = str(Path(clustersync.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)
