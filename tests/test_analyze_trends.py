"""Trend shapes: leaks flagged, plateaus and sawtooth floors passed, restarts split the fit,
growth per unit of work and time to the machine's real limits."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from soak.analyze import analyze_run, summarize
from soak.analyze.trend import FLAT, GROWING, PLATEAU, fit_trend, sawtooth_drops
from soak.limits import DEFAULT_FDS, DEFAULT_THREADS, System, TargetLimits, target_limits
from tests.rundir_factory import FakeRun, FakeTarget, write_run

GROWTH_CHECK = "threads.growth_per_hour < 5"


def pool_to_24(s: float) -> float:
    """A pool that starts one worker every 30 s until it has 24, then stays."""
    return min(24.0, 1.0 + s // 30)


def sawtooth(floor_growth_per_s: float = 0.0):
    """RSS that climbs 50 MB over 5 minutes and is collected back to its floor."""
    noise = np.random.default_rng(3).normal(0, 0.8, 4000)
    return lambda s: 100.0 + floor_growth_per_s * s + 50.0 * ((s % 300) / 300) + noise[int(s)]


def test_leak_of_one_thread_per_5_minutes_is_flagged_within_30_minutes(tmp_path: Path) -> None:
    leak = FakeTarget(name="leak", threads=lambda s: 50 + s // 300)
    run = FakeRun(targets=[leak], duration_s=1800, warmup_s=60, checks=[GROWTH_CHECK])
    summary = summarize(write_run(tmp_path, run))
    app = summary["targets"]["leak"]
    assert app["threads"]["trend"] == GROWING
    assert app["threads"]["growth_per_hour"] == pytest.approx(12.0, rel=0.1)
    low, high = app["threads"]["growth_ci_per_hour"]
    assert 5 < low <= 12.0 <= high * 1.05
    [check] = summary["criteria"]
    assert check["status"] == "fail"
    assert check["message"].startswith("threads grow 1") and "95% CI" in check["message"]
    assert "4,096" in check["message"] and "reached in ~" in check["message"]


def test_pool_that_grows_to_24_and_stays_flat_passes(tmp_path: Path) -> None:
    run = FakeRun(
        targets=[FakeTarget(threads=pool_to_24)],
        duration_s=1800,
        warmup_s=60,
        checks=[GROWTH_CHECK],
    )
    summary = summarize(write_run(tmp_path, run))
    app = summary["targets"]["app"]
    assert app["threads"]["trend"] == PLATEAU
    assert app["threads"]["growth_overall_per_hour"] > 5  # the naive fit would have failed it
    assert app["threads"]["growth_per_hour"] == 0.0 and app["threads"]["hours_to_limit"] is None
    assert app["threads"]["level_since_s"] == pytest.approx(690, abs=60)
    [check] = summary["criteria"]
    assert check["status"] == "pass"
    assert check["message"].startswith("threads rose 3 → 24 by +11m")
    assert "then held level: 0/h" in check["message"]


def test_sawtooth_memory_with_a_flat_floor_passes_and_a_rising_floor_fails(
    tmp_path: Path,
) -> None:
    flat = FakeTarget(name="gc", rss_mb=sawtooth())
    rising = FakeTarget(name="leaky_gc", rss_mb=sawtooth(floor_growth_per_s=20 / 3600))
    # nine teeth: six would leave a 5 MB/h limit inside the floors' 95% interval
    run = FakeRun(targets=[flat, rising], duration_s=2700, checks=["rss.growth_mb_per_hour < 5"])
    summary = summarize(write_run(tmp_path, run))
    gc, leaky = summary["targets"]["gc"], summary["targets"]["leaky_gc"]
    assert gc["rss"]["envelope"] and gc["rss"]["drops"] >= 5
    low, high = gc["rss"]["growth_ci_per_hour"]  # one point per tooth: few, an honest CI
    assert high < 5 and abs(gc["rss"]["growth_per_hour"]) < 2
    assert abs(gc["rss"]["growth_overall_per_hour"]) > abs(gc["rss"]["growth_per_hour"])
    assert leaky["rss"]["envelope"] and leaky["rss"]["growth_per_hour"] == pytest.approx(
        20, rel=0.2
    )
    statuses = {c["target"]: c["status"] for c in summary["criteria"]}
    assert statuses == {"gc": "pass", "leaky_gc": "fail"}
    assert "tooth by tooth (a sawtooth with" in summary["criteria"][0]["message"]


def test_a_restart_splits_the_fit(tmp_path: Path) -> None:
    """The leak restarts from 50 threads with the new process: fitted across the restart
    it would look flat, per segment it grows 60/h in both."""
    restart = 1000.0
    target = FakeTarget(
        threads=lambda s: 50 + ((s - restart) if s >= restart else s) // 60,
        restart_at_s=restart,
    )
    analysis = analyze_run(write_run(tmp_path, FakeRun(targets=[target], duration_s=1900)))
    app = analysis.summary.to_json()["targets"]["app"]
    assert app["restarts"] == 1
    first, second = app["segments"]
    assert (first["pid"], second["pid"]) == (1000, 2000)
    for segment in (first, second):
        assert segment["growth_per_hour"]["threads"] == pytest.approx(60.0, rel=0.25)
        assert segment["trend"]["threads"] == GROWING
    assert app["threads"]["growth_per_hour"] == pytest.approx(60.0, rel=0.25)
    assert "in the longest of 2 process segments" in app["findings"][0]
    # one fit across both processes would see the drop at the restart: a fraction of the growth
    process = analysis.targets["app"].data.process
    across = fit_trend(process["elapsed"].to_numpy(), process["threads"].to_numpy())
    assert across is not None and across.fit.per_hour < 60 / 2


def test_growth_per_unit_of_work_ignores_idle_time(tmp_path: Path) -> None:
    """One thread per 100 ok replies (10 replies per 5 s interval), and long idle gaps."""

    def busy(s: float) -> bool:
        return (s % 600) < 300

    def replies_by(s: float) -> float:
        done = (s // 600) * 300 + min(s % 600, 300)
        return 10.0 * (done // 5)

    target = FakeTarget(threads=lambda s: 20 + replies_by(s) // 100, connects_per_interval=1)
    run = FakeRun(
        targets=[target],
        duration_s=2400,
        busy=busy,
        replies_per_day=2000,
        checks=["threads.growth_per_1k_replies < 1"],
    )
    summary = summarize(write_run(tmp_path, run))
    app = summary["targets"]["app"]
    assert app["threads"]["growth_per_1k_replies"] == pytest.approx(10.0, rel=0.1)
    assert app["threads"]["growth_per_connection"] == pytest.approx(0.1, rel=0.15)
    production = app["threads"]["hours_to_limit_at_replies_per_day"]
    assert production == pytest.approx((4096 - app["threads"]["end"]) / 20 * 24, rel=0.15)
    [check] = summary["criteria"]
    assert check["status"] == "fail" and "at 2,000 replies a day, 4,096 in ~" in check["message"]


def test_limits_are_read_from_the_live_target_process(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        created = psutil.Process(sleeper.pid).create_time()
        manifest = {"host": {"hostname": socket.gethostname()}}
        live = target_limits(manifest, sleeper.pid, created)
        limits_text = Path(f"/proc/{sleeper.pid}/limits").read_text()
        nofile = next(line.split()[3] for line in limits_text.splitlines() if "open files" in line)
        assert live.fds.value == int(nofile) and live.fds.source == "ulimit -n"
        assert live.threads.source in ("kernel threads-max", "cgroup pids.max", "ulimit -u")
        assert live.memory_mb.value is not None and live.memory_mb.value > 0
        gone = target_limits(manifest, sleeper.pid, created - 100)  # another process's start
        assert gone.threads.value <= DEFAULT_THREADS and "process is gone" in gone.fds.source
        assert gone.fds.value == DEFAULT_FDS
        elsewhere = target_limits({"host": {"hostname": "elsewhere"}}, sleeper.pid, created)
        assert elsewhere.memory_mb.value is None and "another machine" in elsewhere.threads.source
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cgroup_limits_are_the_smallest_up_the_tree(tmp_path: Path) -> None:
    """A fake /proc and cgroup v2 mount: pids.max of the parent group is the real limit."""
    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "4242").mkdir(parents=True)
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/kernel/threads-max").write_text("120000\n")
    (proc / "meminfo").write_text("MemTotal:       8000000 kB\n")
    boot = time.time() - 1000
    ticks = os.sysconf("SC_CLK_TCK")
    (proc / "stat").write_text(f"cpu 1 2 3\nbtime {int(boot)}\n")
    fields = ["S"] + ["0"] * 18 + [str(500 * ticks)]
    (proc / "4242/stat").write_text(f"4242 (server) {' '.join(fields)}\n")
    (proc / "4242/limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max processes             unlimited            unlimited            processes \n"
        "Max open files            65536                65536                files     \n"
    )
    (proc / "4242/cgroup").write_text("0::/app.slice/server.service\n")
    (cgroup / "app.slice/server.service").mkdir(parents=True)
    (cgroup / "app.slice/pids.max").write_text("2048\n")
    (cgroup / "app.slice/server.service/pids.max").write_text("max\n")
    (cgroup / "app.slice/server.service/memory.max").write_text(str(512 * 1_048_576))
    (cgroup / "app.slice/cpu.max").write_text("150000 100000\n")
    (cgroup / "app.slice/server.service/cpu.max").write_text("max 100000\n")
    system = System(proc=proc, cgroup=cgroup, hostname="box")
    limits = target_limits({"host": {"hostname": "box"}}, 4242, int(boot) + 500, system)
    assert (limits.threads.value, limits.threads.source) == (
        2048,
        "cgroup pids.max of /app.slice",
    )
    assert (limits.fds.value, limits.fds.source) == (65536, "ulimit -n")
    assert (limits.memory_mb.value, limits.memory_mb.source) == (
        512,
        "cgroup memory limit, memory.max of /app.slice/server.service",
    )
    assert (limits.cpu_cores.value, limits.cpu_cores.source) == (
        1.5,
        "cgroup CPU quota, cpu.max of /app.slice",
    )
    assert TargetLimits.from_json(limits.to_json()).cpu_cores.value == 1.5
    older = {name: entry for name, entry in limits.to_json().items() if name != "cpu_cores"}
    assert TargetLimits.from_json(older).cpu_cores.value is None  # recorded before CPU quotas


@pytest.mark.parametrize(
    ("series", "shape"),
    [
        (lambda x: 50 + x // 300, GROWING),
        (lambda x: np.minimum(24, 1 + x // 30), PLATEAU),
        (lambda x: np.full(len(x), 7.0), FLAT),
        (lambda x: 20 + 4 * ((x % 240) < 120), FLAT),  # a pool that shrinks and regrows
        (lambda x: 26 + x // 60 + (x.astype(int) % 2), GROWING),  # jitter of one is no sawtooth
    ],
)
def test_fit_trend_shapes(series, shape: str) -> None:
    x = np.arange(1, 1801, dtype=float)
    trend = fit_trend(x, series(x))
    assert trend is not None and trend.shape == shape


def test_a_count_jittering_by_one_has_no_sawtooth_drops() -> None:
    x = np.arange(1, 3601, dtype=float)
    y = 26 + x // 600 + np.random.default_rng(1).integers(0, 2, len(x))
    drops, _ = sawtooth_drops(y, np.full(len(x), 26.0))
    assert drops == 0


def test_plateau_test_ignores_a_level_idle_tail(tmp_path: Path) -> None:
    """A per-reply leak is level once the load stops: that tail is no plateau."""
    target = FakeTarget(threads=lambda s: 50 + min(s, 1500) // 60)
    run = FakeRun(targets=[target], duration_s=2400, idle_from_s=1500)
    app = summarize(write_run(tmp_path, run))["targets"]["app"]
    assert app["threads"]["trend"] == GROWING and app["threads"]["growth_per_hour"] > 30


def test_limits_recorded_when_the_target_was_found_outlive_it(tmp_path: Path) -> None:
    """A report made after the target is gone still knows its ulimit -n (777 here)."""
    import resource
    import threading

    from soak.collect.collector import Collector
    from soak.rundir import RunDir

    def low_nofile() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (777, 777))

    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], preexec_fn=low_nofile
    )
    profile = {"targets": [{"name": "app", "pid": sleeper.pid}], "collector": {"interval": 0.2}}
    run = RunDir.create(tmp_path, "p", "limits", {"targets": [{"name": "app"}]})
    stop = threading.Event()
    thread = threading.Thread(target=Collector(run.path, profile).run_until, args=(stop,))
    try:
        thread.start()
        time.sleep(1.5)
    finally:
        stop.set()
        thread.join(30)
        sleeper.kill()
        sleeper.wait()
    run.finish("completed")
    app = summarize(run.path)["targets"]["app"]
    assert app["fds"]["limit"] == 777
    assert app["fds"]["limit_source"] == "ulimit -n, recorded when the target was found"
