"""soak itself interrupted: SIGTERM stops gracefully, SIGKILL leaves a readable run."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from soak.rundir import RunDir
from soak.target import start_target

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


def start_run(target, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable, "-m", "soak", "run", str(REPO / "profiles" / "demo.toml"),
            "--target", target.ws_url, "--health", target.health_url, "--pid", str(target.pid),
            "--users", "4", "--duration", "5m", "--out", str(out), "--label", "cut",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_chats(out: Path, timeout: float = 60) -> RunDir:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [p for p in out.iterdir() if p.is_dir()]
        if runs and (runs[0] / "chats.jsonl").exists() and (runs[0] / "chats.jsonl").stat().st_size:
            return RunDir(runs[0])
        time.sleep(0.5)
    raise AssertionError("no chat aggregate written in time")


def test_sigterm_stops_within_seconds_and_completes_the_run_directory(tmp_path):
    with start_target(patched=True) as target:
        soak = start_run(target, tmp_path)
        run = wait_for_chats(tmp_path)
        soak.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        out, err = soak.communicate(timeout=60)
        took = time.monotonic() - stopped_at
    assert soak.returncode == 3, out + err
    assert took < 30  # generous: the goal is ~10 s on an idle machine
    assert run.manifest()["status"] == "aborted" and run.manifest()["ended_at"]
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["status"] == "aborted" and summary["targets"]["t1"]["replies"] > 0
    assert (run.path / "report.html").exists()
    assert "Traceback" not in err


def test_sigkill_leaves_a_readable_crashed_run_and_no_orphans(tmp_path):
    with start_target(patched=True) as target:
        soak = start_run(target, tmp_path)
        run = wait_for_chats(tmp_path)
        children = psutil.Process(soak.pid).children(recursive=True)
        assert len(children) >= 2  # load and collector
        soak.kill()
        soak.communicate(timeout=30)
        gone, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, f"orphaned children still running: {alive}"
    assert run.status() == "crashed"
    report = subprocess.run(
        [sys.executable, "-m", "soak", "report", str(run.path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert report.returncode in (0, 1), report.stderr
    assert json.loads((run.path / "summary.json").read_text())["status"] == "crashed"
