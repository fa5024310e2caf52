"""`soak run`: create the run directory, start load and collector processes, watch them.

The orchestrator itself is a plain process. Load (Locust + gevent) and the
collector each run in a child process that gets the resolved profile on
stdin, so secrets never reach argv or the disk. The orchestrator only reads
the run directory (for the live status) and records the run's end.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from soak.errors import RunError
from soak.live import LiveStatus
from soak.profile import Profile, redact_url, require_targets
from soak.rundir import (
    EVENTS,
    STATUS_ABORTED,
    STATUS_COMPLETED,
    STATUS_CRASHED,
    JsonlWriter,
    RunDir,
)

#: How long the load process gets to stop after SIGTERM before it is killed, in seconds.
STOP_GRACE_S = 10.0
#: prctl option: the signal a child gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
#: How often the live status line is refreshed, in seconds.
STATUS_EVERY_S = 2.0


class Interrupted(Exception):
    """SIGINT or SIGTERM reached the orchestrator."""


@dataclass
class RunOutcome:
    run: RunDir
    status: str
    message: str = ""


def preflight(profile: Profile, timeout: float = 5.0) -> None:
    """Fail fast, before any run directory exists, when a target does not accept TCP."""
    for target in profile.targets:
        parts = urlsplit(target.url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        try:
            with socket.create_connection((parts.hostname, port), timeout=timeout):
                pass
        except OSError as exc:
            raise RunError(
                f"target {target.name} at {redact_url(target.url)} is not reachable "
                f"({exc.strerror or exc}). Start the server first, or check --target "
                "(for the built-in one: soak target --port 8765)."
            ) from None


def execute_run(
    profile: Profile,
    *,
    out_root: Path,
    label: str,
    on_status: Callable[[str], None] | None = None,
    extra_manifest: dict | None = None,
) -> RunOutcome:
    """Run the profile's load and collector to the end (or to an interrupt)."""
    require_targets(profile)
    preflight(profile)
    started_at = time.time()
    manifest = {
        "profile": profile.redacted(),
        "profile_path": profile.source,
        "targets": [
            {
                "name": t.name,
                "url": redact_url(t.url),
                "health": t.health and redact_url(t.health),
                "pid": t.pid,
                "build": t.build,
            }
            for t in profile.targets
        ],
        "planned_duration_s": profile.planned_duration_s,
        **(extra_manifest or {}),
    }
    run = RunDir.create(out_root, profile.name, label, manifest, started_at=started_at)
    events = JsonlWriter(run.file(EVENTS))
    events.write({"t": started_at, "source": "run", "kind": "run_start", "message": run.path.name})
    payload = json.dumps(profile.to_dict())
    collector = _spawn("soak.collect", run, payload)
    load = _spawn("soak.load", run, payload)
    live = LiveStatus(
        run, [t.name for t in profile.targets], profile.planned_duration_s, started_at
    )

    status, message = STATUS_COMPLETED, ""
    previous = _install_stop_handlers()
    try:
        while load.poll() is None:
            if collector.poll() is not None:
                raise RunError(f"the collector stopped unexpectedly; see {run.file('collect.log')}")
            if on_status:
                on_status(live.line())
            _wait(load, STATUS_EVERY_S)
        if load.returncode != 0:
            status = STATUS_CRASHED
            message = (
                f"the load process failed (exit {load.returncode}); see {run.file('load.log')}"
            )
    except Interrupted:
        status, message = STATUS_ABORTED, "stopped by signal; the run directory is complete so far"
        _stop(load, STOP_GRACE_S)
    except RunError as exc:
        status, message = STATUS_CRASHED, exc.message
        _stop(load, STOP_GRACE_S)
    finally:
        _restore_stop_handlers(previous)
        _stop(collector, STOP_GRACE_S)
        if on_status:
            on_status(live.line())
        events.write(
            {
                "t": time.time(),
                "source": "run",
                "kind": "run_end",
                "status": status,
                "message": message or status,
            }
        )
        events.close()
        run.finish(status)
    return RunOutcome(run, status, message)


def _spawn(module: str, run: RunDir, payload: str) -> subprocess.Popen:
    log_name = "load.log" if module == "soak.load" else "collect.log"
    with open(run.file(log_name), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--run-dir", str(run.path)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches the orchestrator, which stops children
            preexec_fn=_stop_with_parent,
        )
    assert process.stdin is not None
    process.stdin.write(payload.encode())
    process.stdin.close()
    return process


def _stop_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the orchestrator dies.

    A SIGKILLed orchestrator must not leave load running against a target forever;
    the children then stop as on Ctrl-C and the run directory reads as crashed.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _wait(process: subprocess.Popen, seconds: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=seconds)


def _stop(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after `grace_s` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _install_stop_handlers() -> dict[int, object]:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    return {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_stop_handlers(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
