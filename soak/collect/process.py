"""Process samples with psutil and /proc: threads, thread-name families, memory, CPU, fds.

A sample is cheap (one /proc/PID/stat + status read, one fd listing, one task
listing): it runs every collector interval. The costlier parts (USS from
smaps_rollup, TCP sockets by state, child processes, context switches, a fresh
read of every thread name) run only on *detail* samples, every
`collector.detail_interval`, so a 1 s interval stays well under 1% of a core
against a target with 500 threads and 1,000 fds (benchmarks/collector_cpu.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Collection, Iterator
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import psutil

from soak.rundir import FamilyCap

_DIGITS = re.compile(r"\d+")
#: A word of hex digits with a digit in it (a hash, a uuid part, an address): one id.
_HEX_ID = re.compile(r"(?<![A-Za-z])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{4,}(?![A-Za-z])")
#: Family of the threads of a Python process that have no Python thread state.
NATIVE = "native"
_PYTHON_EXE = re.compile(r"^(python|pypy)[\d.]*m?$")
_MB = 1_048_576
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def fold_thread_name(name: str) -> str:
    """Group thread names into families: digit runs become N (asyncio_12 -> asyncio_N),
    and so do hex ids (worker-3fa9c2 -> worker-N), which would make a family per thread."""
    return _DIGITS.sub("N", _HEX_ID.sub("N", name.strip())) or "?"


class ThreadNames:
    """Thread-name families of one process from /proc/PID/task/*/comm (Linux).

    Names are remembered per thread id: a sample lists the task directory and
    reads `comm` only for threads it has not seen, unless `refresh` asks to
    re-read every name (a thread may rename itself after it started).

    For a Python process, `set_census` gives the Python names of its threads (py-spy).
    A thread whose `comm` is just the program's name (CPython before 3.14 names none of
    its threads) or a cut-off start of its Python name (3.14 keeps 15 bytes) is named by
    its Python name; one that was alive at the census with no Python name and the
    program's `comm` is NATIVE; a thread with an OS name of its own keeps it, and one
    newer than the census keeps its `comm` until the next census.

    At most MAX_FAMILIES families are told apart, the first ones seen; the threads of
    any later family count as THREADS_OTHER (`capped` says so): a server that names every
    thread anew must not make threads.jsonl grow without bound.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cap = FamilyCap()
        self._family_of: dict[str, str] = {}
        self._census: dict[str, str] = {}
        self._census_alive: frozenset[str] = frozenset()
        self._program: str | None = None

    def set_census(self, names: dict[int, str], alive: set[str] | None = None) -> None:
        """Python thread names by thread id; `alive`: the thread ids listed at that moment."""
        self._census = {str(tid): name.strip() for tid, name in names.items()}
        self._census_alive = frozenset(alive if alive is not None else self.thread_ids())
        self._program = (_read_comm(f"/proc/{self.pid}/comm") or "").strip()
        self._family_of = {}

    @property
    def censused(self) -> bool:
        """Whether a census was taken."""
        return self._program is not None

    @property
    def census_alive(self) -> frozenset[str]:
        """The thread ids alive at the last census."""
        return self._census_alive

    def thread_ids(self) -> set[str]:
        try:
            return set(os.listdir(f"/proc/{self.pid}/task"))
        except OSError:
            return set()

    def families(self, refresh: bool = False) -> dict[str, int]:
        """{family: thread count}, sorted by family; empty when the process is gone."""
        task = f"/proc/{self.pid}/task"
        try:
            tids = os.listdir(task)
        except OSError:
            return {}
        known = {} if refresh else self._family_of
        current: dict[str, str] = {}
        for tid in tids:
            family = known.get(tid)
            if family is None:
                name = _read_comm(f"{task}/{tid}/comm")
                if name is None:
                    continue  # the thread ended between listing and reading
                family = self._family(tid, name.strip())
            current[tid] = family
        self._family_of = current
        return dict(sorted(Counter(map(self._cap, current.values())).items()))

    @property
    def capped(self) -> bool:
        """Whether a family beyond MAX_FAMILIES was counted as THREADS_OTHER."""
        return self._cap.capped

    def _family(self, tid: str, comm: str) -> str:
        python = self._census.get(tid)
        inherited = comm == self._program
        if python is not None and (inherited or (comm and python.startswith(comm))):
            return fold_thread_name(python)
        if python is None and inherited and tid in self._census_alive:
            return NATIVE
        return fold_thread_name(comm)


def _read_comm(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 64).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def looks_like_python(proc: psutil.Process) -> bool:
    """Whether a process runs a Python interpreter (its executable is python*/pypy*)."""
    try:
        return bool(_PYTHON_EXE.match(os.path.basename(proc.exe())))
    except (psutil.Error, OSError):
        return False


def thread_families(pid: int) -> dict[str, int]:
    """Count the threads of a process per family, from /proc/PID/task/*/comm (Linux)."""
    return ThreadNames(pid).families(refresh=True)


# --- finding the target's process ------------------------------------------------------
def port_of(url: str | None) -> int | None:
    """The TCP port of a ws/wss/http/https URL (its default when none is written)."""
    if not url:
        return None
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    return port or (443 if parts.scheme in ("wss", "https") else 80)


def is_local_url(url: str | None) -> bool:
    """True when the URL's host is this machine: only then can its port name a local process."""
    if not url:
        return False
    host = urlsplit(url).hostname or ""
    return host.lower() in _local_hosts() or _resolves_locally(host)


@cache
def _local_hosts() -> frozenset[str]:
    names = set(_LOOPBACK_NAMES) | {"0.0.0.0", "::", socket.gethostname().lower()}
    with contextlib.suppress(OSError):
        for addresses in psutil.net_if_addrs().values():
            names.update(a.address.split("%")[0].lower() for a in addresses)
    return frozenset(names)


def _resolves_locally(host: str) -> bool:
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]).split("%")[0] for info in infos}
    return bool(addresses) and all(
        a in _local_hosts() or a.startswith("127.") or a == "::1" for a in addresses
    )


def pid_on_port(port: int) -> int | None:
    """The pid of the process listening on TCP `port` on this machine, if any."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def pid_listening_on(url: str) -> int | None:
    """The pid of the process listening on the port of `url`, if this machine has one."""
    port = port_of(url)
    return None if port is None else pid_on_port(port)


def pid_matching(
    pattern: re.Pattern[str] | None, among: Collection[int] | None = None
) -> int | None:
    """The process whose name or command line matches `pattern` (re.search; None: any).

    `among`: only these pids (a container's cgroup), else every process. soak's own
    process and its ancestors are skipped (their command lines may hold the pattern).
    Of several matches the outermost one (whose parent does not match) wins, the oldest
    first: a server's master rather than its workers, a container's first process.
    """
    me = psutil.Process()
    skip = {me.pid, *(p.pid for p in _safe_parents(me))}
    matches: dict[int, tuple[float, int]] = {}
    for proc in _processes(among):
        info = proc.info
        if proc.pid in skip:
            continue
        cmdline = " ".join(info.get("cmdline") or [])
        if (
            pattern is None
            or pattern.search(info.get("name") or "")
            or (cmdline and pattern.search(cmdline))
        ):
            matches[proc.pid] = (info.get("create_time") or 0.0, info.get("ppid") or 0)
    outer = [(created, pid) for pid, (created, ppid) in matches.items() if ppid not in matches]
    return min(outer)[1] if outer else None


def _processes(among: Collection[int] | None) -> Iterator[psutil.Process]:
    """Every process, or those of `among` that run, with name, cmdline, create_time, ppid."""
    attrs = ["name", "cmdline", "create_time", "ppid"]
    if among is None:
        yield from psutil.process_iter(attrs)
        return
    for pid in among:
        try:
            proc = psutil.Process(pid)
            proc.info = proc.as_dict(attrs)
        except psutil.Error:
            continue
        yield proc


def _safe_parents(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.parents()
    except psutil.Error:
        return []


# --- sampling ---------------------------------------------------------------------------
def program_of(proc: psutil.Process) -> str:
    """What program a process runs, stable across its restarts: the executable's name and
    its first argument that is not an option ("python server.py", "python -m app",
    "uvicorn app:main"); paths cut to their last part."""
    try:
        argv = proc.cmdline()
    except psutil.Error:
        argv = []
    if not argv:
        with contextlib.suppress(psutil.Error):
            return proc.name()
        return "?"
    words = [os.path.basename(argv[0])]
    rest = iter(argv[1:])
    for arg in rest:
        if arg == "-m":
            words.append(f"-m {next(rest, '')}")
            break
        if not arg.startswith("-"):
            words.append(os.path.basename(arg))
            break
    return " ".join(words)


class ProcessSampler:
    """Samples one process (one pid and start time); a restart needs a new sampler."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.pid = pid
        self.create_time = self.process.create_time()
        self.program = program_of(self.process)
        self.process.cpu_percent(None)  # the first value is always 0.0: prime it
        self.thread_names = ThreadNames(pid)
        self.children = 0
        self._child_procs: dict[int, psutil.Process] = {}

    def sample(self, detail: bool = False) -> dict[str, Any]:
        """One process.jsonl record; raises psutil.NoSuchProcess (or ZombieProcess)
        when the process is gone.

        Every record: t, pid, create_time, threads, rss_mb, cpu_percent, cpu_user_s,
        cpu_system_s, fds, children. `detail` adds uss_mb, sockets, ctx_switches_voluntary,
        ctx_switches_involuntary, children_rss_mb, children_cpu_percent, children_threads.
        """
        proc = self.process
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:  # ended, not yet reaped: no numbers
                raise psutil.ZombieProcess(self.pid)
            times = proc.cpu_times()
            record: dict[str, Any] = {
                "t": round(time.time(), 3),
                "pid": self.pid,
                "create_time": self.create_time,
                "threads": proc.num_threads(),
                "rss_mb": round(proc.memory_info().rss / _MB, 2),
                "cpu_percent": round(proc.cpu_percent(None), 1),
                "cpu_user_s": round(times.user, 2),
                "cpu_system_s": round(times.system, 2),
                "fds": _num_fds(proc),
            }
            if detail:
                switches = proc.num_ctx_switches()
                record["ctx_switches_voluntary"] = switches.voluntary
                record["ctx_switches_involuntary"] = switches.involuntary
        if detail:
            record.update(self._detail())
        record["children"] = self.children
        return record

    def families(self, refresh: bool = False) -> dict[str, int]:
        """Thread-name families (see ThreadNames)."""
        return self.thread_names.families(refresh)

    def _detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {}
        with contextlib.suppress(psutil.AccessDenied):
            detail["uss_mb"] = round(self.process.memory_full_info().uss / _MB, 2)
        with contextlib.suppress(psutil.AccessDenied):
            detail["sockets"] = socket_states(self.process)
        detail.update(self._children_totals())
        return detail

    def _children_totals(self) -> dict[str, Any]:
        """Descendant processes: count, summed RSS, CPU (% of one core since the last call)."""
        try:
            found = self.process.children(recursive=True)
        except psutil.AccessDenied:
            found = []
        known, current = self._child_procs, {}
        rss = cpu = threads = 0.0
        for child in found:
            same = known.get(child.pid)
            child = same if same is not None and same == child else child
            try:
                with child.oneshot():
                    cpu += child.cpu_percent(None)  # 0.0 for a child first seen now
                    rss += child.memory_info().rss
                    threads += child.num_threads()
            except psutil.Error:
                continue
            current[child.pid] = child
        self._child_procs = current
        self.children = len(current)
        return {
            "children_rss_mb": round(rss / _MB, 2),
            "children_cpu_percent": round(cpu, 1),
            "children_threads": int(threads),
        }

    def alive(self) -> bool:
        """Whether the process runs: the same start time, and not a zombie (a container's
        init that ended stays one until its parent reaps it)."""
        try:
            return (
                self.process.is_running()
                and self.process.create_time() == self.create_time
                and self.process.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False


def socket_states(proc: psutil.Process) -> dict[str, int]:
    """The process's inet sockets by TCP state ({"ESTABLISHED": 120, "LISTEN": 1}); UDP as UDP."""
    states = Counter(
        "UDP" if conn.type == socket.SOCK_DGRAM else conn.status
        for conn in proc.net_connections(kind="inet")
    )
    return dict(sorted(states.items()))


def _num_fds(proc: psutil.Process) -> int | None:
    try:
        return proc.num_fds()
    except (psutil.AccessDenied, AttributeError):
        return None
