"""Python thread census: py-spy names the threads of a plain CPython process, which /proc
cannot (CPython before 3.14 gives threads no OS name: every comm is the program's)."""

import subprocess
import sys
import textwrap
import time

import pytest

from soak.collect.forensics import CensusError, find_pyspy, python_thread_names
from soak.collect.process import NATIVE, ThreadNames, fold_thread_name, looks_like_python

SERVER = textwrap.dedent(
    """
    import concurrent.futures, threading, time
    import numpy  # OpenBLAS starts threads of its own: native, no Python state
    keep = []
    for _ in range(3):  # per-call executors kept alive: the leak of issue 10
        pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="gemini-call")
        pool.submit(time.sleep, 0)
        keep.append(pool)
    for n in range(2):
        threading.Thread(target=time.sleep, args=(60,), name=f"watchdog-{n}", daemon=True).start()
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def python_process():
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    try:
        assert process.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def test_census_names_python_threads_and_counts_the_rest_native(python_process) -> None:
    import psutil

    pid = python_process.pid
    assert looks_like_python(psutil.Process(pid))
    names = ThreadNames(pid)
    before = names.families(refresh=True)
    programs = {fold_thread_name(name) for name in ("python", "python3", "python3.11")}
    assert set(before) <= programs  # /proc knows no better (comm is how python was run)
    executable = find_pyspy()
    assert executable, "py-spy is a dependency of soak"
    tids = names.thread_ids()
    census = python_thread_names(executable, pid)
    names.set_census(census, tids)
    after = names.families()
    assert after["gemini-call_N"] == 3
    assert after["watchdog-N"] == 2 and after["MainThread"] == 1
    assert after.get(NATIVE, 0) == len(tids) - len(census) > 0
    assert sum(after.values()) == len(tids)


def test_census_of_a_missing_process_is_an_error_not_a_crash() -> None:
    executable = find_pyspy()
    assert executable
    with pytest.raises(CensusError):
        python_thread_names(executable, 2**22 + 12345)


def test_a_shell_is_not_a_python_process() -> None:
    import psutil

    sleeper = subprocess.Popen(["sleep", "5"])
    try:
        assert not looks_like_python(psutil.Process(sleeper.pid))
    finally:
        sleeper.kill()
        sleeper.wait()
