"""Smoke tests of the gallery servers in tests/gallery/ (independent of soak).

Each test starts a server as a real subprocess on a free loopback port, runs a
few turns with a plain ``websockets`` client, checks the documented frames
(and, where it is quick, that the fault is observable) and stops the server
with SIGTERM, expecting a clean exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

GALLERY = Path(__file__).parent / "gallery"


# -- helpers -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_tcp(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"server did not listen on {port} within {timeout}s")


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def health(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/json")
            return json.loads(resp.read())

    def threads(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        raise AssertionError("no Threads line")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def run_server(tmp_path: Path, name: str, *args: str) -> Iterator[Server]:
    port = _free_port()
    log_path = tmp_path / f"{name}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(GALLERY / f"{name}.py"), "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        clean = False
        try:
            _wait_tcp(port, proc)
            yield Server(proc, port, log_path)
            clean = True
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = None
    if clean:
        assert rc == 0, f"{name} did not exit cleanly ({rc}):\n{log_path.read_text()[-3000:]}"


def nonce() -> str:
    return "nonce=" + uuid.uuid4().hex[:8]


def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def assert_silent(ws: ClientConnection, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        ws.recv(timeout=seconds)


# -- executor_leak ---------------------------------------------------------------


def _leak_turn(ws: ClientConnection) -> str:
    n = nonce()
    ws.send(json.dumps({"type": "user_message", "text": f"what is up {n}"}))
    first = recv_json(ws)
    assert first["type"] == "reply_start"
    text = ""
    while True:
        frame = recv_json(ws)
        if frame["type"] == "reply_end":
            assert frame["reply_id"] == first["reply_id"]
            assert frame["stop_reason"] == "end_turn"
            assert set(frame["usage"]) == {"input_tokens", "output_tokens"}
            break
        assert frame["type"] == "text_delta" and frame["reply_id"] == first["reply_id"]
        text += frame["text"]
    assert n in text
    return text


@pytest.mark.parametrize("patched", [False, True])
def test_executor_leak(tmp_path: Path, patched: bool) -> None:
    args = ["--token-delay", "0.002"] + (["--patched"] if patched else [])
    with run_server(tmp_path, "executor_leak", *args) as srv:
        with connect(srv.url("/ws/chat")) as ws:
            hello = recv_json(ws)
            assert hello["type"] == "hello" and hello["conversation_id"]
            ws.send(json.dumps({"type": "ping"}))
            assert recv_json(ws)["type"] == "pong"
            for _ in range(2):
                _leak_turn(ws)
            before = srv.threads()
            for _ in range(6):
                _leak_turn(ws)
            time.sleep(0.1)
            grown = srv.threads() - before
            health = srv.health("/healthz")
        assert health["ok"] is True and health["replies_served"] == 8
        assert health["live_threads"] >= 1
        if patched:
            assert grown <= 1
        else:
            assert grown >= 5, grown


# -- stale_answer ------------------------------------------------------------------


def _nerve_turn(ws: ClientConnection, sid: str, content: str) -> str:
    ws.send(json.dumps({"type": "message", "content": content, "session_id": sid}))
    text = ""
    while True:
        frame = recv_json(ws)
        assert frame["session_id"] == sid
        if frame["type"] == "done":
            assert frame["num_turns"] >= 1 and "usage" in frame
            return text
        if frame["type"] == "token":
            text += frame["content"]
        else:
            assert frame["type"] in ("session_running", "thinking")


@pytest.mark.parametrize("patched", [False, True])
def test_stale_answer(tmp_path: Path, patched: bool) -> None:
    args = ["--drop-every", "3", "--token-delay", "0.002"] + (["--patched"] if patched else [])
    with run_server(tmp_path, "stale_answer", *args) as srv:
        assert srv.health("/health") == {"status": "ok", "version": "0.4.1"}
        with connect(srv.url("/ws")) as ws:
            hello = recv_json(ws)
            assert hello["type"] == "session_switched"
            sid = hello["session_id"]
            ws.send(json.dumps({"type": "ping"}))
            assert recv_json(ws) == {"type": "pong"}
            nonces = [nonce() for _ in range(5)]
            for n in nonces[:2]:
                assert n in _nerve_turn(ws, sid, f"question {n}")
            if patched:
                for n in nonces[2:]:
                    assert n in _nerve_turn(ws, sid, f"question {n}")
            else:
                ws.send(json.dumps({"type": "message", "content": f"question {nonces[2]}"}))
                assert_silent(ws, 0.8)  # message 3 is swallowed
                stale = _nerve_turn(ws, sid, f"question {nonces[3]}")
                assert nonces[2] in stale and nonces[3] not in stale
                assert nonces[4] in _nerve_turn(ws, sid, f"question {nonces[4]}")


# -- healthy_pool_cache ------------------------------------------------------------


def test_healthy_pool_cache(tmp_path: Path) -> None:
    args = ["--pool-size", "4", "--cache-entry-kb", "64", "--cache-clear-every", "1.5"]
    with run_server(tmp_path, "healthy_pool_cache", *args) as srv:
        with connect(srv.url("/api/ws")) as ws:
            hello = recv_json(ws)
            assert hello["event"] == "connected" and hello["client_id"]
            ws.send(json.dumps({"action": "ping"}))
            assert recv_json(ws)["event"] == "pong"
            sent = {f"e{i}": nonce() for i in range(6)}
            for eid, n in sent.items():
                ws.send(json.dumps({"action": "chat", "message": f"go {n}", "execution_id": eid}))
            streamed: dict[str, str] = {}
            ended: dict[str, dict] = {}
            while len(ended) < len(sent):
                frame = recv_json(ws)
                eid = frame["execution_id"]
                if frame["event"] == "execution_started":
                    streamed[eid] = ""
                elif frame["event"] == "output":
                    streamed[eid] += frame["delta"]
                else:
                    assert frame["event"] == "stream_end", frame
                    ended[eid] = frame
            for eid, n in sent.items():
                assert ended[eid]["status"] == "success"
                assert n in ended[eid]["response"] and ended[eid]["response"] == streamed[eid]
        diag = srv.health("/health")["diagnostics"]
        assert 2 <= diag["model_pool_threads"] <= 4
        assert diag["cache_limit_bytes"] == 96 * 1024 * 1024
        clears = diag["cache_clears"]
        deadline = time.monotonic() + 5
        while True:
            diag = srv.health("/health")["diagnostics"]
            if diag["cache_clears"] > clears and diag["cache_entries"] == 0:
                break
            assert time.monotonic() < deadline, diag
            time.sleep(0.2)
        assert diag["cache_bytes"] == 0 and diag["running_executions"] == 0


# -- silent_connect ------------------------------------------------------------------


def _generate(ws: ClientConnection, text: str, rid: str | None) -> tuple[list[dict], dict]:
    req: dict = {"op": "generate", "input": text}
    if rid is not None:
        req["request_id"] = rid
    ws.send(json.dumps(req))
    tokens: list[dict] = []
    while True:
        frame = recv_json(ws)
        if rid is None:
            assert "request_id" not in frame
        else:
            assert frame["request_id"] == rid
        if frame["op"] != "token":
            return tokens, frame
        assert frame["index"] == len(tokens)
        tokens.append(frame)


def test_silent_connect(tmp_path: Path) -> None:
    with run_server(tmp_path, "silent_connect") as srv:
        assert srv.health("/v1/health")["status"] == "healthy"
        with connect(srv.url("/api/v1/stream")) as ws:
            assert_silent(ws, 0.5)  # nothing on connect
            ws.send(json.dumps({"op": "ping", "request_id": "p1"}))
            assert recv_json(ws) == {"op": "pong", "request_id": "p1"}
            n = nonce()
            tokens, final = _generate(ws, f"tell me {n}", "q1")
            assert final["op"] == "final" and final["finish_reason"] == "stop"
            assert final["text"] == "".join(t["text"] for t in tokens) and n in final["text"]
            n = nonce()
            _, final = _generate(ws, f"and {n}", None)
            assert final["op"] == "final" and n in final["text"]


@pytest.mark.parametrize("patched", [False, True])
def test_silent_connect_silent_stop(tmp_path: Path, patched: bool) -> None:
    args = ["--fault", "silent-stop", "--fault-every", "2"] + (["--patched"] if patched else [])
    with (
        run_server(tmp_path, "silent_connect", *args) as srv,
        connect(srv.url("/api/v1/stream")) as ws,
    ):
        _, final = _generate(ws, f"one {nonce()}", "r1")
        assert final["op"] == "final"
        if patched:
            _, last = _generate(ws, f"two {nonce()}", "r2")
            assert last["op"] == "error" and last["code"] == "internal"
        else:
            ws.send(json.dumps({"op": "generate", "input": "two", "request_id": "r2"}))
            frames = []
            with pytest.raises(TimeoutError):
                while True:
                    frames.append(json.loads(ws.recv(timeout=0.8)))
            assert frames and all(f["op"] == "token" for f in frames)
        _, final = _generate(ws, f"three {nonce()}", "r3")
        assert final["op"] == "final"


# -- loop_starve ---------------------------------------------------------------------


def _rpc(ws: ClientConnection, rid: int, method: str, params: dict | None = None) -> dict:
    ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}))
    while True:
        frame = recv_json(ws)
        if frame.get("id") == rid:
            return frame
        assert frame.get("method") == "event"


def _hermes_turn(ws: ClientConnection, sid: str, rid: int, text: str) -> list[dict]:
    assert _rpc(ws, rid, "prompt.submit", {"session_id": sid, "text": text})["result"] == {
        "status": "streaming"
    }
    events = []
    while True:
        params = recv_json(ws)["params"]
        assert params["session_id"] == sid
        events.append(params)
        if params["type"] == "message.complete":
            return events


@pytest.mark.parametrize("patched", [False, True])
def test_loop_starve(tmp_path: Path, patched: bool) -> None:
    args = ["--block-every", "2", "--block-seconds", "2.5"]
    args += ["--ping-interval", "0.5", "--ping-timeout", "0.5", "--token-delay", "0.003"]
    args += ["--patched"] if patched else []
    with (
        run_server(tmp_path, "loop_starve", *args) as srv,
        connect(srv.url("/api/ws")) as idle,
        connect(srv.url("/api/ws")) as ws,
    ):
        for conn in (idle, ws):
            ready = recv_json(conn)
            assert ready["method"] == "event"
            assert ready["params"]["type"] == "gateway.ready"
        assert _rpc(ws, 1, "ping")["result"] == {"pong": True}
        assert _rpc(ws, 2, "no.such")["error"]["code"] == -32601
        sid = _rpc(ws, 3, "session.create", {"source": "test"})["result"]["session_id"]
        n = nonce()
        events = _hermes_turn(ws, sid, 4, f"first {n}")
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[0]["type"] == "message.start"
        done = events[-1]["payload"]
        assert done["status"] == "complete" and n in done["text"]
        assert done["text"] == "".join(
            e["payload"]["text"] for e in events if e["type"] == "message.delta"
        )
        if patched:
            events = _hermes_turn(ws, sid, 5, f"second {nonce()}")
            assert "tool.complete" in [e["type"] for e in events]
            assert _rpc(idle, 1, "ping")["result"] == {"pong": True}
            status = srv.health("/api/status")
            assert status["keepalive"]["dropped_connections"] == 0
            assert status["max_loop_lag_ms"] < 1000
        else:
            ws.send(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 5,
                        "method": "prompt.submit",
                        "params": {"session_id": sid, "text": "second"},
                    }
                )
            )
            for conn in (ws, idle):
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        frame = recv_json(conn, timeout=8)
                        assert frame.get("params", {}).get("type") != "message.complete"
                assert info.value.rcvd is not None and info.value.rcvd.code == 1011
            status = srv.health("/api/status")
            assert status["keepalive"]["dropped_connections"] >= 2
            assert status["max_loop_lag_ms"] >= 400


# -- orphan_ticker -------------------------------------------------------------------


def _agentex_streams(ws: ClientConnection, count: int) -> None:
    sent = {i: nonce() for i in range(count)}
    for i, n in sent.items():
        ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": i,
                    "method": "message/send",
                    "params": {
                        "content": {"type": "text", "author": "user", "content": f"do {n}"},
                        "stream": True,
                    },
                }
            )
        )
    started: set[int] = set()
    finished: set[int] = set()
    while len(finished) < count:
        frame = recv_json(ws)
        result = frame["result"]
        rid = frame["id"]
        assert rid not in finished
        if result["type"] == "start":
            started.add(rid)
            assert result["task_id"].startswith("task-")
        elif result["type"] == "delta":
            assert rid in started and result["delta"]["text_delta"]
        else:
            assert result["type"] == "full", result
            assert sent[rid] in result["content"]["content"]
            finished.add(rid)


def test_orphan_ticker_idle_cpu(tmp_path: Path) -> None:
    streams = 120
    cpu: dict[bool, float] = {}
    for patched in (False, True):
        args = ["--token-delay", "0.004"] + (["--patched"] if patched else [])
        with run_server(tmp_path, "orphan_ticker", *args) as srv:
            with connect(srv.url("/agents/fake-agent/ws")) as ws:
                ws.send(json.dumps({"jsonrpc": "2.0", "id": "p", "method": "ping"}))
                assert recv_json(ws) == {"jsonrpc": "2.0", "id": "p", "result": {"pong": True}}
                _agentex_streams(ws, streams)
                assert_silent(ws, 0.3)  # no frame after the ends
            health = srv.health("/healthz")
            assert health["active_streams"] == 0 and health["streams_total"] == streams
            c0, t0 = srv.cpu_seconds(), time.monotonic()
            time.sleep(1.5)
            cpu[patched] = (srv.cpu_seconds() - c0) / (time.monotonic() - t0)
    assert cpu[False] > 0.02, cpu
    assert cpu[False] > 3 * cpu[True], cpu


def test_orphan_ticker_late_delta_dup_done(tmp_path: Path) -> None:
    with (
        run_server(tmp_path, "orphan_ticker", "--late-delta", "--dup-done") as srv,
        connect(srv.url("/agents/fake-agent/ws")) as ws,
    ):
        n = nonce()
        ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 7,
                    "method": "message/send",
                    "params": {"content": f"plain {n}", "stream": True},
                }
            )
        )
        types = []
        while "full" not in types:
            types.append(recv_json(ws)["result"]["type"])
        after = []
        with pytest.raises(TimeoutError):
            while True:
                after.append(json.loads(ws.recv(timeout=0.5))["result"]["type"])
        assert sorted(after) == ["delta", "done"], after
