"""soak compare: committed runs against an expected table, a real A/B run, noise, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from soak.analyze import analyze_run
from soak.cli import app
from soak.compare import build_compare, compare_sides, open_sides
from soak.compare.build import Analyses
from soak.compare.core import FIXED, NEW_FAILURE, NOT_AVAILABLE, UNCHANGED, Side
from soak.compare.render import table_rows, text_report
from soak.compare.stats import HistogramBlocks, quantile_ci, two_proportion_p
from soak.errors import UsageError
from soak.histogram import Histogram
from soak.runs import text_table
from tests.data.make_compare_runs import EXPECTED, HEALTHY, RUNS, Shape, write_synthetic
from tests.rundir_factory import FakeRun, FakeTarget, write_run

BASE = "20261118T110640Z_nightly_v1.4.1"
CANDIDATE = "20261119T120640Z_nightly_v1.4.2"
AB_RUN = "20261121T131003Z_demo_ab"
HEADER = ("metric", "base", "candidate", "change", "verdict")


def verdicts(comparison) -> dict[str, str]:
    return {row.name: row.verdict for row in comparison.rows}


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory):
    """The committed 1.4.1 -> 1.4.2 pair, compared and written once."""
    return build_compare([BASE, CANDIDATE], RUNS, out_dir=tmp_path_factory.mktemp("cmp"))


@pytest.fixture(scope="module")
def ab(tmp_path_factory: pytest.TempPathFactory):
    """The recorded 40 s demo run (built-in target, faulty and --patched at once)."""
    return build_compare([str(RUNS / AB_RUN)], RUNS, out_dir=tmp_path_factory.mktemp("ab"))


def test_committed_runs_match_the_expected_table(committed) -> None:
    table = text_table([HEADER, *table_rows(committed.comparison)])
    assert table + "\n" == EXPECTED.read_text(), (
        "compare table changed; if on purpose, regenerate with "
        "python -m tests.data.make_compare_runs --table > tests/data/compare_expected.txt"
    )
    found = verdicts(committed.comparison)
    assert found["threads.growth_per_hour"] == found["stalls.rate"] == FIXED
    assert found["errors.rate"] == NEW_FAILURE  # candidate fails errors.rate < 1%
    assert committed.comparison.verdict == "mixed"
    assert committed.comparison.warnings == []  # same profile, load, host, duration


def test_compare_files_and_json_contract(committed) -> None:
    document = json.loads(committed.json_path.read_text())
    assert document["schema_version"] == 1 and document["paired"] is False
    assert document["base"]["run_id"] == BASE and document["candidate"]["target"] == "app"
    assert document["counts"]["fixed"] == 2 and document["counts"]["new failure"] == 1
    stall = next(m for m in document["metrics"] if m["name"] == "stalls.rate")
    assert stall["p_value"] < 0.01 and stall["base_criteria"] == "fail"
    assert stall["candidate_criteria"] == "pass" and stall["criteria"] == ["stalls.count == 0"]
    growth = next(m for m in document["metrics"] if m["name"] == "threads.growth_per_hour")
    assert growth["base_ci"][0] > growth["candidate_ci"][1]  # non-overlapping CIs
    page = committed.html_path.read_text()
    assert page.count("data:image/png;base64,") == len(committed.plot_paths) == 7
    assert "<script" not in page and "new failure" in page
    text = committed.markdown_path.read_text()
    assert "](plots/threads.png)" in text and "| error rate | 0% | 1.9% |" in text


def test_ab_run_fixes_threads_and_stalls(ab) -> None:
    comparison = ab.comparison
    assert comparison.paired and comparison.warnings == []
    assert (comparison.base.target, comparison.candidate.target) == ("unpatched", "patched")
    found = verdicts(comparison)
    assert found["threads.growth_per_hour"] == FIXED
    assert found["stalls.rate"] == FIXED
    assert found["loop_lag.max"] == FIXED
    assert NEW_FAILURE not in found.values() and "regressed" not in found.values()


def test_ab_by_target_names_matches_the_one_run_form(ab) -> None:
    run = str(RUNS / AB_RUN)
    base, candidate = open_sides([f"{run}:unpatched", f"{run}:patched"], RUNS)
    assert base.analysis is candidate.analysis  # one analysis: paired by time
    assert verdicts(compare_sides(base, candidate)) == verdicts(ab.comparison)


@pytest.mark.parametrize("seed", [11, 23, 37])
def test_noise_alone_is_unchanged_everywhere(tmp_path: Path, seed: int) -> None:
    one = write_synthetic(tmp_path, HEALTHY, seed, 1_795_000_000.0, "a")
    two = write_synthetic(tmp_path, HEALTHY, seed + 1, 1_795_010_000.0, "b")
    comparison = compare_sides(*open_sides([str(one), str(two)], tmp_path))
    assert {row.verdict for row in comparison.rows} == {UNCHANGED}, [
        (row.label, row.reason) for row in comparison.rows if row.verdict != UNCHANGED
    ]
    assert comparison.verdict == UNCHANGED and comparison.warnings == []


def test_criterion_flip_within_noise_is_not_fixed_but_a_new_failure_counts(
    tmp_path: Path,
) -> None:
    checks = ["stalls.count == 0", "replies.count > 1000"]
    few = write_run(
        tmp_path / "a",
        FakeRun(duration_s=600, checks=checks, targets=[FakeTarget(stalls_per_interval=0)]),
    )
    one_stall = write_run(
        tmp_path / "b",
        FakeRun(duration_s=600, checks=checks, targets=[FakeTarget(stalls_per_interval=0)]),
    )
    chats = one_stall / "chats.jsonl"  # one stall in 1,200 turns: within noise
    lines = chats.read_text().splitlines()
    lines[3] = lines[3].replace('"stall":0', '"stall":1').replace('"ok":10', '"ok":9')
    chats.write_text("\n".join(lines) + "\n")
    forward = compare_sides(*open_sides([str(few), str(one_stall)], tmp_path))
    backward = compare_sides(*open_sides([str(one_stall), str(few)], tmp_path))
    stall_forward = next(r for r in forward.rows if r.name == "stalls.rate")
    stall_backward = next(r for r in backward.rows if r.name == "stalls.rate")
    assert stall_forward.verdict == NEW_FAILURE and "within noise" in stall_forward.reason
    assert stall_backward.verdict == UNCHANGED and "within noise" in stall_backward.reason
    replies = next(r for r in forward.rows if r.name == "replies.count")  # criterion-only row
    assert replies.test == "criterion" and replies.verdict == UNCHANGED


def test_missing_side_is_not_available_and_warnings_name_differences(tmp_path: Path) -> None:
    short = write_run(tmp_path / "a", FakeRun(duration_s=300, loop_lag_field=None))
    long = write_run(tmp_path / "b", FakeRun(duration_s=900))
    manifest = json.loads((long / "manifest.json").read_text())
    manifest["host"]["hostname"] = "other-box"
    manifest["profile_name"] = "staging"
    (long / "manifest.json").write_text(json.dumps(manifest))
    comparison = compare_sides(*open_sides([str(short), str(long)], tmp_path))
    lag = next(r for r in comparison.rows if r.name == "loop_lag.p99")
    assert lag.verdict == NOT_AVAILABLE and "loop_lag_field" in lag.reason
    kinds = {note.kind for note in comparison.warnings}
    assert {"profile", "duration", "host"} <= kinds


def test_levels_at_the_end_of_runs_of_different_length_are_not_compared(tmp_path: Path) -> None:
    """A leak of 60 threads/h reaches 60 more threads in a run three times as long: that
    is the same build, not a regression (nor, the other way round, a fix)."""
    leak = [FakeTarget(threads=lambda s: 20 + s // 60)]
    short = write_run(tmp_path / "a", FakeRun(duration_s=1200, targets=leak))
    long = write_run(tmp_path / "b", FakeRun(duration_s=3600, targets=leak))
    comparison = compare_sides(*open_sides([str(short), str(long)], tmp_path))
    rows = {row.name: row for row in comparison.rows}
    end = rows["threads.end"]
    assert end.verdict == NOT_AVAILABLE and "20m00s vs 1h00m" in end.reason
    assert rows["threads.growth_per_hour"].verdict == UNCHANGED  # the rate is comparable
    text = text_report(comparison)
    assert f"threads at end: {NOT_AVAILABLE}: not compared: the runs last" in text


def test_a_large_change_called_unchanged_says_why_in_the_terminal(committed) -> None:
    text = text_report(committed.comparison)
    why = next(line for line in text.splitlines() if line.startswith("disconnect rate: "))
    assert "unchanged" in why and "turns" in why  # the counts behind the -100%


def test_side_selection_errors_say_what_to_do(tmp_path: Path) -> None:
    run = str(RUNS / AB_RUN)
    with pytest.raises(UsageError, match="pick one with"):
        open_sides([run, str(RUNS / BASE)], RUNS)
    with pytest.raises(UsageError, match="no target 'nope'"):
        open_sides([f"{run}:nope", str(RUNS / BASE)], RUNS)
    with pytest.raises(UsageError, match="give a second run"):
        open_sides([str(RUNS / BASE)], RUNS)
    analysis = Analyses().get(RUNS / BASE)
    with pytest.raises(UsageError, match="both"):
        compare_sides(Side(analysis, "app"), Side(analysis, "app"))


def _soak(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "soak", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_gates_on_fail_on_levels(tmp_path: Path) -> None:
    common = ["compare", BASE[:12], "latest~1", "--root", str(RUNS), "--out", str(tmp_path)]
    gated = _soak(*common)  # default --fail-on new-failure: the error rate
    assert gated.returncode == 1, gated.stdout + gated.stderr
    assert "new failure" in gated.stdout and "--fail-on new-failure: error rate" in gated.stderr
    assert (tmp_path / "compare.html").is_file() and (tmp_path / "compare.json").is_file()
    never = _soak(*common, "--fail-on", "never")
    assert never.returncode == 0 and "thread growth" in never.stdout
    bad = _soak(*common, "--fail-on", "sometimes")
    assert bad.returncode == 2 and "not a level" in bad.stderr and "Traceback" not in bad.stderr
    missing = _soak("compare", "no-such-run", "latest", "--root", str(RUNS))
    assert missing.returncode == 2 and "soak runs" in missing.stderr


def test_cli_ab_run_passes_regressed_gate(tmp_path: Path) -> None:
    proc = _soak("compare", "latest", "--root", str(RUNS), "--out", str(tmp_path),
                 "--fail-on", "regressed")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "paired by time" in proc.stdout
    lines = {line.split()[0] + " " + line.split()[1]: line for line in proc.stdout.splitlines()
             if line.startswith(("thread growth", "stall rate"))}  # fmt: skip
    assert lines["thread growth"].endswith("fixed") and lines["stall rate"].endswith("fixed")


def test_quantile_rows_use_short_runs_honestly(tmp_path: Path) -> None:
    """Too few chat intervals for a bootstrap: no interval, so n/a, never a claimed change."""
    shape = Shape(duration_s=240.0, idle_from_s=240.0, warmup_s=0.0)
    one = write_synthetic(tmp_path, HEALTHY, 1, 1_795_000_000.0, "a", shape)
    slow = replace(HEALTHY, ttft_median_s=0.5)
    two = write_synthetic(tmp_path, slow, 2, 1_795_010_000.0, "b", shape)
    row = next(
        r
        for r in compare_sides(*open_sides([str(one), str(two)], tmp_path)).rows
        if r.name == "ttft.p50"
    )
    assert row.verdict == NOT_AVAILABLE and "too little data" in row.reason


def test_analysis_is_shared_for_one_run() -> None:
    analyses = Analyses()
    assert analyses.get(RUNS / AB_RUN) is analyses.get(RUNS / AB_RUN / ".")
    assert (
        analyze_run(RUNS / AB_RUN).summary.to_json()["targets"]["unpatched"]["chats"]["stalls"] > 0
    )


def test_two_proportion_z_test_matches_the_textbook() -> None:
    # 50/100 vs 40/100: pooled 0.45, z = 1.421, two-sided p = 0.155
    assert two_proportion_p(50, 100, 40, 100) == pytest.approx(0.1552, abs=5e-4)
    assert two_proportion_p(0, 500, 0, 800) == 1.0
    assert two_proportion_p(3, 0, 1, 10) is None
    assert two_proportion_p(17, 1204, 0, 1180) < 1e-4


def test_bootstrap_interval_covers_the_quantile_and_narrows_with_data() -> None:
    rng = np.random.default_rng(5)
    truth = float(np.exp(np.log(0.2) + 0.4 * 1.6449))  # p95 of lognormal(ln 0.2, 0.4)
    widths = []
    for intervals in (20, 400):
        hists = []
        for _ in range(intervals):
            hist = Histogram()
            for value in rng.lognormal(np.log(0.2), 0.4, 50):
                hist.add(float(value))
            hists.append(hist.to_json())
        low, high = quantile_ci(HistogramBlocks.from_histograms(hists), 0.95)
        assert low * 0.97 <= truth <= high * 1.03  # within a histogram bucket
        widths.append(high - low)
    assert widths[1] < widths[0]
    assert quantile_ci(HistogramBlocks.from_histograms([{}, {"5": 1}]), 0.5) is None


@pytest.mark.parametrize("command", ["compare", "release", "runs"])
def test_commands_have_help_with_an_example_and_a_readme_section(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.output
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"### `soak {command}" in readme
