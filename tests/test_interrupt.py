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


def quick_profile(folder: Path) -> Path:
    """The demo profile with a short idle phase, so a resumed run ends soon."""
    text = (REPO / "profiles" / "demo.toml").read_text()
    path = folder / "quick.toml"
    path.write_text(text.replace('idle_after = "20s"', 'idle_after = "2s"'))
    return path


def soak_run(target, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "soak", "run", str(quick_profile(out.parent)),
        "--target", target.ws_url, "--health", target.health_url, "--pid", str(target.pid),
        "--users", "4", "--out", str(out), *extra,
    ]  # fmt: skip


def start_run(target, out: Path) -> subprocess.Popen:
    command = soak_run(target, out, "--duration", "5m", "--label", "cut")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_chats(out: Path, timeout: float = 60) -> RunDir:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [p for p in out.iterdir() if p.is_dir()]
        if runs and (runs[0] / "chats.jsonl").exists() and (runs[0] / "chats.jsonl").stat().st_size:
            return RunDir(runs[0])
        time.sleep(0.5)
    raise AssertionError("no chat aggregate written in time")


def test_sigterm_stops_within_seconds_and_completes_the_run_directory(tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    with start_target(patched=True) as target:
        soak = start_run(target, out)
        run = wait_for_chats(out)
        soak.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        out, err = soak.communicate(timeout=60)
        took = time.monotonic() - stopped_at
    assert soak.returncode == 3, out + err
    assert took < 30  # generous: the goal is ~10 s on an idle machine
    assert run.manifest()["status"] == "aborted" and run.manifest()["ended_at"]
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["status"] == "aborted" and summary["targets"]["t1"]["chats"]["replies"] > 0
    assert summary["verdict"] != "pass"  # a run cut short never passes
    assert any("the run was aborted" in gap for gap in summary["evidence_gaps"])
    assert (run.path / "report.html").exists()
    assert "Traceback" not in err


def test_sigkill_leaves_a_readable_crashed_run_no_orphans_and_resumes(tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    with start_target(patched=True) as target:
        soak = start_run(target, out)
        run = wait_for_chats(out)
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
        assert report.returncode == 4, report.stderr  # inconclusive: it was cut off
        summary = json.loads((run.path / "summary.json").read_text())
        assert (summary["status"], summary["verdict"]) == ("crashed", "inconclusive")
        chats_before = sum(1 for _ in run.records("chats.jsonl"))

        resumed = subprocess.run(
            [*soak_run(target, out, "--duration", "15s"), "--resume", "latest"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert resumed.returncode in (0, 1, 4), resumed.stdout + resumed.stderr  # judged, not 3
    assert [p for p in out.iterdir() if p.is_dir()] == [run.path]  # appended, no new run
    manifest = run.manifest()
    assert manifest["status"] == "completed" and len(manifest["resumed"]) == 1
    assert any(e.get("kind") == "run_resume" for e in run.records("events.jsonl"))
    assert sum(1 for _ in run.records("chats.jsonl")) > chats_before
    again = subprocess.run(
        [*soak_run(target, out), "--resume", str(run.path)], capture_output=True, text=True
    )
    assert again.returncode == 2 and "only crashed or aborted runs" in again.stderr
