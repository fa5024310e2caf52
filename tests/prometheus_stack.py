"""A real Prometheus and process-exporter on loopback for tests, started by hand (no systemd).

The binaries come from the Debian packages `prometheus` and `prometheus-process-exporter`
(.ci/run installs them and sets SOAK_PROMETHEUS / SOAK_PROCESS_EXPORTER); tests that need
them skip, saying so, where they are missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

#: Seconds between two scrapes of the exporter.
SCRAPE_S = 1


def binaries() -> tuple[str, str]:
    """(prometheus, process-exporter) paths; skips the test when either is missing."""
    prometheus = os.environ.get("SOAK_PROMETHEUS") or shutil.which("prometheus")
    exporter = os.environ.get("SOAK_PROCESS_EXPORTER") or shutil.which(
        "prometheus-process-exporter"
    )
    if not prometheus or not exporter:
        pytest.skip(
            "needs the prometheus and prometheus-process-exporter binaries "
            "(apt-get install prometheus prometheus-process-exporter)"
        )
    return prometheus, exporter


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def query(url: str, promql: str) -> list:
    """The result list of one instant query."""
    args = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{args}", timeout=5) as answer:
        return json.load(answer)["data"]["result"]


@contextmanager
def _daemon(argv: list[str], log: Path, ready_url: str) -> Iterator[subprocess.Popen]:
    """Run `argv` until the context ends (stopped by its pid); wait until `ready_url` answers."""
    with open(log, "wb") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(ready_url, timeout=2):
                    break
            except OSError as exc:
                if popen.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text()[-2000:]
                    raise RuntimeError(f"{argv[0]} did not start: {tail}") from exc
                time.sleep(0.1)
        yield popen
    finally:
        popen.terminate()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


@contextmanager
def prometheus_stack(workdir: Path, groups: Mapping[str, str]) -> Iterator[str]:
    """process-exporter with one group per {groupname: cmdline regex}, scraped every
    SCRAPE_S by a Prometheus with its storage in `workdir`; yields Prometheus's URL once
    every group has a series."""
    prometheus, exporter = binaries()
    exporter_port, prometheus_port = free_port(), free_port()
    names = "\n".join(
        f"  - name: {json.dumps(name)}\n    cmdline: [{json.dumps(regex)}]"
        for name, regex in groups.items()
    )
    (workdir / "exporter.yml").write_text(f"process_names:\n{names}\n")
    (workdir / "prometheus.yml").write_text(
        f"global:\n  scrape_interval: {SCRAPE_S}s\n  evaluation_interval: {SCRAPE_S}s\n"
        f"scrape_configs:\n  - job_name: process\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter_port}']\n"
    )
    url = f"http://127.0.0.1:{prometheus_port}"
    with ExitStack() as stack:
        stack.enter_context(
            _daemon(
                [
                    exporter,
                    f"-config.path={workdir / 'exporter.yml'}",
                    f"-web.listen-address=127.0.0.1:{exporter_port}",
                ],
                workdir / "exporter.log",
                f"http://127.0.0.1:{exporter_port}/metrics",
            )  # fmt: skip
        )
        stack.enter_context(
            _daemon(
                [
                    prometheus,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                workdir / "prometheus.log",
                f"{url}/-/ready",
            )  # fmt: skip
        )
        deadline = time.monotonic() + 30
        for name in groups:
            selector = f'namedprocess_namegroup_num_threads{{groupname="{name}"}}'
            while not query(url, f"{selector} > 0"):
                assert time.monotonic() < deadline, f"no series for group {name}"
                time.sleep(0.2)
        yield url


def cmdline_regex(text: str) -> str:
    """A process-exporter cmdline regex that matches `text` literally."""
    return re.escape(text)
