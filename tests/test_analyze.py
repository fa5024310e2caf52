"""Analysis of synthetic run directories: trends, segments, idle CPU, chats, robustness."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from soak.analyze import analyze_run, find_segments, load_run, summarize, theil_sen
from soak.analyze.chats import BUSY, IDLE, UNKNOWN, classify_samples
from soak.analyze.load import load_target_file
from soak.analyze.trend import downsample, hours_to_limit
from soak.errors import RunDirError
from soak.model import to_json
from soak.rundir import MAX_FAMILIES, PROCESS, THREADS, THREADS_OTHER, JsonlWriter, RunDir
from tests.rundir_factory import FakeRun, FakeTarget, write_run


def leaky(name: str = "leaky") -> FakeTarget:
    """One more thread every 5 minutes."""
    return FakeTarget(name=name, threads=lambda s: 50 + s // 300)


def test_theil_sen_recovers_slope_through_noise_and_outliers() -> None:
    rng = np.random.default_rng(7)
    x = np.arange(20_000, dtype=float)
    y = 3.0 + 0.002 * x + rng.normal(0, 2.0, len(x))
    y[rng.choice(len(x), 500, replace=False)] += 400  # spikes a least-squares fit would chase
    fit = theil_sen(x, y)
    assert fit is not None
    assert fit.slope == pytest.approx(0.002, rel=0.03)
    assert fit.low <= 0.002 <= fit.high and fit.low < fit.slope < fit.high
    assert fit.per_hour == pytest.approx(7.2, rel=0.03)


def test_theil_sen_handles_degenerate_input() -> None:
    assert theil_sen(np.array([1.0, 2.0]), np.array([1.0, 2.0])) is None
    assert theil_sen(np.full(10, 5.0), np.arange(10.0)) is None
    flat = theil_sen(np.arange(100.0), np.full(100, 7.0))
    assert flat is not None and (flat.slope, flat.low, flat.high) == (0.0, 0.0, 0.0)


def test_downsample_bounds_points_and_keeps_shape() -> None:
    x = np.arange(600_000, dtype=float)
    xs, ys = downsample(x, 2 * x, 1200)
    assert len(xs) <= 1200
    assert np.allclose(ys, 2 * xs)


def test_hours_to_limit() -> None:
    assert hours_to_limit(96, 100.0, 4096) == pytest.approx(40.0)
    assert hours_to_limit(96, 0.0, 4096) is None


def test_thread_leak_is_flagged_and_flat_series_passes(tmp_path: Path) -> None:
    run = FakeRun(
        targets=[leaky(), FakeTarget(name="flat")],
        checks=["threads.growth_per_hour < 5"],
    )
    summary = summarize(write_run(tmp_path, run))
    leak, flat = summary["targets"]["leaky"], summary["targets"]["flat"]
    assert leak["threads"]["growth_per_hour"] == pytest.approx(12.0, abs=1.0)
    low, high = leak["threads"]["growth_ci_per_hour"]
    assert low <= leak["threads"]["growth_per_hour"] <= high
    assert leak["threads"]["hours_to_limit"] == pytest.approx((4096 - 56) / 12, rel=0.1)
    assert leak["top_growing_family"]["family"] == "worker_N"
    assert (leak["verdict"], flat["verdict"], summary["verdict"]) == ("fail", "pass", "fail")
    assert flat["threads"]["growth_per_hour"] == 0.0 and flat["top_growing_family"] is None
    [failed] = [c for c in summary["criteria"] if c["status"] == "fail"]
    assert failed["target"] == "leaky" and "threads grow" in failed["message"]


def test_restart_splits_segments_and_fit_ignores_the_drop(tmp_path: Path) -> None:
    target = FakeTarget(threads=lambda s: 80.0 if s < 1000 else 30.0, restart_at_s=1000.0)
    run_dir = write_run(tmp_path, FakeRun(targets=[target], checks=["restarts.count == 0"]))
    analysis = analyze_run(run_dir)
    app = analysis.targets["app"]
    assert [seg.pid for seg in app.segments] == [1000, 2000]
    assert app.headline is app.segments[0]  # 999 s before the restart, 800 s after
    summary = analysis.summary.to_json()["targets"]["app"]
    assert summary["restarts"] == 1 and summary["threads"]["growth_per_hour"] == 0.0
    assert [s["headline"] for s in summary["segments"]] == [True, False]
    assert summary["verdict"] == "fail"


def test_find_segments_splits_on_create_time_too() -> None:
    process = pd.DataFrame(
        {"pid": [5, 5, 5, 5], "create_time": [1.0, 1.0, 9.0, 9.0], "elapsed": [1, 2, 3, 4.0]}
    )
    segments = find_segments(process)
    assert [(s.start, s.stop) for s in segments] == [(0, 2), (2, 4)]


def test_idle_cpu_uses_only_idle_samples(tmp_path: Path) -> None:
    run = FakeRun(targets=[FakeTarget(busy_cpu=40.0, idle_cpu=2.0)], idle_from_s=1200)
    summary = summarize(write_run(tmp_path, run))["targets"]["app"]
    assert summary["cpu"]["idle_percent"] == 2.0 and summary["cpu"]["busy_percent"] == 40.0
    # the first quiet interval follows one that ended with turns in flight: not idle
    assert summary["cpu"]["idle_samples"] == 1800 - 1205


def test_classify_samples_follows_interval_bounds() -> None:
    chats = pd.DataFrame(
        {
            "t": [10.0, 20.0, 30.0, 40.0],
            "interval_s": [10.0] * 4,
            "started": [3, 0, 0, 0],
            "turns": [3, 0, 0, 0],
            "in_flight": [0, 1, 0, 0],
        }
    )
    states = classify_samples(np.array([5.0, 10.0, 15.0, 25.0, 35.0, 40.0, 45.0]), chats)
    assert states.tolist() == [BUSY, BUSY, BUSY, UNKNOWN, IDLE, IDLE, UNKNOWN]


def test_no_idle_period_skips_idle_cpu_check(tmp_path: Path) -> None:
    run = FakeRun(checks=["idle_cpu.percent < 5"], duration_s=300)
    summary = summarize(write_run(tmp_path, run))
    [check] = summary["criteria"]
    assert check["status"] == "skipped" and check["passed"] is None
    assert "idle phase" in check["message"]
    assert summary["verdict"] == "inconclusive"  # nothing it asked for was measured
    assert summary["targets"]["app"]["verdict_reasons"] == [
        "1 of 1 criteria not judged (idle_cpu.percent)"
    ]


def test_latency_percentiles_merge_histograms(tmp_path: Path) -> None:
    run = FakeRun(targets=[FakeTarget(ttft_s=0.2, reply_s=1.5, stalls_per_interval=1)])
    summary = summarize(write_run(tmp_path, run))["targets"]["app"]
    assert summary["chats"]["ttft"]["p50"] == pytest.approx(0.2, rel=0.03)
    assert summary["chats"]["reply"]["p99"] == pytest.approx(1.5, rel=0.03)
    assert (
        summary["chats"]["turns"] == 3600
        and summary["chats"]["stalls"] == 360
        and summary["chats"]["replies"] == 3240
    )
    assert summary["chats"]["stall_rate"] == pytest.approx(0.1)


def test_loop_lag_from_health_field_in_seconds(tmp_path: Path) -> None:
    body = lambda s: {"diagnostics": {"loop_lag_ms": 200.0 if s > 1700 else 10.0}}  # noqa: E731
    run = FakeRun(
        targets=[FakeTarget(health_body=body)], warmup_s=60, checks=["loop_lag.max < 100ms"]
    )
    summary = summarize(write_run(tmp_path, run))
    app = summary["targets"]["app"]
    assert app["loop_lag"]["p50"] == pytest.approx(0.01) and app["loop_lag"]["max"] == 0.2
    assert summary["criteria"][0]["status"] == "fail"


def test_missing_loop_lag_field_is_explained(tmp_path: Path) -> None:
    run = FakeRun(loop_lag_field="diagnostics.nope", checks=["loop_lag.p99 < 1s"], duration_s=60)
    [check] = summarize(write_run(tmp_path, run))["criteria"]
    assert check["status"] == "skipped" and "'diagnostics.nope'" in check["message"]


def test_health_body_fields_are_flattened(tmp_path: Path) -> None:
    body = lambda s: {"a": {"b": 3, "c": True, "d": "x"}, "n": 1.5}  # noqa: E731
    run = load_run(write_run(tmp_path, FakeRun(targets=[FakeTarget(health_body=body)])))
    columns = set(run.targets["app"].health.columns)
    assert {"body.a.b", "body.n"} <= columns and "body.a.c" not in columns


def test_running_run_without_end_uses_last_record(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, FakeRun(status="running", duration_s=120))
    summary = summarize(run_dir)
    assert summary["status"] == "running"
    assert summary["duration_s"] == pytest.approx(120.0)


def test_torn_last_line_is_tolerated(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, FakeRun(duration_s=60))
    path = RunDir(run_dir).target_file("app", PROCESS)
    with path.open("a") as handle:
        handle.write('{"t": 1795000061.0, "pid": 10')
    assert summarize(run_dir)["targets"]["app"]["samples"] == 60


def test_unknown_format_version_is_rejected(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, FakeRun(duration_s=10))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(RunDirError, match="format_version 99"):
        summarize(run_dir)


def test_invalid_criterion_in_manifest_is_a_run_dir_error(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, FakeRun(duration_s=10, checks=["bogus.metric < 1"]))
    with pytest.raises(RunDirError, match="unknown metric 'bogus.metric'"):
        summarize(run_dir)


def test_summary_is_strict_json(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, FakeRun(targets=[FakeTarget(health_body=None)], duration_s=5))
    summary = summarize(run_dir)
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text)["targets"]["app"]["threads"]["growth_per_hour"] is None
    assert to_json({"x": float("nan"), "y": (np.float64(1.5),)}) == {"x": None, "y": [1.5]}


def test_thread_families_of_a_run_recorded_before_the_cap_stay_bounded(tmp_path):
    """A run written before the collector capped families: a new family every sample."""
    path = tmp_path / "threads.jsonl"
    with JsonlWriter(path) as out:
        for n in range(400):
            out.write({"t": 1_795_000_000.0 + n, "pid": 7, "families": {f"job-{n:x}z": 1, "a": 5}})
    frame, families = load_target_file(THREADS, path)
    assert len(frame) == 400
    assert families.shape[1] == MAX_FAMILIES + 1
    assert (families.sum(axis=1) == 6).all()  # every thread still counted
    assert families[THREADS_OTHER].iloc[-1] == 1 and families["a"].iloc[-1] == 5
