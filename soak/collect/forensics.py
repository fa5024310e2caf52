"""py-spy on a target's Python threads: dumps saved in the run directory, and names.

Optional forensics: when `collector.pyspy` is on, the collector runs
`py-spy dump --pid PID` on the first stall of each target (seen in
anomalies.jsonl) and every `collector.pyspy_every` seconds. Each dump is a
text file under targets/<name>/pyspy/ (redacted: its header shows the target's
command line, which may hold a token) and a `pyspy_dump` event. A missing
py-spy, or one the kernel does not let attach (ptrace), is reported once as a
`collector_error` event with what to do, and never stops the collector.

The thread census (`python_thread_names`) asks py-spy for the Python-level names of a
Python target's threads (`py-spy dump --json --nonblocking`: the target is not
paused), because CPython before 3.14 gives its threads no OS name at all (every
`/proc/PID/task/*/comm` says `python`) and 3.14 cuts them to 15 bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from soak.redact import current as redactor
from soak.rundir import ANOMALIES, JsonlTail, RunDir, utc_stamp

#: How long one dump may take before it is abandoned, in seconds.
DUMP_TIMEOUT_S = 30.0
#: Phrases of py-spy's stderr that mean the kernel refused to let it attach.
_NOT_PERMITTED = ("permission denied", "operation not permitted", "os error 1)", "os error 13)")

MISSING_MESSAGE = (
    "py-spy is not installed or not on PATH, so no thread dumps are taken; "
    "install it with: pip install 'soak[forensics]' (or pip install py-spy), "
    "or set collector.pyspy = false"
)


def find_pyspy() -> str | None:
    """py-spy on PATH, or beside this Python (a virtualenv's bin/ that is not activated)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    return shutil.which("py-spy", path=search)


def not_permitted_message(pid: int) -> str:
    """What to do when the kernel refuses py-spy access to `pid` (ptrace)."""
    return (
        f"py-spy is not permitted to read pid {pid} (ptrace refused): run soak as root or "
        "as the target's user with ptrace allowed (sysctl kernel.yama.ptrace_scope=0; in a "
        "container add CAP_SYS_PTRACE), or set collector.pyspy = false"
    )


class CensusError(Exception):
    """The thread census cannot be taken; `lasting` when trying again would not help."""

    def __init__(self, message: str, lasting: bool) -> None:
        super().__init__(message)
        self.message = message
        self.lasting = lasting


def python_thread_names(executable: str, pid: int, timeout: float = 5.0) -> dict[int, str]:
    """{os thread id: Python thread name} of the Python threads of `pid` (py-spy JSON).

    Threads py-spy does not list have no Python thread state: native threads.
    Raises CensusError.
    """
    try:
        done = subprocess.run(
            [executable, "dump", "--pid", str(pid), "--json", "--nonblocking"],
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise CensusError(f"py-spy took over {timeout:g} s for pid {pid}", False) from None
    except OSError as exc:
        raise CensusError(f"py-spy could not be started: {exc}", True) from None
    stderr = done.stderr.decode("utf-8", "replace").strip()
    if done.returncode != 0:
        if any(phrase in stderr.lower() for phrase in _NOT_PERMITTED):
            raise CensusError(not_permitted_message(pid), True)
        lasting = "python" in stderr.lower() and "version" in stderr.lower()
        raise CensusError(f"py-spy cannot read pid {pid}: {stderr[-300:] or 'no output'}", lasting)
    try:
        threads = json.loads(done.stdout)
    except ValueError:
        raise CensusError("py-spy printed no JSON thread list", False) from None
    names = {}
    for thread in threads if isinstance(threads, list) else []:
        tid, name = thread.get("os_thread_id"), thread.get("thread_name")
        if isinstance(tid, int) and isinstance(name, str):
            names[tid] = name
    return names


class PySpy:
    """Takes py-spy dumps; reports each kind of failure once through `report(message)`."""

    def __init__(self, run: RunDir, report: Callable[[str, str | None], None]) -> None:
        self.run = run
        self.report = report
        self.executable = find_pyspy()
        self._reported: set[str] = set()

    def dump(self, target: str, pid: int, reason: str) -> Path | None:
        """Dump `pid`'s threads to targets/<target>/pyspy/<stamp>_<reason>.txt; its path."""
        if self.executable is None:
            self._report_once("missing", MISSING_MESSAGE, target)
            return None
        try:
            done = subprocess.run(
                [self.executable, "dump", "--pid", str(pid)],
                capture_output=True,
                timeout=DUMP_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            self.report(f"py-spy dump of pid {pid} took over {DUMP_TIMEOUT_S:g} s", target)
            return None
        except OSError as exc:
            self._report_once("start", f"py-spy could not be started: {exc}", target)
            return None
        stderr = done.stderr.decode("utf-8", "replace").strip()
        if done.returncode != 0:
            if any(phrase in stderr.lower() for phrase in _NOT_PERMITTED):
                self._report_once(f"ptrace-{pid}", not_permitted_message(pid), target)
            else:
                tail = stderr[-300:] or "no output"
                self.report(
                    f"py-spy dump of pid {pid} failed (exit {done.returncode}): {tail}", target
                )
            return None
        folder = self.run.target_dir(target) / "pyspy"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{utc_stamp()}_{reason}.txt"
        suffix = 1
        while path.exists():
            suffix += 1
            path = folder / f"{utc_stamp()}_{reason}_{suffix}.txt"
        path.write_bytes(redactor().binary(done.stdout))  # its header quotes the command line
        return path

    def _report_once(self, key: str, message: str, target: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self.report(message, target)


class Forensics:
    """When to dump: the first stall of each target, and every `every_s` seconds (0: never)."""

    def __init__(
        self,
        run: RunDir,
        pids: Callable[[], dict[str, int | None]],
        pyspy: PySpy,
        on_dump: Callable[[str, int, str, Path], None],
        every_s: float,
    ) -> None:
        self.pids = pids
        self.pyspy = pyspy
        self.on_dump = on_dump
        self.every_s = every_s
        self.anomalies = JsonlTail(run.file(ANOMALIES))
        self.stalled: set[str] = set()
        self.pending: set[str] = set()
        self.next_at: dict[str, float] = {}

    def tick(self) -> None:
        """Called every collector interval: dump where a first stall or the period is due."""
        pids = self.pids()
        for record in self.anomalies.new_records():
            name = record.get("target")
            if record.get("kind") == "stall" and name in pids and name not in self.stalled:
                self.stalled.add(name)
                self.pending.add(name)
        # a first stall waits for its dump until the target's process is known
        due = {name: "first-stall" for name in self.pending if pids.get(name) is not None}
        self.pending -= set(due)
        if self.every_s > 0:
            now = time.monotonic()
            for name in pids:
                self.next_at.setdefault(name, now + self.every_s)
                if now >= self.next_at[name]:
                    self.next_at[name] = now + self.every_s
                    due.setdefault(name, "periodic")
        for name, reason in due.items():
            pid = pids[name]
            if pid is not None:
                path = self.pyspy.dump(name, pid, reason)
                if path is not None:
                    self.on_dump(name, pid, reason, path)
