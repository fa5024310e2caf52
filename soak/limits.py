"""The limits a target's threads, open files and memory will run into, for time-to-limit.

The collector reads them when it finds the target's process and records them in the
`target_found` / `target_restart` event (`read_limits`), so a report made later or
elsewhere says the same. For runs recorded without them, they are read when the report
is made, only where they are the target's own: the run was recorded on this machine and
the target's process (same pid and start time as its last sample) still runs. Either way:

- threads: the smallest of the kernel's threads-max, the pids.max of the process's
  cgroup (and its parents), and its `ulimit -u` (RLIMIT_NPROC, per user);
- open fds: its `ulimit -n` (RLIMIT_NOFILE, soft);
- memory: the memory limit of its cgroup (and parents: memory.max on cgroup v2,
  memory.limit_in_bytes on v1), else the machine's MemTotal;
- CPU (cores): the quota of its cgroup (cpu.max, or cpu.cfs_quota_us / cpu.cfs_period_us),
  else none (the machine's cores, which nothing grows toward).

cgroup v1 and v2 are both read (soak.cgroups), so a target in a container gets the
container's limits.

Otherwise the defaults say so: 4,096 threads (threads-max when smaller, on the machine
that recorded the run), 1,024 fds (the usual soft `ulimit -n`), and the machine's
memory only when the run was recorded here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soak.cgroups import ProcessCgroups, process_cgroups, read_limit

#: The thread count at which trouble is expected when nothing better is known.
DEFAULT_THREADS = 4096
#: The usual soft `ulimit -n`.
DEFAULT_FDS = 1024
#: A process start time (s) read back within this of the recorded one is the same process.
_START_TOLERANCE_S = 1.0
_MB = 1_048_576


@dataclass(frozen=True)
class Limit:
    """One limit: its value (None when unknown) and where it came from, for people."""

    value: float | None
    source: str


#: The CPU limit of a process whose cgroups set no quota.
NO_CPU_QUOTA = Limit(None, "no cgroup CPU quota")


@dataclass(frozen=True)
class TargetLimits:
    """Threads (count), open fds (count), memory (MB) and CPU (cores) limits of one target."""

    threads: Limit
    fds: Limit
    memory_mb: Limit
    cpu_cores: Limit = NO_CPU_QUOTA

    def to_json(self) -> dict[str, list[Any]]:
        """{"threads": [value, source], "fds": [...], "memory_mb": [...], "cpu_cores": [...]}
        for an event."""
        return {name: [limit.value, limit.source] for name, limit in self._named()}

    @classmethod
    def from_json(cls, data: Any) -> TargetLimits | None:
        """The limits an event recorded; None when they are missing or malformed."""
        if not isinstance(data, dict):
            return None
        parts = {}
        for name in ("threads", "fds", "memory_mb", "cpu_cores"):
            entry = data.get(name)
            if name == "cpu_cores" and entry is None:  # recorded before soak read quotas
                parts[name] = Limit(None, "CPU quota not recorded")
                continue
            if not isinstance(entry, list) or len(entry) != 2:
                return None
            value, source = entry
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                return None
            parts[name] = Limit(value, f"{source}, recorded when the target was found")
        return cls(**parts)

    def _named(self) -> list[tuple[str, Limit]]:
        return [
            ("threads", self.threads),
            ("fds", self.fds),
            ("memory_mb", self.memory_mb),
            ("cpu_cores", self.cpu_cores),
        ]


@dataclass(frozen=True)
class System:
    """Where the limits are read from: /proc and the cgroup mount, v1 or v2 (tests point
    elsewhere)."""

    proc: Path = Path("/proc")
    cgroup: Path = Path("/sys/fs/cgroup")
    hostname: str = socket.gethostname()


def target_limits(
    manifest: dict[str, Any],
    pid: int | None,
    create_time: float | None,
    system: System | None = None,
    recorded: TargetLimits | None = None,
) -> TargetLimits:
    """The limits of the target whose last process sample had `pid` and `create_time`:
    `recorded` (from the collector's event for that process) when there are any."""
    if recorded is not None:
        return recorded
    system = system or System()
    host = manifest.get("host") if isinstance(manifest.get("host"), dict) else {}
    here = host.get("hostname") == system.hostname
    threads_max = read_limit(system.proc / "sys/kernel/threads-max")
    memory_total = _meminfo_mb(system.proc / "meminfo") if here else None
    if not here:
        why = "the run was recorded on another machine"
    elif not _same_process(system, pid, create_time):
        why = "the target's process is gone"
    else:
        return _live_limits(system, int(pid or 0), threads_max, memory_total)
    threads = Limit(DEFAULT_THREADS, f"default; {why}")
    if here and threads_max is not None and threads_max < DEFAULT_THREADS:
        threads = Limit(threads_max, "kernel threads-max")
    memory = (
        Limit(memory_total, "memory of this machine")
        if memory_total is not None
        else Limit(None, f"unknown; {why}")
    )
    return TargetLimits(threads, Limit(DEFAULT_FDS, f"default ulimit -n; {why}"), memory)


def read_limits(pid: int, system: System | None = None) -> TargetLimits:
    """The limits of the running process `pid`, read now from /proc and its cgroups."""
    system = system or System()
    threads_max = read_limit(system.proc / "sys/kernel/threads-max")
    return _live_limits(system, pid, threads_max, _meminfo_mb(system.proc / "meminfo"))


def _live_limits(
    system: System, pid: int, threads_max: int | None, memory_total: float | None
) -> TargetLimits:
    rlimits = _rlimits(system.proc / str(pid) / "limits")
    candidates = [
        (threads_max, "kernel threads-max"),
        (rlimits.get("Max processes"), "ulimit -u"),
    ]
    cgroups = process_cgroups(system.proc, system.cgroup, pid) or ProcessCgroups()
    pids_max = cgroups.smallest("pids", ("pids.max",))
    if pids_max is not None:
        candidates.append((int(pids_max.value), f"cgroup {pids_max.where}"))
    known = [(value, source) for value, source in candidates if value is not None]
    threads = Limit(*min(known)) if known else Limit(DEFAULT_THREADS, "default")
    nofile = rlimits.get("Max open files")
    fds = Limit(nofile, "ulimit -n") if nofile is not None else Limit(DEFAULT_FDS, "default")
    memory_max = cgroups.smallest("memory", ("memory.max", "memory.limit_in_bytes"))
    memory_max_mb = None if memory_max is None else memory_max.value / _MB
    if memory_max_mb is not None and (memory_total is None or memory_max_mb < memory_total):
        memory = Limit(memory_max_mb, f"cgroup memory limit, {memory_max.where}")
    elif memory_total is not None:
        memory = Limit(memory_total, "memory of this machine")
    else:
        memory = Limit(None, "unknown")
    quota = cgroups.cpu_cores()
    cpu = NO_CPU_QUOTA if quota is None else Limit(quota.value, f"cgroup CPU quota, {quota.where}")
    return TargetLimits(threads, fds, memory, cpu)


def _same_process(system: System, pid: int | None, create_time: float | None) -> bool:
    """True when `pid` runs and started at `create_time` (from /proc/PID/stat)."""
    if pid is None or create_time is None:
        return False
    try:
        stat = (system.proc / str(pid) / "stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in (system.proc / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return False
    fields = stat.rsplit(")", 1)[-1].split()  # fields after the command name, from state
    try:
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError):
        return False
    return abs(started - create_time) <= _START_TOLERANCE_S


def _rlimits(path: Path) -> dict[str, int]:
    """Soft limits of /proc/PID/limits by name; "unlimited" ones are left out."""
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return {}
    limits = {}
    for line in lines:
        name, soft = line[:26].strip(), line[26:].split()[:1]
        if soft and soft[0].isdigit():
            limits[name] = int(soft[0])
    return limits


def _meminfo_mb(path: Path) -> float | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None
