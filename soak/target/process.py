"""Run the built-in target as a subprocess (`python -m soak.target`) for demos and tests."""

import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from soak.child import module_argv, module_env
from soak.errors import RunError

LOG_TAIL_CHARS = 2000


class TargetProcess:
    """A running target subprocess: where it listens and how to stop it.

    Use as a context manager (`with start_target(patched=True) as target: ...`) or call
    `stop()` yourself.
    """

    def __init__(
        self, popen: subprocess.Popen[bytes], info: dict[str, Any], workdir: Path, log: IO[bytes]
    ) -> None:
        self.popen = popen
        self.pid: int = info["pid"]
        self.host: str = info["host"]
        self.port: int = info["port"]
        self.ws_url: str = info["ws_url"]
        self.http_url: str = info["http_url"]
        self.health_url: str = info["health_url"]
        self.build: str = info["build"]
        self._workdir = workdir
        self._log = log

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `timeout` s; return the exit code (negative = signal)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        shutil.rmtree(self._workdir, ignore_errors=True)
        return self.popen.returncode

    def __enter__(self) -> "TargetProcess":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _log_tail(path: Path) -> str:
    """The last `LOG_TAIL_CHARS` characters of the target's log, or a note that it is empty."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    return text[-LOG_TAIL_CHARS:].strip() or "(the target wrote nothing)"


def start_target(
    *,
    patched: bool,
    extra_args: Sequence[str] = (),
    host: str = "127.0.0.1",
    timeout: float = 15.0,
    log_path: Path | None = None,
    prefix: Sequence[str] = (),
) -> TargetProcess:
    """Start `python -m soak.target` on a free port and wait up to `timeout` s until it listens.

    `extra_args` are more target flags (e.g. `["--stall-every", "1"]`). Output goes to
    `log_path`, or to a temporary log that is removed by `stop()`. `prefix` is a command
    that runs the target's argv (`["unshare", "--pid", "--fork", "--"]`: in a container of
    sorts); the ready file's pid is then the target's pid as its own namespace sees it.
    Raises `RunError` with the tail of that log if the target exits or is not listening in
    time.
    """
    workdir = Path(tempfile.mkdtemp(prefix="soak-target-"))
    ready = workdir / "ready.json"
    log_file = log_path or workdir / "target.log"
    argv = module_argv("soak.target", "--host", host, "--port", "0", "--ready-file", str(ready))
    argv = [*prefix, *argv, *(["--patched"] if patched else []), *extra_args]
    log = open(log_file, "ab")  # noqa: SIM115 - closed by TargetProcess.stop()
    popen = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=module_env()
    )
    deadline = time.monotonic() + timeout
    while not ready.exists():
        problem = None
        if popen.poll() is not None:
            problem = f"exited with code {popen.returncode}"
        elif time.monotonic() > deadline:
            problem = f"was not listening after {timeout:g} s"
            popen.kill()
            popen.wait()
        if problem:
            log.close()
            tail = _log_tail(log_file)
            shutil.rmtree(workdir, ignore_errors=True)
            raise RunError(
                f"The built-in target ({' '.join(argv[1:])}) {problem}. Its log:\n{tail}"
            )
        time.sleep(0.02)
    return TargetProcess(popen, json.loads(ready.read_text()), workdir, log)
