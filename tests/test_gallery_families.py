"""Smoke tests of the gallery servers that mimic real agent servers' wire protocols.

Each server runs as a real subprocess on a free loopback port and is driven the
way its real web UI drives the real server.  Independent of soak: plain
python-socketio / requests / websockets clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import string
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import socketio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

GALLERY = Path(__file__).parent / "gallery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _server(name: str, *flags: str, tmp_path: Path):
    port = _free_port()
    log = (tmp_path / f"{name}-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(GALLERY / f"{name}.py"), "--port", str(port), *flags],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("gallery")


# --------------------------------------------------------------------------- agent-zero


def _ctx_id() -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=8))


class A0Client:
    """What webui/js/api.js + websocket.js + sync-store.js do."""

    def __init__(self, port: int, *, csrf_override: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.http = requests.Session()
        j = self.http.get(self.base + "/api/csrf_token", headers={"Origin": self.base}).json()
        assert j["ok"] is True, j
        self.token, self.rid = j["token"], j["runtime_id"]
        assert f"session_{self.rid}" in self.http.cookies
        self.http.cookies.set(f"csrf_token_{self.rid}", self.token)
        self.pushes: list[dict] = []
        self.events: list[str] = []
        self.lock = threading.Lock()
        self.sio = socketio.Client(
            reconnection=False,
            http_session=self.http,
            websocket_extra_options={"origin": self.base},
        )

        @self.sio.on("*", namespace="/ws")
        def _any(event, data=None):
            with self.lock:
                self.events.append(event)
                if event == "state_push":
                    self.pushes.append(data)

        self.sio.connect(
            self.base,
            namespaces=["/ws"],
            transports=["websocket"],
            auth={"csrf_token": csrf_override or self.token, "handlers": ["ws_webui"]},
            wait_timeout=5,
        )

    def state_request(self, payload: dict, timeout: float = 3) -> dict:
        return self.sio.call("state_request", payload, namespace="/ws", timeout=timeout)

    def send(self, text: str, context: str) -> dict:
        r = self.http.post(
            self.base + "/api/message_async",
            json={"text": text, "context": context, "message_id": str(uuid.uuid4())},
            headers={"X-CSRF-Token": self.token},
        )
        assert r.status_code == 200, r.text
        return r.json()

    def items(self) -> dict[int, dict]:
        out: dict[int, dict] = {}
        with self.lock:
            for p in self.pushes:
                for it in p["data"]["snapshot"]["logs"]:
                    out[it["no"]] = it
        return out

    def wait_done(self, context: str, user_text: str, timeout: float = 8) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                pushes = list(self.pushes)
            seen_user = False
            for p in pushes:
                snap = p["data"]["snapshot"]
                if any(i["type"] == "user" and i["content"] == user_text for i in snap["logs"]):
                    seen_user = True
                ctx = [c for c in snap["contexts"] if c["id"] == context]
                if seen_user and ctx and not ctx[0]["running"] and not snap["log_progress_active"]:
                    return snap
            time.sleep(0.02)
        raise TimeoutError("no done")

    def close(self) -> None:
        self.sio.disconnect()
        self.http.close()


def _nonce() -> str:
    return "nonce=" + "".join(random.choices(string.ascii_lowercase, k=8))


@pytest.fixture(scope="module")
def a0_port(module_tmp):
    with _server("agent_zero_like", "--patched", tmp_path=module_tmp) as port:
        yield port


def test_agent_zero_web_ui_turns(a0_port):
    c = A0Client(a0_port)
    try:
        ctx = _ctx_id()
        bad = c.state_request({"context": ctx, "log_from": 0, "notifications_from": 0})
        assert bad["results"][0]["ok"] is True
        assert bad["results"][0]["data"]["code"] == "INVALID_REQUEST"
        ack = c.state_request(
            {
                "context": ctx,
                "log_from": 0,
                "notifications_from": 0,
                "timezone": "Europe/Berlin",
                "correlationId": "cid-1",
            }
        )
        assert ack["correlationId"] == "cid-1"
        (res,) = ack["results"]
        assert res["handlerId"] == "ws_webui.WsWebui" and res["ok"] is True
        assert res["data"] == {"runtime_epoch": c.rid, "seq_base": 1}
        for turn in range(2):
            text = f"turn {turn} {_nonce()}"
            assert c.send(text, ctx) == {"message": "Message received.", "context": ctx}
            c.wait_done(ctx, text)
            responses = [i for i in c.items().values() if i["type"] == "response"]
            assert text in responses[-1]["content"]
            assert responses[-1]["kvps"].get("finished") is True
        items = c.items()
        assert items[0]["type"] == "response" and "Agent Zero" in items[0]["content"]  # greeting
        agent = [i for i in items.values() if i["type"] == "agent"][-1]
        assert '"tool_name": "response"' in agent["content"] and "turn 1" in agent["content"]
        seqs = [p["data"]["seq"] for p in c.pushes]
        assert seqs[0] == 2 and seqs == list(range(2, 2 + len(seqs)))
        assert all(p["data"]["runtime_epoch"] == c.rid for p in c.pushes)
        assert "server_restart" in c.events
    finally:
        c.close()


def test_agent_zero_naive_clients_share_first_context(a0_port):
    base = f"http://127.0.0.1:{a0_port}"
    with requests.Session() as s:
        assert s.get(base + "/api/csrf_token").json()["ok"] is False  # no Origin header
        tok = s.get(base + "/api/csrf_token", headers={"Origin": base}).json()["token"]
        no_csrf = s.post(base + "/api/message_async", json={"text": "x", "context": ""})
        assert no_csrf.status_code == 403
        ids = {
            s.post(
                base + "/api/message_async",
                json={"text": f"naive {_nonce()}", "context": ""},
                headers={"X-CSRF-Token": tok},
            ).json()["context"]
            for _ in range(2)
        }
        assert len(ids) == 1
        assert set(s.get(base + "/api/health").json()) == {"gitinfo", "error"}


def test_agent_zero_bad_csrf_connects_without_handlers(a0_port):
    c = A0Client(a0_port, csrf_override="wrong")
    try:
        ack = c.state_request(
            {"context": None, "log_from": 0, "notifications_from": 0, "timezone": "UTC"}
        )
        assert ack["results"][0]["ok"] is False
        assert ack["results"][0]["error"]["code"] == "NO_HANDLERS"
    finally:
        c.close()


def _a0_request(ctx: str) -> dict:
    return {"context": ctx, "log_from": 0, "notifications_from": 0, "timezone": "UTC"}


def test_agent_zero_wedge_stops_every_chat(module_tmp):
    with _server(
        "agent_zero_like", "--wedge-after", "1", "--swallow-every", "0", tmp_path=module_tmp
    ) as port:
        c = A0Client(port)
        try:
            ctx1, ctx2 = _ctx_id(), _ctx_id()
            c.state_request(_a0_request(ctx1))
            t1 = f"first {_nonce()}"
            c.send(t1, ctx1)
            c.wait_done(ctx1, t1)
            c.state_request(_a0_request(ctx2))
            t2 = f"second {_nonce()}"
            assert c.send(t2, ctx2)["message"] == "Message received."
            with pytest.raises(TimeoutError):
                c.wait_done(ctx2, t2, timeout=1.5)
            with pytest.raises(socketio.exceptions.TimeoutError):
                c.state_request(_a0_request(ctx1), timeout=1.0)  # the handler worker is stuck
        finally:
            c.close()


def test_agent_zero_swallowed_exception_stalls_chat(module_tmp):
    with _server(
        "agent_zero_like", "--swallow-every", "1", "--wedge-after", "0", tmp_path=module_tmp
    ) as port:
        c = A0Client(port)
        try:
            ctx = _ctx_id()
            c.state_request(_a0_request(ctx))
            text = f"stall {_nonce()}"
            c.send(text, ctx)
            with pytest.raises(TimeoutError):
                c.wait_done(ctx, text, timeout=1.5)
            snap = c.pushes[-1]["data"]["snapshot"]
            assert [x["running"] for x in snap["contexts"] if x["id"] == ctx] == [True]
            assert not [i for i in c.items().values() if i["type"] == "error"]
            resp = [i for i in c.items().values() if i["type"] == "response" and i["no"] > 0]
            assert not resp or resp[-1]["kvps"].get("finished") is not True
        finally:
            c.close()


# --------------------------------------------------------------------------- nerve


async def _recv(ws, timeout: float = 5) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _until(ws, types: set[str], timeout: float = 8) -> tuple[list[dict], dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        m = await _recv(ws, max(0.05, deadline - time.monotonic()))
        if m["type"] in types:
            return seen, m
        seen.append(m)


def _reply(frames: list[dict]) -> str:
    return "".join(
        f["content"] for f in frames if f["type"] == "token" and "parent_tool_use_id" not in f
    )


@pytest.fixture(scope="module")
def nerve_port(module_tmp):
    flags = ("--patched", "--tool-every", "1", "--subagent-every", "1", "--token-delay", "0.02")
    with _server("nerve_like", *flags, tmp_path=module_tmp) as port:
        yield port


def test_nerve_web_ui_turns(nerve_port):
    base = f"http://127.0.0.1:{nerve_port}"
    assert requests.get(base + "/health").json() == {"status": "ok", "version": "0.1.0"}

    async def go():
        row = requests.post(base + "/api/sessions", json={}).json()
        assert row["status"] == "created" and len(row["id"]) == 8
        async with connect(f"ws://127.0.0.1:{nerve_port}/ws") as ws:
            assert (await _recv(ws))["type"] == "session_switched"
            for turn in range(2):
                text = f"turn {turn} {_nonce()}"
                await ws.send(
                    json.dumps({"type": "message", "content": text, "session_id": row["id"]})
                )
                frames, done = await _until(ws, {"done"})
                assert done["session_id"] == row["id"]
                assert {"usage", "max_context_tokens", "num_turns"} <= set(done)
                assert text in _reply(frames)
                types = {f["type"] for f in frames}
                assert {"thinking", "tool_use", "tool_result", "session_running"} <= types
                assert any(f["type"] == "token" and "parent_tool_use_id" in f for f in frames)
            await ws.send(json.dumps({"type": "ping"}))
            _, pong = await _until(ws, {"pong"})
            assert pong == {"type": "pong"}

    asyncio.run(go())


def test_nerve_default_clients_share_a_session(nerve_port):
    url = f"ws://127.0.0.1:{nerve_port}/ws"

    async def go():
        async with connect(url) as a, connect(url) as b:
            sa, sb = (await _recv(a))["session_id"], (await _recv(b))["session_id"]
            assert sa == sb
            text = f"shared {_nonce()}"
            await a.send(json.dumps({"type": "message", "content": text, "session_id": sa}))
            await asyncio.sleep(0.15)
            async with connect(url) as late:  # reconnect mid-turn: replay of the buffer
                assert (await _recv(late))["session_id"] == sa
                status = await _recv(late)
                assert status["type"] == "session_status" and status["is_running"] is True
                assert isinstance(status["buffered_events"], list)
            fa, _ = await _until(a, {"done"})
            fb, _ = await _until(b, {"done"})
            assert text in _reply(fa) and text in _reply(fb)
            assert any(f["type"] == "user_message" for f in fb)
            assert not any(f["type"] == "user_message" for f in fa)

    asyncio.run(go())


def test_nerve_bad_token_closes_4001(module_tmp):
    with _server("nerve_like", "--patched", "--token", "sekrit", tmp_path=module_tmp) as port:

        async def go():
            async with connect(f"ws://127.0.0.1:{port}/ws?token=wrong") as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await _recv(ws)
                assert info.value.rcvd.code == 4001
            async with connect(f"ws://127.0.0.1:{port}/ws?token=sekrit") as ws:
                assert (await _recv(ws))["type"] == "session_switched"

        asyncio.run(go())
        assert requests.get(f"http://127.0.0.1:{port}/health").status_code == 200
        assert requests.post(f"http://127.0.0.1:{port}/api/sessions", json={}).status_code == 401


def test_nerve_hung_call_holds_the_session_lock(module_tmp):
    flags = ("--hang-every", "2", "--hang-seconds", "1.5", "--tool-every", "0")
    with _server("nerve_like", *flags, "--subagent-every", "0", tmp_path=module_tmp) as port:

        async def go():
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                sid = (await _recv(ws))["session_id"]
                t1 = f"one {_nonce()}"
                await ws.send(json.dumps({"type": "message", "content": t1, "session_id": sid}))
                frames, _ = await _until(ws, {"done"})
                assert t1 in _reply(frames)
                t2, t3 = f"two {_nonce()}", f"three {_nonce()}"
                start = time.monotonic()
                for t in (t2, t3):
                    await ws.send(json.dumps({"type": "message", "content": t, "session_id": sid}))
                f2, _ = await _until(ws, {"done"})
                assert time.monotonic() - start >= 1.4  # the hang, then the retry answers
                f3, _ = await _until(ws, {"done"})
                assert t2 in _reply(f2) and t3 not in _reply(f2)
                assert t3 in _reply(f3)

        asyncio.run(go())


# --------------------------------------------------------------------------- hermes


def _rpc(rid: int, method: str, **params) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})


async def _response(ws, rid: int) -> tuple[list[dict], dict]:
    events = []
    while True:
        m = await _recv(ws)
        if m.get("id") == rid:
            return events, m
        events.append(m)


async def _until_complete(ws, count: int = 1) -> list[dict]:
    out, done = [], 0
    while done < count:
        m = await _recv(ws)
        out.append(m)
        if m.get("method") == "event" and m["params"]["type"] == "message.complete":
            done += 1
    return out


@pytest.mark.parametrize("flavor", ["old", "new"])
def test_hermes_flavors(flavor, module_tmp):
    flags = ("--flavor", flavor, "--patched", "--token", "tok", "--tool-every", "1")
    with _server("hermes_like", *flags, tmp_path=module_tmp) as port:
        url = f"ws://127.0.0.1:{port}/api/ws"

        async def go():
            if flavor == "old":
                with pytest.raises(InvalidStatus) as info:
                    async with connect(url + "?token=bad"):
                        pass
                assert info.value.response.status_code == 403
            else:
                async with connect(url + "?token=bad") as ws:
                    with pytest.raises(ConnectionClosed) as closed:
                        await _recv(ws)
                    assert closed.value.rcvd.code == 4401
            async with connect(url + "?token=tok") as ws:
                ready = await _recv(ws)
                assert ready["params"]["type"] == "gateway.ready"
                await ws.send(_rpc(1, "ping"))
                _, pong = await _response(ws, 1)
                if flavor == "new":
                    assert pong["result"] == {"pong": True}
                else:
                    assert pong["error"]["code"] == -32601
                await ws.send(_rpc(2, "session.create", source="tui", cwd="/tmp"))
                _, created = await _response(ws, 2)
                sid = created["result"]["session_id"]
                t1, t2 = f"one {_nonce()}", f"two {_nonce()}"
                await ws.send(_rpc(3, "prompt.submit", session_id=sid, text=t1))
                _, ack = await _response(ws, 3)
                assert ack["result"] == {"status": "streaming"}
                await ws.send(_rpc(4, "prompt.submit", session_id=sid, text=t2))
                early, busy = await _response(ws, 4)
                frames = early + await _until_complete(ws, 2 if flavor == "old" else 1)
                events = [f["params"] for f in frames if f.get("method") == "event"]
                completes = [e["payload"] for e in events if e["type"] == "message.complete"]
                deltas = "".join(
                    e["payload"]["text"] for e in events if e["type"] == "message.delta"
                )
                if flavor == "new":
                    assert busy["error"]["code"] == 4009
                    assert completes[0]["status"] == "complete" and t1 in completes[0]["text"]
                    seqs = [e["seq"] for e in events if e.get("session_id") == sid]
                    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
                else:
                    assert busy["result"] == {"status": "queued"}
                    assert completes[0]["status"] == "interrupted"
                    assert completes[1]["status"] == "complete" and t2 in completes[1]["text"]
                    assert all("seq" not in e for e in events)
                assert t1 in deltas or t2 in deltas
                assert {"tool.start", "tool.complete"} <= {e["type"] for e in events}

        asyncio.run(go())
        status = requests.get(f"http://127.0.0.1:{port}/api/status").json()
        assert status["version"] == ("0.19.0" if flavor == "old" else "0.20.0")
