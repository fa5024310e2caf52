"""Verdicts rest on evidence: pass, fail, or inconclusive when the run cannot carry one.

Synthetic runs (tests/rundir_factory.py) state each situation a real run got wrong: a run
stopped early, a warm-up as long as the load, criteria that measure nothing, a p99 of a
dozen replies, a pool still filling up at the end of a short run, a profile with no
criteria at all.
"""

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from soak.analyze import summarize
from soak.criteria import capped_warmup
from soak.errors import EXIT_INCONCLUSIVE
from soak.report import build_report
from soak.rundir import EVENTS, STATUS_ABORTED, STATUS_COMPLETED, TARGET_REPLACED, JsonlWriter
from tests.rundir_factory import FakeRun, FakeTarget, write_run

HEALTHY_CHECKS = ["stalls.count == 0", "ttft.p95 < 2s", "threads.growth_per_hour < 5"]


def _summary(tmp_path: Path, run: FakeRun) -> dict:
    return summarize(write_run(tmp_path, run))


def test_a_stopped_run_is_never_a_plain_pass(tmp_path: Path) -> None:
    summary = _summary(
        tmp_path, FakeRun(duration_s=600, status=STATUS_ABORTED, checks=HEALTHY_CHECKS)
    )
    app = summary["targets"]["app"]
    assert all(c["status"] == "pass" for c in summary["criteria"])
    assert summary["verdict"] == app["verdict"] == "inconclusive"
    assert app["verdict_reasons"][0].startswith("the run was aborted after 10m")


def test_the_same_run_completed_passes(tmp_path: Path) -> None:
    summary = _summary(tmp_path, FakeRun(duration_s=600, checks=HEALTHY_CHECKS))
    assert summary["verdict"] == "pass"
    assert summary["targets"]["app"]["verdict_reasons"] == ["meets all 3 criteria"]


def test_a_failure_in_a_stopped_run_is_still_a_failure(tmp_path: Path) -> None:
    leak = FakeTarget(threads=lambda s: 50 + s // 10)
    run = FakeRun(targets=[leak], duration_s=600, status=STATUS_ABORTED, checks=HEALTHY_CHECKS)
    assert _summary(tmp_path, run)["verdict"] == "fail"


def test_warmup_as_long_as_the_load_is_cut_so_the_leak_is_still_seen(tmp_path: Path) -> None:
    """warmup == duration fitted only the idle tail and said 0/h for a build whose threads
    went 93 -> 106 while loaded."""
    leak = FakeTarget(threads=lambda s: 93 + min(s, 400) // 30)
    run = FakeRun(
        targets=[leak], duration_s=500, idle_from_s=400, warmup_s=400, checks=HEALTHY_CHECKS
    )
    summary = _summary(tmp_path, run)
    assert summary["warmup_s"] == 500 / 3 and "more than a third" in summary["warmup_note"]
    app = summary["targets"]["app"]
    assert app["threads"]["trend"] == "growing" and app["verdict"] == "fail"


def test_capped_warmup_leaves_a_short_warmup_alone() -> None:
    assert capped_warmup(60.0, 3600.0) == (60.0, None)
    seconds, note = capped_warmup(3600.0, 600.0)
    assert seconds == 200.0 and "trends are fitted after 3m20s" in note


def test_a_fit_over_too_little_of_the_load_is_no_evidence(tmp_path: Path) -> None:
    """The process was found only near the end of the load: the fit sees a sliver of it."""
    leak = FakeTarget(threads=lambda s: 50 + s // 60, restart_at_s=540)
    run = FakeRun(targets=[leak], duration_s=600, checks=["threads.growth_per_hour < 5"])
    summary = _summary(tmp_path, run)
    app = summary["targets"]["app"]
    # the longest segment is the first (540 s of 600): covered; now make the loaded span long
    assert app["threads"]["doubt"] is None
    run = FakeRun(
        targets=[FakeTarget(threads=lambda s: 50.0, restart_at_s=200)],
        duration_s=600,
        idle_from_s=250,
        checks=["threads.growth_per_hour < 5"],
    )
    app = _summary(tmp_path / "second", run)["targets"]["app"]
    assert app["threads"]["doubt"] and "covers" in app["threads"]["doubt"]
    assert app["verdict"] == "inconclusive"


def test_criteria_that_measure_nothing_make_it_inconclusive(tmp_path: Path) -> None:
    """4 of 6 criteria skipped used to read `PASS -`."""
    checks = [
        *HEALTHY_CHECKS[:2],
        "idle_cpu.percent < 5",
        "health.diagnostics.queue_depth.max < 10",
        "ping.p99 < 1s",
        "uss.growth_mb_per_hour < 10",
    ]
    summary = _summary(tmp_path, FakeRun(duration_s=600, checks=checks))
    app = summary["targets"]["app"]
    assert [c["status"] for c in summary["criteria"]].count("skipped") == 4
    assert app["verdict"] == "inconclusive"
    assert app["verdict_reasons"] == [
        "4 of 6 criteria not judged (idle_cpu.percent, health.diagnostics.queue_depth.max, "
        "ping.p99, uss.growth_mb_per_hour)"
    ]


def test_a_percentile_of_a_handful_of_replies_is_not_judged(tmp_path: Path) -> None:
    run = FakeRun(duration_s=30, turns_per_interval=2, checks=["ttft.p99 < 2s", "ttft.p50 < 2s"])
    summary = _summary(tmp_path, run)
    p99, p50 = summary["criteria"]
    assert summary["targets"]["app"]["chats"]["ttft"]["samples"] == 12
    assert p99["status"] == "inconclusive" and "only 12 samples" in p99["message"]
    assert "(100 needed for ttft.p99)" in p99["message"]
    assert p50["status"] == "pass"


def test_zero_stalls_in_a_handful_of_turns_is_not_a_pass(tmp_path: Path) -> None:
    run = FakeRun(duration_s=10, turns_per_interval=3, checks=["stalls.count == 0"])
    [check] = _summary(tmp_path, run)["criteria"]
    assert check["status"] == "inconclusive" and "only 6 turns ended" in check["message"]
    stalled = FakeRun(
        targets=[FakeTarget(stalls_per_interval=1)],
        duration_s=10,
        turns_per_interval=3,
        checks=["stalls.count == 0"],
    )
    [check] = _summary(tmp_path / "stalled", stalled)["criteria"]
    assert check["status"] == "fail"  # a stall that happened is evidence however few turns


def test_a_pool_still_filling_up_at_the_end_is_inconclusive_not_failed(tmp_path: Path) -> None:
    """Three steps, the last late: a pool filling up and a slow leak look alike."""
    pool = FakeTarget(threads=lambda s: 8 + 4 * (s >= 100) + 4 * (s >= 250) + 4 * (s >= 560))
    run = FakeRun(targets=[pool], duration_s=600, checks=["threads.growth_per_hour < 5"])
    summary = _summary(tmp_path, run)
    app = summary["targets"]["app"]
    [check] = summary["criteria"]
    assert app["threads"]["trend"] == "undecided"
    assert check["status"] == "inconclusive" and "run longer" in check["message"]
    assert app["verdict"] == "inconclusive"


def test_a_pool_that_filled_early_passes_and_a_steady_leak_fails(tmp_path: Path) -> None:
    pool = FakeTarget(name="pool", threads=lambda s: min(16, 4 + s // 40))
    leak = FakeTarget(name="leak", threads=lambda s: 16 + s // 40)
    run = FakeRun(targets=[pool, leak], duration_s=900, checks=["threads.growth_per_hour < 5"])
    targets = _summary(tmp_path, run)["targets"]
    assert (targets["pool"]["threads"]["trend"], targets["pool"]["verdict"]) == ("plateau", "pass")
    assert (targets["leak"]["threads"]["trend"], targets["leak"]["verdict"]) == ("growing", "fail")


def test_a_profile_without_criteria_is_judged_by_the_defaults(tmp_path: Path) -> None:
    summary = _summary(tmp_path, FakeRun(duration_s=600))
    assert summary["criteria_source"] == "default"
    assert {c["expression"] for c in summary["criteria"]} == {
        "threads.hours_to_limit > 7d",
        "fds.hours_to_limit > 7d",
        "rss.hours_to_limit > 7d",
        "ok.rate >= 99%",
        "stalls.count == 0",
    }
    assert {c["scope"] for c in summary["criteria"]} == {"default"}
    assert summary["verdict"] == "pass"
    collect = _summary(tmp_path / "collect", FakeRun(duration_s=600, write_chats=False))
    assert len(collect["criteria"]) == 3 and collect["verdict"] == "pass"
    leak = FakeTarget(threads=lambda s: 50 + s // 5)  # 720/h: 4,096 in under 6 h
    leaking = _summary(tmp_path / "leak", FakeRun(targets=[leak], duration_s=600))
    assert leaking["verdict"] == "fail"


def test_no_ok_turn_is_never_a_pass(tmp_path: Path) -> None:
    broken = FakeTarget(stalls_per_interval=10)
    summary = _summary(
        tmp_path, FakeRun(targets=[broken], duration_s=300, checks=["ttft.p95 < 2s"])
    )
    app = summary["targets"]["app"]
    assert app["chats"]["replies"] == 0 and app["verdict"] == "inconclusive"
    assert any("none of its 600 turns got an ok reply" in r for r in app["verdict_reasons"])


def test_ok_rate_criterion(tmp_path: Path) -> None:
    flaky = FakeTarget(stalls_per_interval=1)
    run = FakeRun(targets=[flaky], duration_s=300, checks=["ok.rate >= 99%"])
    [check] = _summary(tmp_path, run)["criteria"]
    assert check["status"] == "fail" and np.isclose(check["value"], 0.9)
    assert check["message"].startswith("540 ok replies in 600 turns (90%)")


def test_report_of_an_inconclusive_run_exits_4_and_junit_says_why(tmp_path: Path) -> None:
    run = FakeRun(duration_s=600, status=STATUS_ABORTED, checks=HEALTHY_CHECKS)
    result = build_report(write_run(tmp_path / "runs", run), tmp_path / "out")
    assert result.verdict == "inconclusive" and result.exit_code == EXIT_INCONCLUSIVE
    root = ET.parse(result.junit_path).getroot()
    [verdict] = [case for case in root.iter("testcase") if case.get("name") == "verdict"]
    skipped = verdict.find("skipped")
    assert skipped is not None and "the run was aborted" in skipped.get("message", "")
    assert root.get("skipped") == "1" and root.get("failures") == "0"
    assert "INCONCLUSIVE" in result.markdown_path.read_text().upper()
    page = result.html_path.read_text()
    assert 'class="badge inconclusive verdict"' in page and "the run was aborted" in page


def test_status_completed_run_without_gaps_keeps_pass(tmp_path: Path) -> None:
    run = FakeRun(duration_s=600, status=STATUS_COMPLETED, checks=HEALTHY_CHECKS)
    assert _summary(tmp_path, run)["evidence_gaps"] == []


def _allocator(period_s: float, settle_teeth: int):
    """RSS of a cache cleared every `period_s`: each tooth climbs 40 MB and drops back; the
    allocator keeps 3 MB more after each of the first `settle_teeth` clears, then no more."""
    noise = np.random.default_rng(11).normal(0, 0.5, 20000)

    def rss(s: float) -> float:
        tooth = int(s // period_s)
        return 100 + 3 * min(tooth, settle_teeth) + 40 * ((s % period_s) / period_s) + noise[int(s)]

    return rss


def test_teeth_that_rise_then_hold_are_a_plateau_not_a_leak(tmp_path: Path) -> None:
    """CPython's allocator keeps a high-water mark: the first clears give back less."""
    target = FakeTarget(rss_mb=_allocator(60.0, settle_teeth=4))
    run = FakeRun(targets=[target], duration_s=1500, checks=["rss.growth_mb_per_hour < 20"])
    summary = _summary(tmp_path, run)
    app = summary["targets"]["app"]
    assert app["rss"]["envelope"] and app["rss"]["drops"] >= 20
    assert app["rss"]["growth_overall_per_hour"] > 15  # a fit of the raw samples: near failing
    assert app["rss"]["trend"] in ("plateau", "flat") and app["verdict"] == "pass"


def test_the_same_allocator_in_a_short_run_is_not_failed(tmp_path: Path) -> None:
    """2.5 minutes of it (the run that got `FAIL rss.growth_mb_per_hour`): not a verdict."""
    target = FakeTarget(rss_mb=_allocator(20.0, settle_teeth=4))
    run = FakeRun(targets=[target], duration_s=150, checks=["rss.growth_mb_per_hour < 100"])
    summary = _summary(tmp_path, run)
    [check] = summary["criteria"]
    assert check["status"] != "fail" and summary["verdict"] != "fail"


def test_a_growth_whose_interval_reaches_across_the_limit_is_not_judged(tmp_path: Path) -> None:
    noise = np.random.default_rng(5).normal(0, 3.0, 1000)
    target = FakeTarget(rss_mb=lambda s: 200 + noise[int(s)])
    run = FakeRun(targets=[target], duration_s=300, checks=["rss.growth_mb_per_hour < 10"])
    [check] = _summary(tmp_path, run)["criteria"]
    assert check["status"] == "inconclusive"
    assert "reaches across the limit; run longer" in check["message"]


def test_compare_says_when_a_side_is_inconclusive(tmp_path: Path) -> None:
    from soak.compare import compare_sides, open_sides

    done = write_run(tmp_path / "a", FakeRun(duration_s=600, checks=HEALTHY_CHECKS))
    cut = write_run(
        tmp_path / "b", FakeRun(duration_s=600, status=STATUS_ABORTED, checks=HEALTHY_CHECKS)
    )
    comparison = compare_sides(*open_sides([str(done), str(cut)], tmp_path))
    said = [note.message for note in comparison.warnings]
    assert any("is inconclusive (the run was aborted" in message for message in said), said


def test_a_target_whose_place_another_program_took_is_not_a_pass(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, FakeRun(duration_s=600, checks=HEALTHY_CHECKS))
    with JsonlWriter(run_dir / EVENTS) as events:
        events.write(
            {"t": 1_795_000_300.0, "source": "collector", "kind": TARGET_REPLACED,
             "target": "app", "message": "app: a different program now holds its place"}
        )  # fmt: skip
    summary = summarize(run_dir)
    app = summary["targets"]["app"]
    assert all(c["status"] == "pass" for c in summary["criteria"])
    assert summary["verdict"] == app["verdict"] == "inconclusive"
    assert any("different program" in gap for gap in app["evidence_gaps"])
