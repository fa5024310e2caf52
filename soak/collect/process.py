"""Process samples with psutil and /proc: threads, thread-name families, RSS, CPU, fds."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

_DIGITS = re.compile(r"\d+")


def fold_thread_name(name: str) -> str:
    """Group thread names into families: digit runs become N (asyncio_12 -> asyncio_N)."""
    return _DIGITS.sub("N", name.strip()) or "?"


def thread_families(pid: int) -> dict[str, int]:
    """Count the threads of a process per family, from /proc/PID/task/*/comm (Linux)."""
    families: dict[str, int] = {}
    for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
        try:
            name = comm.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # the thread ended between listing and reading
        family = fold_thread_name(name)
        families[family] = families.get(family, 0) + 1
    return dict(sorted(families.items()))


def pid_listening_on(url: str) -> int | None:
    """The pid of the process listening on the port of `url`, if this machine has one."""
    parts = urlsplit(url)
    default = 443 if parts.scheme in ("wss", "https") else 80
    port = parts.port or default
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


class ProcessSampler:
    """Samples one process; `attach` again after a restart (new pid)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.pid = pid
        self.create_time = self.process.create_time()
        self.process.cpu_percent(None)  # the first value is always 0.0: prime it

    def sample(self) -> dict[str, Any]:
        """One sample; raises psutil.NoSuchProcess when the process is gone."""
        proc = self.process
        with proc.oneshot():
            times = proc.cpu_times()
            record: dict[str, Any] = {
                "t": time.time(),
                "pid": self.pid,
                "create_time": self.create_time,
                "threads": proc.num_threads(),
                "rss_mb": round(proc.memory_info().rss / 1_048_576, 3),
                "cpu_percent": round(proc.cpu_percent(None), 2),
                "cpu_user_s": round(times.user, 3),
                "cpu_system_s": round(times.system, 3),
                "fds": _num_fds(proc),
                "children": len(proc.children()),
            }
        return record

    def alive(self) -> bool:
        try:
            return self.process.is_running() and self.process.create_time() == self.create_time
        except psutil.Error:
            return False


def _num_fds(proc: psutil.Process) -> int | None:
    try:
        return proc.num_fds()
    except (psutil.AccessDenied, AttributeError):
        return None
