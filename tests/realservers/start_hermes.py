#!/usr/bin/env python3
"""Start (and stop) a REAL hermes-agent server on loopback with a fake model.

Stdlib only; imports nothing from ``soak``.  Starts two subprocesses, each in
its own process group:

1. ``fake_openai.py`` (beside this file): an OpenAI-compatible model that
   echoes the last user message, streamed in ~15 chunks.
2. ``hermes serve --host 127.0.0.1 --port PORT`` with a fresh ``$HERMES_HOME``
   made from ``hermes_home/config.yaml.template`` (model ``base_url`` =
   the fake), a clean environment (no inherited keys or proxies, ``HOME`` in the
   temp dir), and the PyPI update check pre-answered so nothing leaves the host.

``start()`` waits until hermes prints ``HERMES_BACKEND_READY``, ``GET
/api/status`` answers 200, and (``warm=True``) a WebSocket to ``/api/ws``
with the token gets its ``gateway.ready`` frame, then returns a
:class:`HermesServers` with pids and URLs.  ``stop()`` ends both by pid:
SIGTERM to each process group, then SIGKILL, and also any descendant that
left the group (hermes starts its per-session ``slash_worker`` children with
``start_new_session=True``).

Library use::

    from start_hermes import start, stop
    srv = start("/tmp/hermes-venv/bin/hermes", "/tmp/run1")
    try:
        ...  # srv.ws_url, srv.token, srv.status_url
    finally:
        stop(srv)

Command line::

    python start_hermes.py --hermes /tmp/hermes-venv/bin/hermes --tmp /tmp/run1 \
        [--port 0] [--model-port 0] [--token T] [--check]

prints one JSON line of :class:`HermesServers` and runs until SIGINT/SIGTERM;
``--check`` instead runs one prompt end to end, prints the result and stops.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAKE_MODEL = HERE / "fake_openai.py"
CONFIG_TEMPLATE = HERE / "hermes_home" / "config.yaml.template"
HOST = "127.0.0.1"
# The version the config and README were checked against.
HERMES_VERSION = "0.19.0"


@dataclasses.dataclass
class HermesServers:
    hermes_pid: int
    model_pid: int
    hermes_port: int
    model_port: int
    token: str
    ws_url: str  # ws://127.0.0.1:PORT/api/ws?token=TOKEN
    status_url: str  # http://127.0.0.1:PORT/api/status
    model_base_url: str  # http://127.0.0.1:P/v1
    tmp_dir: str
    hermes_home: str
    work_dir: str  # hermes' cwd; pass it as session.create {cwd}
    hermes_log: str  # hermes stdout+stderr
    model_log: str  # fake model request log (JSON lines)
    startup_s: float  # hermes spawn -> ready (status 200 [+ WS ready])
    # (pid, start time) of every process seen, for stop(); not for callers.
    _seen: list = dataclasses.field(default_factory=list, repr=False)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d.pop("_seen", None)
        return json.dumps(d)


# ---------------------------------------------------------------------------
# process helpers (Linux /proc)
# ---------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, starttime) of ``pid`` or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    # fields after comm: state(0) ppid(1) ... starttime is field 22 overall → index 19
    return int(rest[1]), int(rest[19])


def _descendants(root: int) -> list[tuple[int, int]]:
    """(pid, starttime) of all live descendants of ``root``."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _proc_stat(int(entry))
        if st is None:
            continue
        children.setdefault(st[0], []).append(int(entry))
        starts[int(entry)] = st[1]
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append((c, starts[c]))
            todo.append(c)
    return out


def _alive(pid: int, start: int | None = None) -> bool:
    st = _proc_stat(pid)
    if st is None:
        return False
    try:  # a zombie counts as gone
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except OSError:
        return False
    return start is None or st[1] == start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_line(path: Path, prefix: str, proc: subprocess.Popen, deadline: float) -> str:
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args[0]} exited with {proc.returncode} before "
                f"printing {prefix!r}; see {path}"
            )
        time.sleep(0.1)
    raise TimeoutError(f"no {prefix!r} in {path}")


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


# ---------------------------------------------------------------------------
# minimal WebSocket client (stdlib), enough for a readiness probe / --check
# ---------------------------------------------------------------------------


class MiniWS:
    def __init__(self, host: str, port: int, path: str, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        head, _, self.buf = buf.partition(b"\r\n\r\n")
        self.status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in self.status_line:
            self.sock.close()
            raise ConnectionError(f"WebSocket upgrade refused: {self.status_line}")

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("socket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> str:
        """Next text message (answers pings, skips pongs)."""
        parts = []
        while True:
            b0, b1 = self._need(2)
            op, ln = b0 & 0x0F, b1 & 0x7F
            if ln == 126:
                ln = int.from_bytes(self._need(2), "big")
            elif ln == 127:
                ln = int.from_bytes(self._need(8), "big")
            data = self._need(ln)
            if op == 0x8:
                raise ConnectionError(f"closed by server: {data[:2].hex()} {data[2:]!r}")
            if op == 0x9:
                self._send(0xA, data)
                continue
            if op == 0xA:
                continue
            parts.append(data)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def _send(self, op: int, data: bytes) -> None:
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x80 | op])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def send(self, text: str) -> None:
        self._send(0x1, text.encode())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(0x8, (1000).to_bytes(2, "big"))
        self.sock.close()


# ---------------------------------------------------------------------------
# start / stop
# ---------------------------------------------------------------------------


def _write_hermes_home(home: Path, model_base_url: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    cfg = CONFIG_TEMPLATE.read_text().replace("@MODEL_BASE_URL@", model_base_url)
    (home / "config.yaml").write_text(cfg)
    # tui_gateway.server, on import (first /api/ws connection), starts an update
    # check that GETs https://pypi.org/pypi/hermes-agent/json unless
    # $HERMES_HOME/.update_check holds a fresh answer for this version. A
    # timestamp far in the future stays "fresh" (now - ts < 6 h) forever.
    (home / ".update_check").write_text(
        json.dumps({"ts": 4102444800, "behind": 0, "rev": None, "ver": HERMES_VERSION})
    )
    (home / ".env").write_text("")  # hermes reads it; keep it empty


def hermes_env(tmp: Path, hermes_exe: str, token: str, extra: dict | None = None) -> dict:
    """The whole environment hermes runs with (nothing inherited but PATH basics)."""
    env = {
        "PATH": os.pathsep.join([str(Path(hermes_exe).resolve().parent), "/usr/bin", "/bin"]),
        "HOME": str(tmp / "home"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "PYTHONUNBUFFERED": "1",
        "HERMES_HOME": str(tmp / "hermes_home"),
        "HERMES_DASHBOARD_SESSION_TOKEN": token,
        "HERMES_TUI_TOOLSETS": "todo",  # one tiny local toolset
        "NO_PROXY": "127.0.0.1,localhost,::1",
        "no_proxy": "127.0.0.1,localhost,::1",
    }
    if extra:
        env.update(extra)
    return env


def start(
    hermes_exe: str,
    tmp_dir: str | os.PathLike,
    *,
    hermes_port: int = 0,
    model_port: int = 0,
    token: str | None = None,
    python: str = sys.executable,
    timeout: float = 120.0,
    warm: bool = True,
    chunks: int = 15,
    delay_ms: float = 5.0,
    extra_env: dict | None = None,
    prefix_cmd: list[str] | None = None,
) -> HermesServers:
    """Start the fake model and ``hermes serve``; return once both answer.

    ``hermes_port``/``model_port`` 0 = pick a free one.  ``prefix_cmd`` is
    put before the hermes command (e.g. ``["strace", "-f", "-o", F]``).
    On any failure both processes are stopped before the error propagates.
    """
    if shutil.which(hermes_exe) is None and not Path(hermes_exe).exists():
        raise FileNotFoundError(hermes_exe)
    tmp = Path(tmp_dir).resolve()
    for sub in ("home", "work", "logs"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    token = token or secrets.token_urlsafe(24)
    model_log = tmp / "logs" / "fake_model.jsonl"
    model_out = tmp / "logs" / "fake_model.out"
    hermes_log = tmp / "logs" / "hermes.out"

    procs: list[subprocess.Popen] = []
    srv = None
    try:
        with open(model_out, "ab") as out:
            mproc = subprocess.Popen(
                [
                    python,
                    str(FAKE_MODEL),
                    "--host",
                    HOST,
                    "--port",
                    str(model_port),
                    "--chunks",
                    str(chunks),
                    "--delay-ms",
                    str(delay_ms),
                    "--log",
                    str(model_log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(tmp),
                start_new_session=True,
            )
        procs.append(mproc)
        deadline = time.monotonic() + timeout
        line = _wait_line(model_out, "FAKE_OPENAI_READY", mproc, deadline)
        model_port = int(line.split("port=")[1])
        model_base_url = f"http://{HOST}:{model_port}/v1"

        _write_hermes_home(tmp / "hermes_home", model_base_url)
        env = hermes_env(tmp, hermes_exe, token, extra_env)
        cmd = list(prefix_cmd or []) + [
            hermes_exe,
            "serve",
            "--host",
            HOST,
            "--port",
            str(hermes_port),
        ]
        t0 = time.monotonic()
        with open(hermes_log, "ab") as out:
            hproc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(tmp / "work"),
                env=env,
                start_new_session=True,
            )
        procs.append(hproc)
        line = _wait_line(hermes_log, "HERMES_BACKEND_READY", hproc, deadline)
        hermes_port = int(line.split("port=")[1].split()[0])
        status_url = f"http://{HOST}:{hermes_port}/api/status"
        while _http_status(status_url) != 200:
            if hproc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"GET {status_url} never answered 200; see {hermes_log}")
            time.sleep(0.2)
        if warm:
            # First /api/ws connection imports tui_gateway.server (~1-2 s);
            # do it now so the first real client doesn't pay for it.
            ws = MiniWS(HOST, hermes_port, f"/api/ws?token={token}", timeout=timeout)
            try:
                first = json.loads(ws.recv())
                if (first.get("params") or {}).get("type") != "gateway.ready":
                    raise RuntimeError(f"unexpected first frame: {first}")
            finally:
                ws.close()
        startup_s = round(time.monotonic() - t0, 3)
        srv = HermesServers(
            hermes_pid=hproc.pid,
            model_pid=mproc.pid,
            hermes_port=hermes_port,
            model_port=model_port,
            token=token,
            ws_url=f"ws://{HOST}:{hermes_port}/api/ws?token={token}",
            status_url=status_url,
            model_base_url=model_base_url,
            tmp_dir=str(tmp),
            hermes_home=str(tmp / "hermes_home"),
            work_dir=str(tmp / "work"),
            hermes_log=str(hermes_log),
            model_log=str(model_log),
            startup_s=startup_s,
        )
        srv._seen = [(p.pid, (_proc_stat(p.pid) or (0, 0))[1]) for p in procs]
        srv._procs = procs  # keep Popen objects so stop() can reap them
        return srv
    except BaseException:
        _stop_pids([(p.pid, None) for p in procs], procs)
        raise


def _stop_pids(
    roots: list[tuple[int, int | None]], popens: list | None = None, timeout: float = 10.0
) -> list[int]:
    """SIGTERM each root's process group, then SIGKILL; same for descendants
    that left the group. Returns pids still alive afterwards (should be [])."""
    targets: list[tuple[int, int | None]] = []
    for pid, start in roots:
        if _alive(pid, start):
            targets.append((pid, start))
            targets.extend(_descendants(pid))
    for pid, _ in roots:
        # our children lead their own process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    for pid, start in targets:
        if _alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in popens or []:
            p.poll()
        if not any(_alive(pid, start) for pid, start in targets):
            break
        time.sleep(0.1)
    for pid, start in targets:
        if _alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for pid, _ in roots:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for p in popens or []:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)
    time.sleep(0.1)
    return [pid for pid, start in targets if _alive(pid, start)]


def stop(srv: HermesServers, timeout: float = 10.0) -> list[int]:
    """Stop hermes (first) and the fake model. Returns pids left alive ([] = clean)."""
    popens = getattr(srv, "_procs", None)
    seen = dict(srv._seen) if srv._seen else {}
    left = _stop_pids(
        [(srv.hermes_pid, seen.get(srv.hermes_pid))],
        [p for p in popens or [] if p.pid == srv.hermes_pid],
        timeout,
    )
    left += _stop_pids(
        [(srv.model_pid, seen.get(srv.model_pid))],
        [p for p in popens or [] if p.pid == srv.model_pid],
        timeout,
    )
    return left


# ---------------------------------------------------------------------------
# --check: one prompt end to end
# ---------------------------------------------------------------------------


def check_turn(srv: HermesServers, text: str | None = None, timeout: float = 60.0) -> dict:
    """session.create + prompt.submit over /api/ws; return the event types seen
    and the message.complete payload. Raises if the reply lacks the nonce."""
    n = secrets.token_hex(4)
    text = text or f"check nonce={n}"
    ws = MiniWS(HOST, srv.hermes_port, f"/api/ws?token={srv.token}", timeout=timeout)
    types: list[str] = []
    try:
        first = json.loads(ws.recv())
        types.append(first["params"]["type"])
        ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "session.create",
                    "params": {"cwd": srv.work_dir},
                }
            )
        )
        while True:
            f = json.loads(ws.recv())
            if f.get("id") == 1:
                sid = f["result"]["session_id"]
                break
        t0 = time.monotonic()
        ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "prompt.submit",
                    "params": {"session_id": sid, "text": text},
                }
            )
        )
        while True:
            f = json.loads(ws.recv())
            if f.get("id") == 2:
                types.append("result:" + json.dumps(f.get("result") or f.get("error")))
                continue
            p = f.get("params") or {}
            types.append(p.get("type"))
            if p.get("type") == "message.complete" and p.get("session_id") == sid:
                payload = p.get("payload") or {}
                break
        took = round(time.monotonic() - t0, 3)
    finally:
        ws.close()
    if n not in (payload.get("text") or "") and text == f"check nonce={n}":
        raise AssertionError(f"reply lacks nonce {n}: {payload}")
    return {"session_id": sid, "turn_s": took, "types": types, "complete": payload}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="start hermes serve + a fake model on loopback")
    ap.add_argument("--hermes", default="/tmp/hermes-venv/bin/hermes")
    ap.add_argument("--tmp", required=True, help="scratch dir (HOME, HERMES_HOME, logs)")
    ap.add_argument("--port", type=int, default=0, help="hermes port (0 = free)")
    ap.add_argument("--model-port", type=int, default=0, help="fake model port (0 = free)")
    ap.add_argument("--token", default=None)
    ap.add_argument("--check", action="store_true", help="run one turn, print, stop")
    args = ap.parse_args(argv)

    srv = start(
        args.hermes, args.tmp, hermes_port=args.port, model_port=args.model_port, token=args.token
    )
    print(srv.to_json(), flush=True)
    if args.check:
        try:
            print(json.dumps(check_turn(srv)), flush=True)
        finally:
            left = stop(srv)
            print(json.dumps({"stopped": True, "left_alive": left}), flush=True)
        return 0 if not left else 1

    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
    try:
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    left = stop(srv)
    print(json.dumps({"stopped": True, "left_alive": left}), flush=True)
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
