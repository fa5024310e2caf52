"""Targets in containers: the container's process, its namespaces, the port it listens on.

A container's process runs in namespaces of its own: its pid inside (NSpid in
/proc/PID/status) is not the host's, and its sockets are in another network namespace,
where the host's /proc/net/tcp does not show them. The collector runs on the host and
samples the host pid; these helpers find that pid from a container name (docker or
podman), or from a port that only another network namespace listens on (or that
docker-proxy forwards to a container), and say which namespaces the target does not
share with soak.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from soak.collect.process import pid_on_port
from soak.errors import RunError

#: The namespaces compared with the collector's own, in the order they are listed.
NAMESPACES = ("pid", "net", "mnt", "uts", "ipc", "user", "cgroup")
#: How long `docker inspect` may take, in seconds.
INSPECT_TIMEOUT_S = 10.0
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
_PROC = Path("/proc")


def namespace_pids(pid: int, proc: Path = _PROC) -> list[int]:
    """The process's pid in each pid namespace it is in, the host's first, its
    innermost (the container's own) last: NSpid of /proc/PID/status; [pid] when unknown."""
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(word) for word in line.split()[1:]] or [pid]
    except (OSError, ValueError):
        pass
    return [pid]


def other_namespaces(pid: int, proc: Path = _PROC) -> list[str]:
    """The namespaces ("pid", "net", ...) process `pid` does not share with this process."""
    return [
        kind
        for kind in NAMESPACES
        if (theirs := _namespace(pid, kind, proc)) is not None
        and theirs != _namespace("self", kind, proc)
    ]


def pid_serving_port(port: int, among: Iterable[int] | None = None) -> int | None:
    """The process that serves TCP `port` of this machine: the one listening on it here,
    or, when that is docker-proxy, the container process it forwards to; else one
    listening on `port` in a container's network namespace (`among`: of these pids only)."""
    pid = pid_on_port(port)
    if pid is None:
        return pid_listening_elsewhere(port, among)
    forwarded = docker_proxy_target(pid)
    if forwarded is None:
        return pid
    address, container_port = forwarded
    return pid_listening_elsewhere(container_port, among, address=address)


def docker_proxy_target(pid: int, proc: Path = _PROC) -> tuple[str | None, int] | None:
    """(container ip, container port) that process `pid` forwards to when it is
    docker-proxy (from its -container-ip and -container-port arguments), else None."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if os.path.basename(argv[0]) != "docker-proxy":
        return None
    options = dict(zip(argv[1:-1], argv[2:], strict=True))
    port = options.get("-container-port", "")
    return (options.get("-container-ip"), int(port)) if port.isdigit() else None


def pid_listening_elsewhere(
    port: int,
    among: Iterable[int] | None = None,
    proc: Path = _PROC,
    address: str | None = None,
) -> int | None:
    """The process listening on TCP `port` in a network namespace other than this one's
    (a container's), read from /proc/PID/net/tcp and tcp6 of one process per namespace.

    `among`: the pids to consider (a cgroup's), else every process; `address`: only a
    namespace that has this local IPv4 address (a container's, from docker-proxy). Of
    several listeners (workers sharing a socket) the oldest, by pid order within a
    namespace; None when none listens, or when listeners in two namespaces make the
    port ambiguous.
    """
    ours = _namespace("self", "net", proc)
    by_namespace: dict[str, list[int]] = defaultdict(list)
    for pid in sorted(_all_pids(proc) if among is None else among):
        namespace = _namespace(pid, "net", proc)
        if namespace is not None and namespace != ours:
            by_namespace[namespace].append(pid)
    owners = []
    for pids in by_namespace.values():
        net = proc / str(pids[0]) / "net"
        if address is not None and address not in _local_addresses(net):
            continue
        sockets = _listening_sockets(net, port)
        owner = next((pid for pid in pids if _holds_socket(proc, pid, sockets)), None)
        if sockets and owner is not None:
            owners.append(owner)
    return owners[0] if len(owners) == 1 else None


def container_pid(container: str) -> int | None:
    """The host pid of the main process of docker or podman container `container` (name
    or id), by `docker inspect`; None when the container exists but is not running.

    Raises RunError when neither CLI is on PATH, the daemon is not running, or there is
    no such container: each says to give cgroup = or pid = instead.
    """
    cli = next((name for name in ("docker", "podman") if shutil.which(name)), None)
    instead = "give cgroup = or pid = instead"
    if cli is None:
        raise RunError(
            f"container = {container!r}: neither docker nor podman is on PATH to find it; "
            f"{instead} (the container's cgroup, e.g. /system.slice/docker-ID.scope)."
        )
    argv = [cli, "inspect", "--format", "{{.State.Pid}}", container]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=INSPECT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        failed = f"container = {container!r}: {' '.join(argv)} failed ({exc}); {instead}."
        raise RunError(failed) from None
    said = (done.stderr or done.stdout).strip().splitlines()
    first = said[0] if said else f"exit code {done.returncode}"
    if done.returncode != 0:
        if "daemon" in first.lower() or "connect" in first.lower():
            raise RunError(f"{cli} is not running: {first}; {instead}.")
        raise RunError(
            f"container = {container!r}: {cli} inspect says {first!r}; check the name with "
            f"`{cli} ps`, or {instead}."
        )
    text = done.stdout.strip()
    if not text.isdigit():
        raise RunError(f"container = {container!r}: {cli} inspect gave {text!r}; {instead}.")
    return int(text) or None  # 0: the container is not running now


def _namespace(pid: int | str, kind: str, proc: Path) -> str | None:
    try:
        return os.readlink(proc / str(pid) / "ns" / kind)
    except OSError:
        return None


def _all_pids(proc: Path) -> list[int]:
    try:
        return [int(name) for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return []


def _listening_sockets(net: Path, port: int) -> set[str]:
    """Inodes of the sockets listening on `port` in /proc/PID/net/tcp and tcp6."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (net / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and fields[1].endswith(f":{port:04X}"):
                inodes.add(fields[9])
    return inodes


def _local_addresses(net: Path) -> set[str]:
    """The IPv4 addresses of a network namespace, from its /proc/PID/net/fib_trie (an
    address line "|-- 172.17.0.2" followed by "/32 host LOCAL")."""
    try:
        lines = (net / "fib_trie").read_text().splitlines()
    except OSError:
        return set()
    return {
        line.split("|--")[1].strip()
        for line, after in zip(lines, lines[1:], strict=False)
        if "|--" in line and "host LOCAL" in after
    }


def _holds_socket(proc: Path, pid: int, inodes: set[str]) -> bool:
    """Whether process `pid` has one of the socket `inodes` open."""
    if not inodes:
        return False
    wanted = {f"socket:[{inode}]" for inode in inodes}
    fds = proc / str(pid) / "fd"
    try:
        names = os.listdir(fds)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(fds / name) in wanted:
                return True
        except OSError:
            continue
    return False
