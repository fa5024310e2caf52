"""Targets in containers: a real cgroup with limits, new pid and network namespaces, and
`soak collect` finding the target by its cgroup and by its port from the host.

The real part needs root and a writable cgroup mount (v1 or v2 with the memory, pids and
cpu controllers); it is skipped, saying why, elsewhere. What cannot exist on one machine
(a v2 tree beside v1, a docker daemon) is checked against a fake /sys tree or the CLI's
own error.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest

from soak.analyze.summary import cgroup_throttled_percent
from soak.cgroups import (
    NO_LIMIT,
    ProcessCgroups,
    cgroup_directories,
    cgroup_members,
    process_cgroups,
    read_limit,
    unified_mount,
)
from soak.collect.collector import Collector
from soak.collect.containers import (
    container_pid,
    namespace_pids,
    other_namespaces,
    pid_listening_elsewhere,
    pid_serving_port,
)
from soak.errors import ProfileError, RunError
from soak.profile import apply_overrides, profile_from_mapping
from soak.rundir import EVENTS, PROCESS, RunDir
from soak.target.process import start_target
from tests.test_collect_cli import free_port, soak, wait_for

MOUNT = Path("/sys/fs/cgroup")
MEMORY_LIMIT_MB = 512
PIDS_MAX = 300
CPU_QUOTA_US, CPU_PERIOD_US = 50_000, 100_000  # half a core


class RealCgroup:
    """A cgroup made for a test in every hierarchy it needs (v1: memory, pids, cpu; v2:
    one directory), with its limits; `close` kills what is left in it and removes it."""

    def __init__(self, name: str) -> None:
        self.path = f"/{name}"
        if (MOUNT / "cgroup.controllers").exists():  # v2 only
            self.directories = {"memory": MOUNT / name, "pids": MOUNT / name, "cpu": MOUNT / name}
        else:
            self.directories = {c: MOUNT / c / name for c in ("memory", "pids", "cpu")}
        self.v2 = len(set(self.directories.values())) == 1

    def create(self, cpu_quota_us: int = CPU_QUOTA_US) -> None:
        for directory in dict.fromkeys(self.directories.values()):
            directory.mkdir()
        memory, pids, cpu = (self.directories[c] for c in ("memory", "pids", "cpu"))
        memory_bytes = str(MEMORY_LIMIT_MB * 1_048_576)
        if self.v2:
            (memory / "memory.max").write_text(memory_bytes)
            (cpu / "cpu.max").write_text(f"{cpu_quota_us} {CPU_PERIOD_US}")
        else:
            (memory / "memory.limit_in_bytes").write_text(memory_bytes)
            (cpu / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (cpu / "cpu.cfs_quota_us").write_text(str(cpu_quota_us))
        (pids / "pids.max").write_text(str(PIDS_MAX))

    def join_command(self) -> str:
        """A shell command that moves the shell running it into this cgroup."""
        procs = " ".join(str(d / "cgroup.procs") for d in dict.fromkeys(self.directories.values()))
        return f"for f in {procs}; do echo $$ > $f; done"

    def close(self) -> None:
        """Kill the processes still in the cgroup (by pid) and remove its directories."""
        for directory in dict.fromkeys(self.directories.values()):
            if not directory.exists():
                continue
            for pid in cgroup_members([directory]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    directory.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def _skip_unless_cgroups_writable() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a test cgroup and new namespaces cannot be made otherwise")
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux) for the new pid and network namespaces")
    if not os.access(MOUNT / "memory", os.W_OK) and not os.access(MOUNT, os.W_OK):
        pytest.skip(f"the cgroup mount {MOUNT} is not writable here")


@pytest.fixture
def cgroup() -> Iterator[RealCgroup]:
    _skip_unless_cgroups_writable()
    group = RealCgroup(f"soak-test-{os.getpid()}-{time.monotonic_ns() % 10**6}")
    try:
        group.create()
    except OSError as exc:
        group.close()
        pytest.skip(f"cannot make a cgroup with memory, pids and cpu limits here: {exc}")
    try:
        yield group
    finally:
        group.close()


def _host_pid_of_boxed_target(wrapper: psutil.Process) -> int:
    """The host pid of the target that `unshare --fork` started (the wrapper's child)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = wrapper.children(recursive=True)
        if children:
            return children[-1].pid
        time.sleep(0.05)
    raise AssertionError("unshare started no child")


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / EVENTS).read_text().splitlines() if line]


def _sampled(runs: Path, target: str, pid: int, run_dirs: str = "*/") -> int:
    """How many process samples of `pid` the one run under `runs` has for `target`
    (`run_dirs=""`: `runs` is the run directory)."""
    files = list(runs.glob(f"{run_dirs}targets/{target}/{PROCESS}"))
    lines = files[0].read_text().splitlines() if files else []
    return sum(1 for line in lines if line.endswith("}") and json.loads(line).get("pid") == pid)


@pytest.mark.e2e
def test_collect_finds_a_target_in_its_own_cgroup_and_namespaces(
    cgroup: RealCgroup, tmp_path: Path
) -> None:
    """The built-in target in a new pid and network namespace, inside a cgroup with a
    memory limit, pids.max and a CPU quota: soak collect finds it by its cgroup and, from
    the host, by the port it listens on in its own network namespace; a new one in the
    same cgroup is a restart."""
    lo_up = "ip link set lo up 2>/dev/null; " if shutil.which("ip") else ""
    prefix = [
        "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--",
        "sh", "-c", f'{cgroup.join_command()}; {lo_up}exec "$@"', "sh",
    ]  # fmt: skip
    port, runs = free_port(), tmp_path / "runs"
    profile = tmp_path / "boxed.toml"
    profile.write_text(
        f"""
name = "boxed"
[[targets]]
name = "by-cgroup"
cgroup = "{cgroup.path}"
port = {port}
[[targets]]
name = "by-port"
port = {port}
[collector]
interval = "250ms"
detail_interval = "1s"
python_threads = false
"""
    )

    def boxed():
        return start_target(patched=True, prefix=prefix, extra_args=["--port", str(port)])

    collect = None
    try:
        with boxed() as target:
            host_pid = _host_pid_of_boxed_target(psutil.Process(target.popen.pid))
            assert target.pid == 1  # the ready file's pid: the target's own namespace's
            collect = subprocess.Popen(
                [sys.executable, "-m", "soak", "collect", str(profile), "--duration", "8s",
                 "--out", str(runs)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            names = ("by-cgroup", "by-port")
            wait_for(lambda: min(_sampled(runs, name, host_pid) for name in names) >= 3)
            os.kill(host_pid, signal.SIGKILL)  # the container's init crashes (unshare waits)
        with boxed() as again:
            new_pid = _host_pid_of_boxed_target(psutil.Process(again.popen.pid))
            out, err = collect.communicate(timeout=90)
        assert collect.returncode in (0, 4), out + err
    finally:
        if collect is not None and collect.poll() is None:
            collect.kill()
            collect.wait()
    run_dir = next(runs.iterdir())
    events = _events(run_dir)
    restarts = {e["target"]: e for e in events if e["kind"] == "target_restart"}
    for name, how in (("by-cgroup", "cgroup"), ("by-port", "port")):
        restart = restarts[name]
        assert (restart["old_pid"], restart["new_pid"], restart["ns_pid"]) == (host_pid, new_pid, 1)
        assert restart["found_by"] == how
    found = {e["target"]: e for e in events if e["kind"] == "target_found"}
    assert found["by-cgroup"]["found_by"] == "cgroup"
    assert found["by-port"]["found_by"] == "port"
    for event in found.values():
        assert event["pid"] == host_pid and event["ns_pid"] == 1
        assert {"pid", "net"} <= set(event["namespaces"])
        assert "(pid 1 in its pid namespace)" in event["message"]
    limits = found["by-cgroup"]["limits"]
    memory_file = "memory.max" if cgroup.v2 else "memory.limit_in_bytes"
    assert limits["memory_mb"] == [
        MEMORY_LIMIT_MB,
        f"cgroup memory limit, {memory_file} of {cgroup.path}",
    ]
    assert limits["threads"] == [PIDS_MAX, f"cgroup pids.max of {cgroup.path}"]
    cpu_file = "cpu.max" if cgroup.v2 else "cpu.cfs_quota_us"
    assert limits["cpu_cores"] == [0.5, f"cgroup CPU quota, {cpu_file} of {cgroup.path}"]
    samples = [
        json.loads(line)
        for line in RunDir(run_dir).target_file("by-cgroup", PROCESS).read_text().splitlines()
    ]
    sampled = [s for s in samples if s.get("pid") == host_pid]
    assert len(sampled) >= 3
    assert all(s["threads"] >= 1 and s["rss_mb"] > 5 for s in sampled)
    assert all(s["cgroup_memory_mb"] > 5 and "cgroup_cpu_periods" in s for s in sampled)
    summary = json.loads((run_dir / "summary.json").read_text())["targets"]["by-cgroup"]
    recorded = ", recorded when the target was found"
    assert summary["rss"]["limit"] == MEMORY_LIMIT_MB
    assert summary["rss"]["limit_source"] == limits["memory_mb"][1] + recorded
    assert summary["cpu"]["limit_cores"] == 0.5
    assert summary["cpu"]["limit_source"] == limits["cpu_cores"][1] + recorded
    report = (run_dir / "report.md").read_text()
    assert "| CPU limit | 0.5 cores (cgroup CPU quota, " in report.replace("\\", "")


def test_a_cpu_bound_process_under_a_quota_shows_as_throttled(
    cgroup: RealCgroup, tmp_path: Path
) -> None:
    """A busy loop in a real cgroup with half a core, watched by the collector by its
    cgroup: its records, the summary's share and the metrics show it throttled."""
    pytest.importorskip("prometheus_client")
    busy = subprocess.Popen(
        ["sh", "-c", f"{cgroup.join_command()}; exec {sys.executable} -c 'while True: pass'"]
    )
    try:
        wait_for(lambda: cgroup_members(cgroup_directories(MOUNT, cgroup.path)) == [busy.pid])
        by_directory = cgroup_directories(MOUNT, str(cgroup.directories["cpu"]))
        assert by_directory == [cgroup.directories["cpu"]]
        assert namespace_pids(busy.pid) == [busy.pid] and other_namespaces(busy.pid) == []
        profile = {
            "targets": [{"name": "busy", "cgroup": cgroup.path}],
            "collector": {"interval": 0.25, "python_threads": False},
        }
        metrics_port = free_port()
        collector = Collector(tmp_path, profile, metrics_port=metrics_port)
        stop = threading.Event()
        thread = threading.Thread(target=collector.run_until, args=(stop,))
        thread.start()
        try:
            wait_for(lambda: _sampled(tmp_path, "busy", busy.pid, run_dirs="") >= 8)
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
                metrics = response.read().decode()
        finally:
            stop.set()
            thread.join(10)
    finally:
        busy.kill()
        busy.wait()
    records = [
        json.loads(line)
        for line in RunDir(tmp_path).target_file("busy", PROCESS).read_text().splitlines()
    ]
    last = records[-1]
    assert last["cgroup_cpu_throttled_periods"] >= 3, last
    assert last["cgroup_cpu_periods"] >= last["cgroup_cpu_throttled_periods"]
    assert last["cgroup_cpu_throttled_s"] > 0
    assert 20 < last["cpu_percent"] < 80  # half a core, give or take a sample's edges
    assert cgroup_throttled_percent(pd.DataFrame.from_records(records)) > 20
    throttled = re.search(
        r'^soak_target_cgroup_cpu_periods_total\{kind="throttled",target="busy"\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    assert throttled and float(throttled.group(1)) > 0
    assert re.search(r'^soak_target_cgroup_memory_bytes\{target="busy"\} \d', metrics, re.M)


#: A stand-in for docker-proxy: listens on the host port argv[1] until killed.
FAKE_PROXY = (
    "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); "
    "s.listen(); time.sleep(600)"
)


def test_a_port_docker_proxy_forwards_leads_to_the_container_behind_it() -> None:
    """Two boxed targets (network namespaces of their own, addresses 10.200.0.2 and .3)
    listen on the same port inside; a process that runs as docker-proxy publishes the
    second on a host port: the host port finds the second box, not the proxy, and the
    inside port alone is ambiguous."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip for network namespaces with an address")
    inside, host_port = free_port(), free_port()

    def boxed(address: str):
        setup = f"ip link set lo up && ip addr add {address}/32 dev lo"
        prefix = ["unshare", "--net", "--", "sh", "-c", f'{setup} && exec "$@"', "sh"]
        return start_target(patched=True, prefix=prefix, extra_args=["--port", str(inside)])

    with boxed("10.200.0.2") as first, boxed("10.200.0.3") as second:
        proxy = subprocess.Popen(
            ["bash", "-c", 'exec -a docker-proxy "$@"', "bash", sys.executable, "-c",
             FAKE_PROXY, str(host_port), "-proto", "tcp", "-host-ip", "127.0.0.1",
             "-container-ip", "10.200.0.3", "-container-port", str(inside)]
        )  # fmt: skip
        try:
            wait_for(lambda: psutil.Process(proxy.pid).net_connections(kind="inet"), 20)
            assert pid_serving_port(host_port) == second.popen.pid
            assert pid_listening_elsewhere(inside, address="10.200.0.2") == first.popen.pid
            assert pid_serving_port(inside) is None  # two containers listen on it
            assert pid_serving_port(inside, among=[first.popen.pid]) == first.popen.pid
        finally:
            proxy.kill()
            proxy.wait()


def _fake_v2(tmp_path: Path, hybrid: bool) -> tuple[Path, Path]:
    """A /proc with process 77 and a cgroup v2 tree (under unified/ beside v1 if `hybrid`)."""
    proc, mount = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "77").mkdir(parents=True)
    (proc / "77/cgroup").write_text("0::/kubepods/pod1/ctr\n")
    root = mount / "unified" if hybrid else mount
    (root / "kubepods/pod1/ctr/inner").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "kubepods/pod1/memory.max").write_text(f"{256 * 1_048_576}\n")
    (root / "kubepods/pod1/ctr/memory.max").write_text("max\n")
    (root / "kubepods/pod1/ctr/memory.current").write_text(f"{100 * 1_048_576}\n")
    (root / "kubepods/pod1/ctr/cpu.max").write_text("200000 100000\n")
    (root / "kubepods/pod1/ctr/cpu.stat").write_text(
        "usage_usec 9000\nnr_periods 40\nnr_throttled 10\nthrottled_usec 2500000\n"
    )
    (root / "kubepods/pod1/ctr/cgroup.procs").write_text("77\n90\n")
    (root / "kubepods/pod1/ctr/inner/cgroup.procs").write_text("95\n")
    return proc, mount


@pytest.mark.parametrize("hybrid", [False, True])
def test_cgroup_v2_limits_and_usage_from_a_fake_tree(tmp_path: Path, hybrid: bool) -> None:
    """v2 (alone, or under unified/ beside v1): limits up the tree, usage, members."""
    proc, mount = _fake_v2(tmp_path, hybrid)
    assert unified_mount(mount) == (mount / "unified" if hybrid else mount)
    groups = process_cgroups(proc, mount, 77)
    assert isinstance(groups, ProcessCgroups)
    memory = groups.smallest("memory", ("memory.max",))
    assert memory is not None and memory.value == 256 * 1_048_576
    assert memory.where == "memory.max of /kubepods/pod1"
    cores = groups.cpu_cores()
    assert cores is not None and (cores.value, cores.where) == (
        2.0,
        "cpu.max of /kubepods/pod1/ctr",
    )
    assert groups.usage() == {
        "cgroup_memory_mb": 100.0,
        "cgroup_cpu_periods": 40,
        "cgroup_cpu_throttled_periods": 10,
        "cgroup_cpu_throttled_s": 2.5,
    }
    directories = cgroup_directories(mount, "/kubepods/pod1/ctr")
    assert cgroup_members(directories) == [77, 90, 95]
    assert cgroup_members(cgroup_directories(mount, "/kubepods/none")) == []


def test_cgroup_v1_no_limit_value_is_no_limit(tmp_path: Path) -> None:
    """v1 writes "no limit" as 9223372036854771712; that is not a 8 EB memory limit."""
    (tmp_path / "limit").write_text("9223372036854771712\n")
    (tmp_path / "set").write_text(f"{64 * 1_048_576}\n")
    assert NO_LIMIT < 9223372036854771712
    assert read_limit(tmp_path / "limit") is None
    assert read_limit(tmp_path / "set") == 64 * 1_048_576


def test_container_without_a_running_daemon_says_what_to_give_instead() -> None:
    """No docker daemon runs here: the error names it and says to give cgroup = or pid =."""
    if shutil.which("docker") is None and shutil.which("podman") is None:
        with pytest.raises(RunError, match="neither docker nor podman.*give cgroup = or pid ="):
            container_pid("chat-server")
        return
    try:
        pid = container_pid("soak-no-such-container")
    except RunError as exc:
        assert exc.message.endswith("give cgroup = or pid = instead.")
        assert "is not running" in exc.message or "soak-no-such-container" in exc.message
    else:
        pytest.fail(f"a container that does not exist has pid {pid}")


@pytest.mark.e2e
def test_soak_collect_with_a_container_it_cannot_resolve_fails_in_one_line(
    tmp_path: Path,
) -> None:
    """Before its run directory exists: no crashed run is left behind."""
    done = soak(
        "collect", "--container", "soak-no-such-container", "--duration", "1s",
        "--out", str(tmp_path / "runs"),
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert "give cgroup = or pid = instead" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            {"container": "web", "cgroup": "/x"},
            r"targets\[0\]\] cgroup cannot go with container: both say which process",
        ),
        ({"cgroup": "/x", "pid": 4}, r"cgroup cannot go with pid"),
        ({"container": "web", "spawn": ["srv"]}, r"container cannot go with spawn"),
        ({"cgroup": "kubepods/x"}, r"cgroup: expected an absolute cgroup path"),
        ({"cgroup": "/a/../b"}, r"cgroup: expected an absolute cgroup path"),
        ({"container": "web server"}, r"container: expected a container name or id"),
    ],
)
def test_profile_rejects_container_keys_that_cannot_work(target: dict, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        profile_from_mapping({"targets": [{"name": "t", **target}]})


def test_container_and_cgroup_find_a_target_without_url_and_on_the_command_line() -> None:
    profile = profile_from_mapping(
        {"targets": [{"name": "a", "container": "web", "process": "uvicorn"}]}
    )
    assert profile.targets[0].container == "web"
    collect = apply_overrides(
        profile_from_mapping({"name": "collect"}), cgroups=["/system.slice/app.service"]
    )
    assert [(t.name, t.cgroup) for t in collect.targets] == [("t1", "/system.slice/app.service")]
