"""Targets soak starts itself (`spawn = [argv...]`, `--spawn "CMD ARGS"`): no shell.

The command runs in a session of its own with stdout and stderr kept in the
run directory (targets/<name>/stdout.log, stderr.log), copied there through
soak's redactor (its argv, and so what it prints, may hold a token; a target
soak's own process outlives gets EPIPE on its next write). soak waits until it
listens (on its port, else its url's or health URL's port) before load or
sampling starts, samples it by its pid, and stops it (SIGTERM to its process
group, SIGKILL after a grace period) when the run ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from soak.errors import RunError
from soak.profile import Profile, Target
from soak.redact import pump
from soak.rundir import RunDir

#: How long a spawned target gets to stop after SIGTERM before SIGKILL, in seconds.
STOP_GRACE_S = 10.0
#: Without any port to wait for, a spawned target counts as started after this long alive (s).
SETTLE_S = 1.0
#: How long a stopped target's output may take to reach its log files, in seconds.
PUMP_DRAIN_S = 2.0
_LOG_TAIL = 2000


class SpawnedTarget:
    """One target process started by soak."""

    def __init__(self, target: Target, folder: Path) -> None:
        assert target.spawn
        self.name = target.name
        self.argv = list(target.spawn)
        folder.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = folder / "stdout.log", folder / "stderr.log"
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        except OSError as exc:
            raise RunError(
                f"cannot start target {self.name} ({self.argv[0]}: {exc.strerror or exc}); "
                "check the spawn command (an argv list, run without a shell)."
            ) from None
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._pumps = [
            pump(self.popen.stdout, self.stdout_path),
            pump(self.popen.stderr, self.stderr_path),
        ]
        self.pid = self.popen.pid

    def wait_ready(self, address: tuple[str, int] | None, timeout: float) -> None:
        """Wait until the target accepts TCP on `address` (or has lived SETTLE_S without one)."""
        deadline = time.monotonic() + (timeout if address else SETTLE_S)
        while True:
            if self.popen.poll() is not None:
                raise RunError(
                    f"target {self.name} ({' '.join(self.argv)}) exited with code "
                    f"{self.popen.returncode} before it was ready. Its stderr:\n{self._tail()}"
                )
            if address and _accepts(address):
                return
            if time.monotonic() > deadline:
                if not address:
                    return
                self.stop()
                raise RunError(
                    f"target {self.name} ({' '.join(self.argv)}) was not listening on "
                    f"{address[0]}:{address[1]} after {timeout:g} s (collector.spawn_timeout). "
                    f"Its stderr:\n{self._tail()}"
                )
            time.sleep(0.05)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM to its process group, SIGKILL after `grace_s`; the exit code."""
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        else:
            _signal_group(self.popen.pid, signal.SIGKILL)  # leftovers of its group, if any
        self._drain()
        return self.popen.returncode

    def _drain(self) -> None:
        """Wait (briefly) until what the exited target printed is in its log files."""
        for thread in self._pumps:
            thread.join(PUMP_DRAIN_S)

    def _tail(self) -> str:
        self._drain()
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            text = ""
        return text[-_LOG_TAIL:].strip() or "(nothing)"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _accepts(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1.0):
            return True
    except OSError:
        return False


def ready_address(target: Target) -> tuple[str, int] | None:
    """Where a spawned target is expected to listen: its port, else its url's or health's."""
    for url in (target.url, target.health):
        if url:
            parts = urlsplit(url)
            port = target.port or parts.port or (443 if parts.scheme in ("wss", "https") else 80)
            return parts.hostname or "127.0.0.1", port
    return ("127.0.0.1", target.port) if target.port else None


def start_spawned(profile: Profile, run: RunDir, timeout: float) -> list[SpawnedTarget]:
    """Start every target of `profile` that has `spawn` and wait until each listens.

    Each spawned target's `pid` in `profile` is set to the started process. On
    any failure the ones already started are stopped again before it propagates.
    """
    started: list[SpawnedTarget] = []
    try:
        for target in profile.targets:
            if target.spawn:
                spawned = SpawnedTarget(target, run.target_dir(target.name))
                started.append(spawned)
                spawned.wait_ready(ready_address(target), timeout)
                target.pid = spawned.pid
    except BaseException:
        stop_spawned(started)
        raise
    return started


def stop_spawned(spawned: list[SpawnedTarget]) -> None:
    """Stop every spawned target (SIGTERM, then SIGKILL after STOP_GRACE_S)."""
    for target in spawned:
        target.stop()
