"""soak's own environment fails under a run: full disk, read-only disk, closed stdout, a
second Ctrl-C. The run ends cleanly (exit 3, one line saying why), what it wrote is kept,
and `soak report` works on it afterwards."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import typer

from soak.cli import _guarded
from soak.errors import EXIT_RUN_FAILED, StorageError
from soak.rundir import (
    RESERVE,
    JsonlWriter,
    RunDir,
    forget_storage_failures,
    on_storage_failure,
    storage_failure,
    unwritable,
    write_text_atomic,
)
from soak.target import start_target

REPO = Path(__file__).resolve().parent.parent


def soak_command(target, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "soak", "run", str(REPO / "profiles" / "demo.toml"),
        "--target", target.ws_url, "--health", target.health_url, "--pid", str(target.pid),
        "--users", "4", "--duration", "2m", "--out", str(out), *extra,
    ]  # fmt: skip


def wait_for_chats(out: Path, timeout: float = 60) -> RunDir:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [p for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
        chats = runs[0] / "chats.jsonl" if runs else None
        if chats and chats.is_file() and chats.stat().st_size:
            return RunDir(runs[0])
        time.sleep(0.3)
    raise AssertionError("no chat aggregate written in time")


def start_soak(target, out: Path, *extra: str) -> tuple[subprocess.Popen, RunDir]:
    """`soak run` against `target` (text pipes), once it has written a chat aggregate."""
    command = soak_command(target, out, *extra)
    soak = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return soak, wait_for_chats(out)


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs of its own (needs root, as on the CI machines); skipped otherwise."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = os.geteuid() == 0 and (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "soak-test", str(disk)],
            capture_output=True,
        ).returncode
        == 0
    )
    if not mounted:
        pytest.skip("mounting a small tmpfs needs root (mount -t tmpfs)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses more; the file (delete it to make room)."""
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(bytes(1 << 20))
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def report_afterwards(run: RunDir) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "soak", "report", str(run.path)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 4, proc.stdout + proc.stderr  # inconclusive: the run was cut
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["verdict"] == "inconclusive"
    return summary


@pytest.mark.e2e
def test_a_disk_that_fills_up_ends_the_run_cleanly_and_keeps_its_data(small_disk):
    out = small_disk / "reports"
    with start_target(patched=True) as target:
        soak, run = start_soak(target, out)
        chats_before = (run.path / "chats.jsonl").stat().st_size
        filler = fill(small_disk)
        stdout, stderr = soak.communicate(timeout=90)
    assert soak.returncode == EXIT_RUN_FAILED, stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert "the disk is full" in stderr and "soak report" in stderr
    manifest = run.manifest()
    assert manifest["status"] == "failed"
    assert "the disk is full" in manifest["end_message"]
    assert not (run.path / "manifest.json.tmp").exists()
    assert not (run.path / RESERVE).exists()
    assert (run.path / "chats.jsonl").stat().st_size >= chats_before  # nothing lost
    ends = [e for e in run.records("events.jsonl") if e.get("kind") == "run_end"]
    assert ends and ends[-1]["status"] == "failed"
    filler.unlink()
    summary = report_afterwards(run)
    (target_summary,) = summary["targets"].values()
    gaps = target_summary["evidence_gaps"]
    assert any("the run failed" in gap and "disk is full" in gap for gap in gaps), gaps


def test_a_read_only_disk_is_named_as_such(small_disk):
    """A file system cannot turn read-only under open files here (mount refuses: busy),
    so this is the start of a run on one; the run's writers say the same mid-run."""
    forget_storage_failures()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with pytest.raises(StorageError, match="the file system is read-only"):
            JsonlWriter(small_disk / "events.jsonl")
        assert "the file system is read-only" in unwritable(small_disk).message
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
        forget_storage_failures()


@pytest.mark.e2e
def test_a_closed_stdout_ends_the_run_cleanly(tmp_path):
    out = tmp_path / "reports"
    with start_target(patched=True) as target:
        soak = subprocess.Popen(
            soak_command(target, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        soak.stdout.read(40)  # `soak run ... | head -c 40`
        soak.stdout.close()
        _, stderr = soak.communicate(timeout=120)
    stderr = stderr.decode()
    assert soak.returncode == EXIT_RUN_FAILED, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert "standard output was closed" in stderr
    run = RunDir(next(out.iterdir()))
    assert run.manifest()["status"] == "failed"
    assert "standard output was closed" in run.manifest()["end_message"]


@pytest.mark.e2e
def test_a_second_ctrl_c_while_stopping_does_not_cut_the_closing_short(tmp_path):
    out = tmp_path / "reports"
    with start_target(patched=True) as target:
        soak, run = start_soak(target, out)
        soak.send_signal(signal.SIGINT)
        time.sleep(0.3)
        soak.send_signal(signal.SIGINT)
        time.sleep(0.3)
        soak.send_signal(signal.SIGINT)
        stdout, stderr = soak.communicate(timeout=90)
    assert "Traceback" not in stderr, stderr
    assert soak.returncode == EXIT_RUN_FAILED, stdout + stderr
    assert run.manifest()["status"] == "aborted"


def test_a_writer_on_a_full_disk_says_so_and_stops_writing(tmp_path):
    forget_storage_failures()
    heard = []
    on_storage_failure(heard.append)
    writer = JsonlWriter(Path("/dev/full"))
    with pytest.raises(StorageError, match="the disk is full"):
        writer.write({"t": 1})
    with pytest.raises(StorageError):  # a file with a hole would read as a quiet stretch
        writer.write({"t": 2})
    writer.close()  # the unwritten rest is dropped, not raised
    assert heard == [storage_failure()] and heard[0] is not None
    forget_storage_failures()
    assert storage_failure() is None


def test_an_atomic_write_that_fails_leaves_no_temporary_file(tmp_path):
    forget_storage_failures()
    target = tmp_path / "manifest.json"
    target.write_text("{}\n")
    (tmp_path / "manifest.json.tmp").mkdir()  # the temporary file cannot be made
    with pytest.raises(StorageError, match="manifest.json"):
        write_text_atomic(target, '{"status": "completed"}')
    assert target.read_text() == "{}\n"
    forget_storage_failures()


@pytest.mark.parametrize(
    "error",
    [ValueError("a bug"), OSError(errno.ENOSPC, "No space left on device", "/x/report.html")],
)
def test_an_uncaught_exception_is_one_line_and_exit_3_never_1(error, capsys):
    def body() -> int:
        raise error

    with pytest.raises(typer.Exit) as ended:
        _guarded(body)
    assert ended.value.exit_code == EXIT_RUN_FAILED
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("soak: error: ")
    if isinstance(error, ValueError):
        assert "internal error: ValueError: a bug" in lines[0]
        saved = Path(lines[0].split("traceback in ")[1].split(";")[0])
        assert "ValueError: a bug" in saved.read_text()
        saved.unlink()
    else:
        assert "cannot write /x/report.html: the disk is full" in lines[0]


@pytest.mark.e2e
def test_a_stopped_load_process_is_not_blamed_on_the_target(tmp_path):
    """SIGSTOP the load process longer than the reply timeout: the turns it was in the
    middle of time out when it resumes, and those are soak's failures, not the target's."""
    out = tmp_path / "reports"
    with start_target(patched=True) as target:
        soak, run = start_soak(target, out, "--duration", "35s", "--idle-after", "0s")
        load = next(
            p for p in psutil.Process(soak.pid).children() if "soak.load" in " ".join(p.cmdline())
        )
        load.send_signal(signal.SIGSTOP)
        time.sleep(12)  # twice the demo profile's reply_timeout
        load.send_signal(signal.SIGCONT)
        stdout, stderr = soak.communicate(timeout=150)
    assert soak.returncode in (0, 4), stdout + stderr  # 35 s: too short for every trend
    report = json.loads((run.path / "summary.json").read_text())
    (summary,) = report["targets"].values()
    assert summary["verdict"] != "fail"
    judged = {c["name"]: c["status"] for c in report["criteria"]}
    for name in ("ok.rate", "stalls.count", "first_token_timeouts.count"):
        assert judged[name] == "pass", report["criteria"]
    assert summary["chats"]["stalls"] == 0 and summary["chats"]["first_token_timeouts"] == 0
    assert summary["chats"]["excluded_turns"] >= 1
    assert any("stood still" in finding for finding in summary["findings"])
    excluded = [a for a in run.records("anomalies.jsonl") if a.get("excluded")]
    assert len(excluded) == summary["chats"]["excluded_turns"]
