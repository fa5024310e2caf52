"""RunSession: how a run's body ends becomes its status and message, once, in real run dirs.

No load and no collector here: the body of each session is a few lines of the test,
so these run in milliseconds; tests/test_e2e.py and tests/test_interrupt.py drive
whole runs through the same session.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from soak.errors import OutputClosed, RunError, StorageError
from soak.profile import profile_from_mapping
from soak.run import RUN_ABORTED, Interrupted, RunSession
from soak.rundir import EVENTS, STATUS_COMPLETED, RunDir, unwritable


def _session(tmp_path, target: dict | None = None, **options) -> RunSession:
    profile = profile_from_mapping(
        {
            "name": "unit",
            "targets": [{"name": "t1", "url": "ws://127.0.0.1:9/ws", **(target or {})}],
            "collector": {"spawn_timeout": "5s"},
        }
    )
    return RunSession.create(profile, tmp_path, "unit", 60.0, {"mode": "unit"}, **options)


def _ends(run: RunDir) -> list[tuple[str, str]]:
    return [(e["status"], e["message"]) for e in run.records(EVENTS) if e["kind"] == "run_end"]


def _signal_soon(signum: int) -> None:
    """Deliver `signum` to this process and give its handler the chance to run."""
    os.kill(os.getpid(), signum)
    time.sleep(0.05)


@pytest.mark.parametrize(
    ("raised", "status", "message"),
    [
        (None, "completed", ""),
        (Interrupted("SIGINT"), "aborted", RUN_ABORTED),
        (OutputClosed("standard output was closed"), "failed", "standard output was closed"),
        (RunError("the collector stopped unexpectedly"), "crashed", "the collector stopped"),
    ],
)
def test_how_the_body_ends_is_the_run_s_status_recorded_once(tmp_path, raised, status, message):
    session = _session(tmp_path)
    with session:
        if raised is not None:
            raise raised
    assert session.outcome.status == status and message in session.outcome.message
    manifest = session.run.manifest()
    assert manifest["status"] == status and manifest["ended_at"] and manifest["mode"] == "unit"
    assert message in manifest.get("end_message", "")
    assert _ends(session.run) == [(status, session.outcome.message or status)]
    kinds = [e["kind"] for e in session.run.records(EVENTS)]
    assert kinds == ["run_start", "run_end"]


def test_a_storage_error_fails_the_run_with_the_unwritable_message(tmp_path):
    session = _session(tmp_path)
    with session:
        raise StorageError("cannot write chats.jsonl: the disk is full")
    assert session.outcome.status == "failed"
    assert session.outcome.message == unwritable(session.run.path).message
    assert session.run.manifest()["end_message"] == session.outcome.message


def test_a_real_sigterm_ends_a_collect_without_duration_as_completed(tmp_path):
    session = _session(tmp_path, interrupted=(STATUS_COMPLETED, ""))
    with session:
        _signal_soon(signal.SIGTERM)
        pytest.fail("SIGTERM did not interrupt the session")
    assert (session.outcome.status, session.outcome.message) == ("completed", "")
    assert session.run.manifest()["status"] == "completed"


def test_a_second_ctrl_c_while_stopping_is_only_noted(tmp_path, capfd):
    before = signal.getsignal(signal.SIGINT)
    stopped: list[str] = []
    session = _session(tmp_path)
    with session:
        session.at_end(lambda: _signal_soon(signal.SIGINT), lambda: stopped.append("collector"))
        _signal_soon(signal.SIGINT)
    assert session.outcome.status == "aborted" and stopped == ["collector"]
    assert "already stopping" in capfd.readouterr().err
    assert session.run.manifest()["status"] == "aborted"
    assert signal.getsignal(signal.SIGINT) is before


def test_an_unexpected_error_still_ends_the_run_and_is_raised_on(tmp_path):
    session = _session(tmp_path)
    with pytest.raises(ValueError, match="boom"), session:
        raise ValueError("boom")
    manifest = session.run.manifest()
    assert manifest["status"] == "crashed" and "boom" in manifest["end_message"]
    assert len(_ends(session.run)) == 1


def test_a_spawned_target_that_exits_ends_the_run_as_crashed_and_raises(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    spawn = [sys.executable, "-c", "raise SystemExit(3)"]
    session = _session(tmp_path, {"spawn": spawn})
    with pytest.raises(RunError, match="exited with code 3"), session:
        pytest.fail("the body ran without its target")
    assert session.run.manifest()["status"] == "crashed"
    assert _ends(session.run)[0][0] == "crashed"
    assert signal.getsignal(signal.SIGTERM) is before
