"""soak runs: listing run directories (broken ones too) and naming runs by prefix, glob, latest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from soak.analyze import summarize
from soak.errors import UsageError
from soak.rundir import RunDir
from soak.runs import (
    UNREADABLE,
    list_runs,
    resolve_run,
    resolve_runs,
    runs_table,
    split_target,
)
from tests.data.make_compare_runs import HEALTHY, Shape, write_synthetic
from tests.rundir_factory import FakeRun, write_run

SHAPE = Shape(duration_s=600.0, sample_s=10.0, idle_from_s=420.0, warmup_s=0.0)
DAY = 86_400.0
START = 1_795_000_000.0


def _edit_manifest(run: Path, **changes: object) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(changes)
    (run / "manifest.json").write_text(json.dumps(manifest))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five runs a day apart (completed with a summary, aborted, crashed, running, completed)
    and three broken directories, plus folders and files that are not runs."""
    root = tmp_path_factory.mktemp("reports")
    labels = ["first", "stopped", "killed", "live", "last"]
    runs = [write_synthetic(root, HEALTHY, i, START + i * DAY, label, SHAPE)
            for i, label in enumerate(labels)]  # fmt: skip
    (runs[0] / "summary.json").write_text(json.dumps(summarize(runs[0])))
    _edit_manifest(runs[1], status="aborted")
    _edit_manifest(runs[2], status="running", ended_at=None, pid=_dead_pid())
    _edit_manifest(runs[3], status="running", ended_at=None, pid=os.getpid())
    torn = root / "20261201T000000Z_nightly_torn"
    torn.mkdir()
    (torn / "manifest.json").write_text('{"format_version": 1, "started_at"')
    (root / "20261202T000000Z_nightly_empty").mkdir()
    future = root / "20261203T000000Z_nightly_future"
    future.mkdir()
    (future / "manifest.json").write_text(json.dumps({"format_version": 99}))
    (root / "compare_notes").mkdir()
    (root / "README.md").write_text("not a run\n")
    return root


def test_lists_every_status_and_tolerates_broken_directories(root: Path) -> None:
    entries = list_runs(root)
    by_label = {entry.label: entry for entry in entries if entry.readable}
    assert [by_label[k].status for k in ("first", "stopped", "killed", "live", "last")] == [
        "completed", "aborted", "crashed", "running", "completed",
    ]  # fmt: skip
    assert by_label["first"].verdict == "PASS" and by_label["last"].verdict is None
    assert by_label["first"].duration_s == pytest.approx(SHAPE.duration_s)
    assert by_label["first"].profile == "nightly" and by_label["first"].targets == ("app",)
    broken = [entry for entry in entries if not entry.readable]
    assert {entry.name.split("_")[-1] for entry in broken} == {"torn", "empty", "future"}
    assert all(entry.status == UNREADABLE and entry.error for entry in broken)
    assert "compare_notes" not in {entry.name for entry in entries}
    table = runs_table(entries)
    assert "no manifest.json" in table and "format_version 99" in table
    assert table.splitlines()[0].split() == ["run", "status", "label", "profile", "duration",
                                              "verdict"]  # fmt: skip


def test_resolves_path_prefix_glob_and_latest(root: Path) -> None:
    readable = [entry for entry in list_runs(root) if entry.readable]
    newest, previous = readable[-1].path, readable[-2].path
    assert resolve_run("latest", root) == newest
    assert resolve_run("latest~1", root) == previous
    assert resolve_run(str(previous), root) == previous
    assert resolve_run(readable[0].name[:12], root) == readable[0].path
    assert resolve_runs(["*_nightly_*", "latest"], root) == [e.path for e in readable]
    assert resolve_run("*_last", root) == newest


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("2026", "matches 5 runs"),
        ("latest~9", "only 5 readable runs"),
        ("nope", "no run directory 'nope'"),
        ("*_nightly_*", "name one run"),
    ],
)
def test_ambiguous_or_unknown_names_are_usage_errors(root: Path, spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve_run(spec, root)


def test_prefix_of_several_runs_is_refused_by_resolve_runs(root: Path) -> None:
    with pytest.raises(UsageError, match="use a glob"):
        resolve_runs(["2026"], root)


def test_split_target(tmp_path: Path) -> None:
    assert split_target("latest:patched") == ("latest", "patched")
    assert split_target("reports/20261121T130102Z_demo_ab") == (
        "reports/20261121T130102Z_demo_ab",
        None,
    )
    odd = tmp_path / "run:with-colon"
    odd.mkdir()
    assert split_target(str(odd)) == (str(odd), None)


def test_cli_lists_runs_and_rejects_a_missing_root(root: Path, tmp_path: Path) -> None:
    listed = subprocess.run([sys.executable, "-m", "soak", "runs", "--out", str(root)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    for word in ("completed", "aborted", "crashed", "running", "unreadable", "PASS"):
        assert word in listed.stdout
    missing = subprocess.run([sys.executable, "-m", "soak", "runs", "--root", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and "is not a directory" in missing.stderr


@pytest.mark.parametrize(
    "writer",
    [
        {"writer_host": "another-machine"},  # a run directory copied from elsewhere
        {"pid_started_at": 1.0},  # our pid now, but reused: the writer was another process
    ],
)
def test_a_running_manifest_whose_writer_is_not_this_process_reads_as_crashed(
    tmp_path: Path, writer: dict
) -> None:
    run = RunDir(write_run(tmp_path, FakeRun(status="running", duration_s=60)))
    assert run.status() == "running"  # written by this very process
    parent = os.getppid()  # alive, on this machine
    run.update_manifest(pid=parent, pid_started_at=psutil.Process(parent).create_time())
    assert run.status() == "running"
    run.update_manifest(**writer)
    assert run.status() == "crashed"
