"""A process's cgroups, v1 and v2: which they are, what they limit, what they use.

cgroup v2 has one hierarchy, mounted at /sys/fs/cgroup (or /sys/fs/cgroup/unified beside
v1 on a hybrid host); v1 has one per controller (/sys/fs/cgroup/memory, .../pids,
.../cpu or .../cpu,cpuacct). /proc/PID/cgroup names the process's cgroup in each:
`0::/path` for v2, `4:memory:/path` for v1. A limit is the smallest one set on the
process's cgroup and its parents, in either version: a container's limit is often set on
its pod or slice, not on its own cgroup.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number
#: (9223372036854771712); anything from here up is no limit.
NO_LIMIT = 2**62
_MB = 1_048_576


@dataclass(frozen=True)
class CgroupSetting:
    """A value set in a cgroup file (a limit), and which file of which cgroup set it."""

    value: float
    file: str
    cgroup: str  # its path in the hierarchy, "/kubepods/pod1/abc"

    @property
    def where(self) -> str:
        """ "memory.max of /kubepods/pod1/abc", for a limit's source."""
        return f"{self.file} of {self.cgroup}"


@dataclass(frozen=True)
class ProcessCgroups:
    """The cgroup directories of one process: v1 per controller, and its v2 one."""

    unified: Path | None = None
    unified_root: Path | None = None
    #: controller ("memory", "pids", "cpu") -> (its hierarchy's mount, the cgroup directory)
    by_controller: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def places(self, controller: str) -> list[tuple[Path, Path]]:
        """(mount, directory) pairs where `controller`'s files of this process can be."""
        places = [self.by_controller[controller]] if controller in self.by_controller else []
        if self.unified is not None and self.unified_root is not None:
            places.append((self.unified_root, self.unified))
        return places

    def smallest(self, controller: str, names: tuple[str, ...]) -> CgroupSetting | None:
        """The smallest integer in files `names` of the cgroup or any parent (None: no limit)."""
        found = [
            CgroupSetting(value, name, _cgroup_path(root, directory))
            for root, directory in self._up_the_tree(controller)
            for name in names
            if (value := read_limit(directory / name)) is not None
        ]
        return min(found, key=lambda setting: setting.value, default=None)

    def cpu_cores(self) -> CgroupSetting | None:
        """The CPU quota in cores (cpu.max, or cpu.cfs_quota_us / cpu.cfs_period_us), the
        smallest up the tree; None when no quota is set."""
        found = []
        for root, directory in self._up_the_tree("cpu"):
            v2 = _words(directory / "cpu.max")
            if len(v2) == 2 and v2[0].isdigit() and v2[1].isdigit() and int(v2[1]):
                found.append(_cores(int(v2[0]), int(v2[1]), "cpu.max", root, directory))
            quota = _read_int(directory / "cpu.cfs_quota_us")  # -1: no quota
            period = _read_int(directory / "cpu.cfs_period_us")
            if quota is not None and quota > 0 and period:
                found.append(_cores(quota, period, "cpu.cfs_quota_us", root, directory))
        return min(found, key=lambda setting: setting.value, default=None)

    def usage(self) -> dict[str, Any]:
        """The cgroup's own usage now: cgroup_memory_mb (all its processes), and from
        cpu.stat the CFS periods so far, how many were throttled, and for how long (s)."""
        usage: dict[str, Any] = {}
        for _, directory in self.places("memory"):
            used = _read_int(directory / "memory.current") or _read_int(
                directory / "memory.usage_in_bytes"
            )
            if used is not None:
                usage["cgroup_memory_mb"] = round(used / _MB, 2)
                break
        for _, directory in self.places("cpu"):
            stat = _stat(directory / "cpu.stat")
            if "nr_periods" in stat:
                throttled_s = (
                    stat["throttled_usec"] / 1e6
                    if "throttled_usec" in stat  # v2
                    else stat.get("throttled_time", 0) / 1e9  # v1: nanoseconds
                )
                usage["cgroup_cpu_periods"] = stat["nr_periods"]
                usage["cgroup_cpu_throttled_periods"] = stat.get("nr_throttled", 0)
                usage["cgroup_cpu_throttled_s"] = round(throttled_s, 3)
                break
        return usage

    def _up_the_tree(self, controller: str) -> Iterator[tuple[Path, Path]]:
        """(mount, directory) of the process's cgroup and each parent below the mount."""
        for root, leaf in self.places(controller):
            for directory in (leaf, *leaf.parents):
                if directory != root and root not in directory.parents:
                    break
                yield root, directory


def process_cgroups(proc: Path, mount: Path, pid: int) -> ProcessCgroups | None:
    """The cgroups of process `pid` (from `proc`/PID/cgroup, under the cgroup `mount`);
    None when the process is gone or unreadable."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    unified = unified_root = None
    by_controller: dict[str, tuple[Path, Path]] = {}
    for line in lines:
        _, controllers, relative = (line.split(":", 2) + ["", ""])[:3]
        relative = relative.strip().lstrip("/")
        if controllers == "":
            unified_root = unified_mount(mount)
            unified = unified_root / relative
            continue
        for controller in controllers.split(","):
            root = next(
                (r for r in (mount / controllers, mount / controller) if r.is_dir()),
                mount / controllers,
            )
            by_controller[controller] = (root, root / relative)
    return ProcessCgroups(unified, unified_root, by_controller)


def unified_mount(mount: Path) -> Path:
    """Where cgroup v2 is mounted: `mount` itself, or `mount`/unified on a hybrid host."""
    hybrid = mount / "unified"
    if not (mount / "cgroup.controllers").exists() and (hybrid / "cgroup.controllers").exists():
        return hybrid
    return mount


def cgroup_directories(mount: Path, path: str) -> list[Path]:
    """The directories of cgroup `path` ("/kubepods/pod1/abc", or a directory under
    `mount` such as "/sys/fs/cgroup/memory/app"): in the v2 hierarchy and in every v1 one
    that has it."""
    given = Path(path)
    if given.is_absolute() and mount in given.parents and given.is_dir():
        return [given]
    relative = path.strip("/")
    hierarchies = [unified_mount(mount)]
    if not (mount / "cgroup.controllers").exists():
        hierarchies += sorted(p for p in _subdirectories(mount) if p.name != "unified")
    return [root / relative for root in hierarchies if (root / relative).is_dir()]


def cgroup_members(directories: list[Path]) -> list[int]:
    """The pids in the cgroups `directories` and every cgroup below them, sorted."""
    pids: set[int] = set()
    for top in directories:
        for directory, _, _ in os.walk(top):
            for word in _words(Path(directory) / "cgroup.procs"):
                if word.isdigit():
                    pids.add(int(word))
    return sorted(pids)


def read_limit(path: Path) -> int | None:
    """An integer limit file (pids.max, memory.max, memory.limit_in_bytes); None for
    "max", v1's "no limit" number, or an unreadable file."""
    value = _read_int(path)
    return None if value is None or value >= NO_LIMIT else value


def _cores(quota: int, period: int, file: str, root: Path, directory: Path) -> CgroupSetting:
    return CgroupSetting(round(quota / period, 3), file, _cgroup_path(root, directory))


def _cgroup_path(root: Path, directory: Path) -> str:
    relative = directory.relative_to(root)
    return "/" if relative == Path() else f"/{relative}"


def _subdirectories(path: Path) -> list[Path]:
    try:
        return [entry for entry in path.iterdir() if entry.is_dir()]
    except OSError:
        return []


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _read_int(path: Path) -> int | None:
    words = _words(path)
    if len(words) != 1:
        return None
    try:
        return int(words[0])
    except ValueError:
        return None


def _stat(path: Path) -> dict[str, int]:
    """A "name value" per line file (cpu.stat) as a dict of integers."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    stat = {}
    for line in lines:
        name, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            stat[name] = int(value)
    return stat
