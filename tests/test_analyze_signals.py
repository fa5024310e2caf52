"""Idle CPU over time, drift lined up with stalls, soak's own health, /health fields,
per-target criteria, collect-only runs, fast parsing, and a real recorded run."""

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import soak.analyze.load as load_module
from soak.analyze import analyze_run, load_run, summarize
from soak.analyze.chats import HistogramColumn, latency_stats
from soak.histogram import Histogram, merge_all, quantile
from soak.rundir import HEALTH, RunDir
from tests.rundir_factory import STARTED_AT, FakeRun, FakeTarget, write_run

DEMO_RUN = Path(__file__).parent / "data" / "runs" / "20261121T131003Z_demo_ab"


def test_idle_cpu_climbing_with_finished_replies_is_the_orphaned_ticker(tmp_path: Path) -> None:
    """Five idle gaps; idle CPU rises 2 points of a core per 1,000 replies (10 per 5 s)."""

    def busy(s: float) -> bool:
        return (s % 400) >= 100  # idle for the first 100 s of every 400

    def replies_by(s: float) -> float:
        busy_seconds = (s // 400) * 300 + max(0.0, (s % 400) - 100)
        return 2.0 * busy_seconds

    target = FakeTarget(idle_cpu=lambda s: 0.5 + 2.0 * replies_by(s) / 1000)
    run = FakeRun(
        targets=[target], duration_s=2000, busy=busy, checks=["idle_cpu.late_percent < 5"]
    )
    summary = summarize(write_run(tmp_path, run))
    app = summary["targets"]["app"]
    assert len(app["cpu"]["idle_periods"]) == 5
    assert app["cpu"]["idle_early_percent"] == pytest.approx(0.5, abs=0.2)
    assert app["cpu"]["idle_late_percent"] == pytest.approx(0.5 + 2.0 * 2.4, abs=0.3)
    assert app["cpu"]["idle_growth_per_1k_replies"] == pytest.approx(2.0, rel=0.1)
    assert any("orphaned tickers" in sentence for sentence in app["findings"])
    assert summary["criteria"][0]["status"] == "fail"


def test_single_idle_period_cannot_compare_early_and_late(tmp_path: Path) -> None:
    run = FakeRun(duration_s=600, idle_from_s=500, checks=["idle_cpu.growth_per_1k_replies < 1"])
    summary = summarize(write_run(tmp_path, run))
    [check] = summary["criteria"]
    assert check["status"] == "skipped" and "1 idle period" in check["message"]


def test_drift_lines_stalls_and_latency_spikes_up_with_loop_lag(tmp_path: Path) -> None:
    """The loop is blocked (2 s lag) from 600 to 660 s; TTFT spikes and stalls follow."""

    def blocked(s: float) -> bool:  # a /health sample at s
        return 600 <= s < 660

    def during(s: float) -> bool:  # a chat interval (s - 5, s]
        return 600 < s <= 660

    target = FakeTarget(
        health_body=lambda s: {"diagnostics": {"loop_lag_ms": 2000.0 if blocked(s) else 3.0}},
        ttft_s=lambda s: 1.5 if during(s) else 0.05,
        stalls_per_interval=lambda s: 1 if 610 <= s < 680 else 0,
        ping_s=lambda s: 1.0 if during(s) else 0.002,
    )
    run = FakeRun(targets=[target], duration_s=1200, reply_timeout_s=30)
    analysis = analyze_run(write_run(tmp_path, run))
    app = analysis.summary.to_json()["targets"]["app"]
    drift = app["drift"]
    assert drift["signals"] == ["loop_lag_max", "health_latency_excess", "ping_excess"]
    assert drift["drift_spike_bins"] == 12 and drift["latency_spike_bins"] == 12
    assert drift["latency_spikes_with_drift"] == 12
    assert drift["stalls"] == 14 and drift["stalls_after_drift"] == 14
    assert drift["worst"][0]["loop_lag_max_s"] == pytest.approx(2.0)
    assert app["chats"]["ping"]["p99"] == pytest.approx(1.0, rel=0.05)
    assert app["loop_lag"]["max"] == pytest.approx(2.0)
    sentence = next(s for s in app["findings"] if s.startswith("14 stalls"))
    assert "14 of them within 30 s after an event-loop drift spike" in sentence
    table = analysis.targets["app"].drift.table
    assert table.loc[table["drift_spike"], "start_s"].min() == 600


def test_soak_saturation_is_flagged_so_the_target_is_not_blamed(tmp_path: Path) -> None:
    """soak's load process sits at 97% CPU from 300 to 400 s, when TTFT spikes."""

    def generator(s: float) -> dict:
        return {"cpu_percent": 97.0 if 300 < s <= 400 else 35.0, "worker": "gen<script>"}

    target = FakeTarget(ttft_s=lambda s: 2.0 if 300 < s <= 400 else 0.05)
    run = FakeRun(targets=[target], duration_s=1000, generator=generator, checks=["ttft.p95 < 1s"])
    summary = summarize(write_run(tmp_path, run))
    generator_summary = summary["generator"]
    assert generator_summary["saturated_s"] == pytest.approx(100.0)
    assert generator_summary["saturated_percent"] == pytest.approx(10.0)
    assert generator_summary["saturated_spans"] == [[300.0, 400.0]]
    app = summary["targets"]["app"]
    assert app["soak_saturated_percent"] == pytest.approx(10.0)
    assert app["drift"]["latency_spikes_while_soak_saturated"] == app["drift"]["latency_spike_bins"]
    assert any(s.startswith("soak itself was saturated for 10%") for s in app["findings"])
    assert "soak itself was saturated for 10% of the run" in summary["criteria"][0]["message"]


def test_single_load_process_without_worker_id_is_named_load(tmp_path: Path) -> None:
    run = FakeRun(duration_s=60, generator=lambda s: {"worker": None})
    generator = summarize(write_run(tmp_path, run))["generator"]
    assert (generator["workers"], generator["worker_names"]) == (1, ["load"])
    assert generator["saturated_percent"] == 0.0 and generator["saturated_spans"] == []


def test_collect_only_run_skips_chat_criteria_with_a_reason(tmp_path: Path) -> None:
    checks = ["stalls.count == 0", "ttft.p95 < 2s", "disconnects.rate < 0.001", GROWTH_LEAK]
    run = FakeRun(
        targets=[FakeTarget(threads=lambda s: 40 + s // 60)], write_chats=False, checks=checks
    )
    summary = summarize(write_run(tmp_path, run))
    assert summary["has_chats"] is False
    app = summary["targets"]["app"]
    assert (
        app["chats"]["turns"] is None
        and app["chats"]["stalls"] is None
        and app["chats"]["ttft"]["p95"] is None
    )
    by_name = {c["name"]: c for c in summary["criteria"]}
    for name in ("stalls.count", "ttft.p95", "disconnects.rate"):
        assert by_name[name]["status"] == "skipped"
        assert "soak collect" in by_name[name]["message"]
    assert by_name["threads.growth_per_hour"]["status"] == "fail"
    assert summary["verdict"] == "fail"


GROWTH_LEAK = "threads.growth_per_hour < 5"


def test_health_field_criteria_and_per_target_overrides(tmp_path: Path) -> None:
    def body(count: float):
        return lambda s: {"diagnostics": {"thread_count": count + s // 100, "loop_lag_ms": 1.0}}

    run = FakeRun(
        targets=[
            FakeTarget(name="old", health_body=body(150)),
            FakeTarget(name="new", health_body=body(20)),
        ],
        duration_s=1200,
        checks=["health.diagnostics.thread_count.max < 100", "stalls.count == 0"],
        criteria_targets={
            "old": {
                "checks": [
                    "health.diagnostics.thread_count.max < 200",
                    "health.diagnostics.thread_count.growth_per_hour < 10",
                ],
                "skip": ["stalls.count"],
            }
        },
    )
    summary = summarize(write_run(tmp_path, run))
    rows = {(c["target"], c["expression"]): c for c in summary["criteria"]}
    assert set(rows) == {
        ("old", "health.diagnostics.thread_count.max < 200"),
        ("old", "health.diagnostics.thread_count.growth_per_hour < 10"),
        ("new", "health.diagnostics.thread_count.max < 100"),
        ("new", "stalls.count == 0"),
    }
    old_max = rows[("old", "health.diagnostics.thread_count.max < 200")]
    assert (old_max["status"], old_max["value"], old_max["scope"]) == ("pass", 162.0, "target")
    growth = rows[("old", "health.diagnostics.thread_count.growth_per_hour < 10")]
    assert growth["status"] == "fail" and growth["value"] == pytest.approx(36.0, rel=0.05)
    assert rows[("new", "stalls.count == 0")]["scope"] == "profile"
    fields = summary["targets"]["new"]["health"]["fields"]["diagnostics.thread_count"]
    assert (fields["min"], fields["max"], fields["last"]) == (20.0, 32.0, 32.0)


def test_health_metric_on_a_missing_field_is_skipped_with_suggestions(tmp_path: Path) -> None:
    run = FakeRun(duration_s=120, checks=["health.diagnostics.loop_lag.max < 5"])
    [check] = summarize(write_run(tmp_path, run))["criteria"]
    assert check["status"] == "skipped"
    assert "Did you mean diagnostics.loop_lag_ms?" in check["message"]


def test_disconnects_and_violations_are_counted_by_kind(tmp_path: Path) -> None:
    target = FakeTarget(disconnects_per_interval=1, violations_per_interval=1)
    run = FakeRun(targets=[target], duration_s=300, checks=["disconnects.rate < 0.001"])
    summary = summarize(write_run(tmp_path, run))
    app = summary["targets"]["app"]
    assert app["chats"]["disconnects"] == 60 and app["chats"]["violations_by_kind"] == {
        "frame_after_done": 60
    }
    assert app["chats"]["disconnect_close_codes"] == {"1006": 60}
    assert app["anomalies"]["kinds"] == {"disconnect": 60, "violation/frame_after_done": 60}
    [check] = summary["criteria"]
    assert check["status"] == "fail" and check["value"] == pytest.approx(0.1)
    assert "60 disconnects in 600 turns (10%)" in check["message"]
    assert "60 protocol violations: frame_after_done ×60." in app["findings"]


def test_parallel_parsing_gives_the_same_frames(tmp_path: Path, monkeypatch) -> None:
    run_dir = write_run(tmp_path, FakeRun(duration_s=300, targets=[FakeTarget(name="a")]))
    serial = load_run(run_dir).targets["a"]
    monkeypatch.setattr(load_module, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(load_module.os, "cpu_count", lambda: 2)
    parallel = load_run(run_dir).targets["a"]
    for frame in ("process", "threads", "families", "health"):
        pd.testing.assert_frame_equal(getattr(serial, frame), getattr(parallel, frame))


def test_lines_with_nan_and_torn_lines_are_read(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, FakeRun(duration_s=20))
    path = RunDir(run_dir).target_file("app", HEALTH)
    with path.open("a") as handle:
        handle.write(
            '{"t": %f, "status": 200, "latency_s": NaN, "body": {"x": 1}}\n' % (STARTED_AT + 21)
        )
        handle.write("not json\n")
        handle.write('{"t": 1795000099.0, "status"')
    health = load_run(run_dir).targets["app"].health
    assert len(health) == 5 and health["body.x"].iloc[-1] == 1.0
    assert np.isnan(health["latency_s"].iloc[-1])


def test_histogram_column_matches_soak_histogram() -> None:
    rng = random.Random(5)
    hists = []
    for _ in range(300):
        hist = Histogram()
        for _ in range(rng.randint(0, 15)):
            hist.add(rng.expovariate(4.0))
        hists.append(hist.to_json())
    groups = np.arange(300) // 11
    column = HistogramColumn.of(hists)
    for q in (0.0, 0.5, 0.95, 0.99, 1.0):
        got = column.quantiles(groups, 28, q)
        expected = [quantile(merge_all(hists[g * 11 : (g + 1) * 11]), q) for g in range(28)]
        assert np.allclose(got, [np.nan if v is None else v for v in expected], equal_nan=True)
    total = sum(sum(hist.values()) for hist in hists)
    assert latency_stats(hists, (0.5,)) == ({0.5: quantile(merge_all(hists), 0.5)}, total)
    assert latency_stats([{}], (0.5,)) == ({0.5: None}, 0)


@pytest.mark.skipif(not DEMO_RUN.is_dir(), reason="recorded demo run not present")
def test_real_recorded_demo_run_fails_the_faulty_build_and_passes_the_patched(tmp_path) -> None:
    """A real recording of `soak demo`: the built-in target with its faults, and --patched."""
    summary = summarize(DEMO_RUN)
    bad, good = summary["targets"]["unpatched"], summary["targets"]["patched"]
    assert bad["threads"]["trend"] == "growing" and bad["threads"]["growth_per_hour"] > 1000
    assert bad["threads"]["growth_per_1k_replies"] > 10
    assert (
        good["threads"]["trend"] in ("flat", "plateau") and good["threads"]["growth_per_hour"] < 5
    )
    assert bad["chats"]["stalls"] > 0 and good["chats"]["stalls"] == 0
    assert bad["drift"]["drift_spike_bins"] > 0 and good["drift"]["drift_spike_bins"] == 0
    assert (bad["verdict"], good["verdict"]) == ("fail", "pass")
    assert any(s.startswith("threads grow") and "/min" in s for s in bad["findings"])
    json.dumps(summary, allow_nan=False)


@pytest.mark.parametrize(("saturated", "verdict"), [(True, "inconclusive"), (False, "fail")])
def test_stalls_while_soak_was_saturated_are_not_blamed_on_the_target(
    tmp_path: Path, saturated: bool, verdict: str
) -> None:
    """Stalls from 300 to 400 s only; soak's load process at 97% CPU then, or not."""

    def generator(s: float) -> dict:
        busy = saturated and 300 < s <= 400
        return {"cpu_percent": 97.0 if busy else 35.0, "worker": None}

    target = FakeTarget(stalls_per_interval=lambda s: 2 if 300 < s <= 400 else 0)
    run = FakeRun(targets=[target], duration_s=1000, generator=generator,
                  checks=["stalls.count == 0", "ok.rate >= 99%"])  # fmt: skip
    summary = summarize(write_run(tmp_path, run))
    app = summary["targets"]["app"]
    assert app["chats"]["stalls"] > 0 and app["verdict"] == verdict
    statuses = {c["name"]: c["status"] for c in summary["criteria"]}
    assert statuses["stalls.count"] == ("inconclusive" if saturated else "fail")
    if saturated:
        message = next(c for c in summary["criteria"] if c["name"] == "stalls.count")["message"]
        assert "timed out while soak's own load process was saturated" in message
