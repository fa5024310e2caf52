"""Live warnings and the status line, read from a run directory while it grows."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from soak.live import LiveStatus
from soak.rundir import CHATS, GENERATOR, HEALTH, PROCESS, JsonlWriter, RunDir
from soak.target import start_target


def _run(tmp_path: Path) -> RunDir:
    return RunDir.create(tmp_path, "live", "test", {"targets": [{"name": "app"}]})


def test_health_failing_warns_once_and_clears(tmp_path: Path) -> None:
    run = _run(tmp_path)
    live = LiveStatus(run, ["app"], 60.0, time.time())
    with JsonlWriter(run.target_file("app", HEALTH)) as health:
        for _ in range(2):
            health.write({"t": time.time(), "status": 404, "latency_s": 0.001, "error": None})
        live.update()
        assert live.started == []  # two failed polls: not yet
        health.write({"t": time.time(), "status": 404, "latency_s": 0.001, "error": None})
        live.update()
        [warning] = live.started
        assert warning.kind == "health_failing"
        assert warning.message == "app: /health keeps failing (3 polls in a row, last: HTTP 404)"
        live.update()
        assert live.started == [] and len(live.active) == 1  # said once
        health.write({"t": time.time(), "status": 200, "latency_s": 0.001, "error": None})
        live.update()
        assert [w.kind for w in live.cleared] == ["health_failing"] and not live.active
    event = warning.event(started=True)
    assert (event["kind"], event["warning"], event["target"]) == (
        "warning",
        "health_failing",
        "app",
    )


def test_lost_process_no_ok_turns_and_a_saturated_generator_warn(tmp_path: Path) -> None:
    run = _run(tmp_path)
    live = LiveStatus(run, ["app"], None, time.time())
    with (
        JsonlWriter(run.target_file("app", PROCESS)) as process,
        JsonlWriter(run.file(CHATS)) as chats,
        JsonlWriter(run.file(GENERATOR)) as generator,
    ):
        for _ in range(2):
            process.write({"t": time.time(), "pid": None, "error": "process not found"})
        outcomes = {"ok": 0, "first_token_timeout": 12}
        chats.write({"t": time.time(), "target": "app", "interval_s": 10, "turns": 12,
                     "started": 12, "in_flight": 12, "outcomes": outcomes})  # fmt: skip
        generator.write({"t": time.time(), "cpu_percent": 97.0, "loop_lag_max_s": 0.01})
    live.update()
    kinds = {w.kind: w.message for w in live.started}
    assert set(kinds) == {"process_lost", "no_ok_turns", "soak_saturated"}
    assert (
        "none of its 12 turns in the last 10s was ok (mostly first_token_timeout)"
        in kinds["no_ok_turns"]
    )
    assert "97% of a core" in kinds["soak_saturated"]


def test_no_turn_ended_with_chats_waiting_is_a_wedge_warning(tmp_path: Path) -> None:
    run = _run(tmp_path)
    live = LiveStatus(run, ["app"], None, time.time())
    with JsonlWriter(run.file(CHATS)) as chats:
        chats.write({"t": time.time(), "target": "app", "interval_s": 10, "turns": 0,
                     "started": 0, "in_flight": 8, "outcomes": {}})  # fmt: skip
    live.update()
    [warning] = live.started
    assert warning.kind == "no_turn_ended" and "8 waiting" in warning.message


@pytest.mark.parametrize("width", [80, 120, 200])
def test_status_line_fits_the_terminal(tmp_path: Path, width: int) -> None:
    run = _run(tmp_path)
    names = ["unpatched-build", "patched-build"]
    live = LiveStatus(run, names, 3 * 86400.0, time.time() - 4000)
    with JsonlWriter(run.file(CHATS)) as chats:
        for name in names:
            outcomes = {"ok": 123456, "stall": 789, "error": 12}
            chats.write({"t": time.time(), "target": name, "interval_s": 10, "turns": 10,
                         "outcomes": outcomes})  # fmt: skip
    live.update()
    line = live.line(width)
    assert len(line) <= width and line.startswith("[1h06m / 3d00h]")
    if width >= 120:
        assert "unpatched-build" in line and "patched-build" in line


@pytest.mark.e2e
def test_a_health_url_that_answers_404_is_warned_while_the_run_goes(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(
        '[load]\nusers = 2\nduration = "8s"\ninterval = "1s"\nthink_time = "0.1s"\n'
        '[collector]\ninterval = "1s"\nhealth_interval = "1s"\n'
    )
    with start_target(patched=True) as target:
        proc = subprocess.run(
            [sys.executable, "-m", "soak", "run", str(profile), "--target", target.ws_url,
             "--health", target.health_url.replace("/health", "/no-such-page"),
             "--out", str(tmp_path / "out"), "--no-report"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "soak: warning: t1: /health keeps failing (" in proc.stderr
    assert "warmup" not in proc.stderr  # the default warm-up is cut without a word
    [run_dir] = (tmp_path / "out").iterdir()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    warnings = [e for e in events if e["kind"] == "warning"]
    assert [w["warning"] for w in warnings] == ["health_failing"]
    run_end = next(e for e in events if e["kind"] == "run_end")
    assert warnings[0]["t"] < run_end["t"] - 2  # while it ran, not at the end
