"""hermes_like -- a stand-in for hermes-agent's dashboard JSON-RPC gateway (tui_gateway over WS).

Two flavours of the same wire protocol:

* ``--flavor old`` (default) = hermes-agent 0.19.0 as observed on loopback (PROTOCOLS.md,
  "Checked against the real code"): no ``ping`` method, no ``seq``, a busy prompt is
  *queued* and interrupts the running turn, a bad token is refused with HTTP 403 at the
  handshake, extra events ``session.info`` / ``reasoning.available`` / ``session.title`` /
  spinner ``thinking.delta``; no server keepalive ping on loopback.
* ``--flavor new`` = current code: ``ping`` -> ``{"pong": true}``, ``seq`` per session,
  4009 "session busy", close code 4401 on a bad token (after accepting), server keepalive
  ping every 20 s (20 s timeout).

Sources: ``tui_gateway/ws.py`` (ready frame, -32700 / -32603 replies, the 33 ms coalescing of
``message.delta``/``reasoning.delta``/``thinking.delta`` with every other frame flushing the
buffer ahead of itself) and ``tui_gateway/contracts/events.py`` (payload field names) of
NousResearch/hermes-agent HEAD; the rest from PROTOCOLS.md.  The exact shapes of ``info``,
``usage`` and ``GET /api/status`` are approximations (the 0.19.0 source was not available).

Run::

    python tests/gallery/hermes_like.py --port 9119 [--flavor old|new] [--token T] [--patched]

Wire protocol
=============

``ws://127.0.0.1:PORT/api/ws?token=T`` (token default: ``$HERMES_DASHBOARD_SESSION_TOKEN`` or
``hermes-test-token``).  One JSON-RPC 2.0 object per text frame.

First frame::

    {"jsonrpc": "2.0", "method": "event", "params": {"type": "gateway.ready",
     "payload": {"skin": {...}}}}          # new: + "change_events", "replay_epoch", "heartbeat"

Requests (``id`` echoed in the response)::

    session.create   {source?, cwd?}     -> {"session_id": S, "info": {model, provider, cwd, ...}}
    prompt.submit    {session_id, text}  -> {"status": "streaming"}
                     busy, old           -> {"status": "queued"} (the running turn is
                                            interrupted, then this prompt runs)
                     busy, new           -> error {"code": 4009, "message": "session busy"}
    session.interrupt {session_id}       -> {"status": "interrupted"} | {"status": "idle"}
    ping             {}                  -> new: {"pong": true}; old: error -32601
    (other)                              -> error {"code": -32601, "message": "unknown method"}

Errors: ``{"jsonrpc": "2.0", "id": ID, "error": {"code", "message"}}``; bad JSON -> -32700
"parse error" with ``id: null``; unknown session -> 4001 "session not found"; missing text ->
-32602 "invalid params".

Events: ``{"jsonrpc": "2.0", "method": "event", "params": {"type", "session_id", "payload"}}``
(+ ``"seq"``, rising by 1 per session, in the new flavour).  A turn::

    message.start {}                      status.update {kind: "status", text}
    thinking.delta {text: spinner}   (old)  reasoning.delta {text}   reasoning.available (old)
    tool.start {tool_id, name, args, context}   tool.complete {tool_id, name, duration_s,
                                                 result, summary}     (every --tool-every turn)
    message.delta {text}  (coalesced: ~33 ms batches of separate frames)
    message.complete {text, usage, status: complete|error|interrupted}  (+ "error" in new)
    session.title {session_id, title}   (old, after the first turn)

``session.info`` (old) follows ``session.create``.  A turn ends with exactly one
``message.complete``.  The fake model answers ``You said: <text>`` in 10-30 deltas.

``GET /api/status`` (no token) -> ``{"version", "release_date", "gateway_running",
"gateway_state", "active_sessions", "active_agents"}``.

Fault (off with ``--patched``): ``--stall-every N`` (default 40; 0 = off) every Nth turn holds
the GIL/event loop for ``--stall-seconds`` (default 25): nothing is sent or read meanwhile; a
2 s heartbeat logs "event loop stalled Ns" to stderr; in the new flavour the server's own 20 s
keepalive ping can then kill healthy connections.  ``--error-every N`` (default 0) makes a turn
end with ``status: "error"`` (old: the message only in ``text``; new: also ``error``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

import uvicorn

STREAMING = {"message.delta", "reasoning.delta", "thinking.delta"}
COALESCE_S = 0.033
SPINNER = ["(⌐■_■) pondering...", "(｡•́︿•̀｡) contemplating...", "ʕ•ᴥ•ʔ musing..."]


class Config:
    flavor = "old"
    token = "hermes-test-token"
    patched = False
    stall_every = 40
    stall_seconds = 25.0
    error_every = 0
    tool_every = 3
    token_delay = 0.01


CFG = Config()
COUNTERS = {"turns": 0}
SESSIONS: dict[str, Session] = {}


class Transport:
    """tui_gateway/ws.py WSTransport: delta frames coalesced, others flush ahead of themselves."""

    def __init__(self, send) -> None:
        self._send = send
        self.closed = False
        self.pending: list[str] = []
        self.timer: asyncio.TimerHandle | None = None
        self.lock = asyncio.Lock()

    def write(self, obj: dict[str, Any]) -> None:
        if self.closed:
            return
        line = json.dumps(obj, ensure_ascii=False)
        params = obj.get("params")
        self.pending.append(line)
        if isinstance(params, dict) and params.get("type") in STREAMING:
            if self.timer is None:
                self.timer = asyncio.get_running_loop().call_later(COALESCE_S, self._flush_soon)
            return
        self._flush_soon()

    def _flush_soon(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send_many(batch))
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)

    async def _send_many(self, lines: list[str]) -> None:
        async with self.lock:
            try:
                for line in lines:
                    await self._send({"type": "websocket.send", "text": line})
            except Exception:
                self.closed = True

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()


_BACKGROUND: set[asyncio.Task] = set()


class Session:
    def __init__(self, transport: Transport, cwd: str) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.transport = transport
        self.cwd = cwd
        self.seq = 0
        self.turn: asyncio.Task | None = None
        self.interrupt = False
        self.queue: list[str] = []
        self.turns = 0

    def emit(self, type_: str, payload: dict[str, Any] | None = None) -> None:
        params: dict[str, Any] = {"type": type_, "session_id": self.id, "payload": payload or {}}
        if CFG.flavor == "new":
            self.seq += 1
            params["seq"] = self.seq
        self.transport.write({"jsonrpc": "2.0", "method": "event", "params": params})

    def info(self) -> dict[str, Any]:
        return {
            "model": "fake/echo-1",
            "provider": "custom",
            "cwd": self.cwd,
            "tools": 12,
            "skills": 0,
            "version": _version(),
        }


def _version() -> str:
    return "0.19.0" if CFG.flavor == "old" else "0.20.0"


def _ok(rid: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def _err(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


async def run_turns(s: Session, text: str) -> None:
    while True:
        await _turn(s, text)
        if not s.queue:
            break
        text = s.queue.pop(0)
    s.turn = None


async def _turn(s: Session, text: str) -> None:
    COUNTERS["turns"] += 1
    n_turn = COUNTERS["turns"]
    s.turns += 1
    s.interrupt = False
    delay = CFG.token_delay
    s.emit("message.start")
    s.emit("status.update", {"kind": "status", "text": "thinking"})
    if CFG.flavor == "old":
        for spin in SPINNER:
            s.emit("thinking.delta", {"text": spin})
            await asyncio.sleep(delay)
    for piece in ("The user wants ", "an echo."):
        s.emit("reasoning.delta", {"text": piece})
        await asyncio.sleep(delay)
    if CFG.flavor == "old":
        s.emit("reasoning.available", {"text": "The user wants an echo."})
    if not CFG.patched and CFG.stall_every > 0 and n_turn % CFG.stall_every == 0:
        time.sleep(CFG.stall_seconds)  # a GIL-heavy step: the whole event loop stops
    if CFG.tool_every > 0 and n_turn % CFG.tool_every == 0:
        tid = "call_" + uuid.uuid4().hex[:16]
        args = {"path": s.cwd}
        s.emit("tool.start", {"tool_id": tid, "name": "list_files", "args": args, "context": s.cwd})
        await asyncio.sleep(delay)
        s.emit(
            "tool.complete",
            {
                "tool_id": tid,
                "name": "list_files",
                "args": args,
                "duration_s": delay,
                "result": {"files": ["README.md"]},
                "summary": "1 file",
            },
        )
    reply = f"You said: {text}"
    n = max(10, min(30, len(reply) // 4))
    cuts = sorted({round(len(reply) * (i + 1) / n) for i in range(n)})
    sent, prev, status = "", 0, "complete"
    fail = CFG.error_every > 0 and n_turn % CFG.error_every == 0
    for i, cut in enumerate(cuts):
        if s.interrupt:
            status = "interrupted"
            break
        if fail and i == len(cuts) // 2:
            status = "error"
            break
        await asyncio.sleep(delay)
        if cut > prev:
            s.emit("message.delta", {"text": reply[prev:cut]})
            sent += reply[prev:cut]
            prev = cut
    usage = {
        "input": 20 + len(text) // 4,
        "output": max(1, len(sent) // 4),
        "cache_read": 0,
        "cache_write": 0,
        "reasoning": 6,
        "calls": 1,
    }
    usage["total"] = usage["input"] + usage["output"]
    payload: dict[str, Any] = {"text": sent, "usage": usage, "status": status}
    if status == "error":
        message = "API call failed: 500 Internal Server Error (fake model)"
        payload["text"] = message
        if CFG.flavor == "new":
            payload["error"] = message
    s.emit("message.complete", payload)
    if CFG.flavor == "old" and s.turns == 1:
        s.emit("session.title", {"session_id": s.id, "title": " ".join(text.split()[:4])[:60]})


async def dispatch(req: Any, transport: Transport) -> dict[str, Any] | None:
    if not isinstance(req, dict):
        return _err(None, -32600, "invalid request")
    rid = req.get("id")
    method = req.get("method")
    params = req.get("params") if isinstance(req.get("params"), dict) else {}
    if method == "ping" and CFG.flavor == "new":
        return _ok(rid, {"pong": True})
    if method == "session.create":
        s = Session(transport, str(params.get("cwd") or os.getcwd()))
        SESSIONS[s.id] = s
        if CFG.flavor == "old":
            s.emit("session.info", s.info())
        return _ok(rid, {"session_id": s.id, "info": s.info()})
    if method in ("prompt.submit", "session.interrupt"):
        s = SESSIONS.get(str(params.get("session_id") or ""))
        if s is None:
            return _err(rid, 4001, "session not found")
        s.transport = transport
        if method == "session.interrupt":
            if s.turn is None:
                return _ok(rid, {"status": "idle"})
            s.interrupt = True
            return _ok(rid, {"status": "interrupted"})
        text = params.get("text")
        if not isinstance(text, str) or not text:
            return _err(rid, -32602, "invalid params")
        if s.turn is not None:
            if CFG.flavor == "new":
                return _err(rid, 4009, "session busy")
            s.queue.append(text)
            s.interrupt = True  # busy_input_mode "interrupt" (the default)
            return _ok(rid, {"status": "queued"})
        s.turn = asyncio.create_task(run_turns(s, text))
        _BACKGROUND.add(s.turn)
        s.turn.add_done_callback(_BACKGROUND.discard)
        return _ok(rid, {"status": "streaming"})
    return _err(rid, -32601, "unknown method")


def _skin() -> dict[str, Any]:
    return {
        "name": "default",
        "description": "Hermes default",
        "colors": {},
        "branding": {"agent_name": "Hermes Agent"},
        "tool_prefix": "┊",
    }


async def websocket(scope, receive, send) -> None:
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    good = (qs.get("token") or [""])[0] == CFG.token
    if scope["path"] != "/api/ws":
        await send({"type": "websocket.close", "code": 1000})
        return
    if not good and CFG.flavor == "old":
        await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
        return
    await send({"type": "websocket.accept"})
    if not good:
        await send({"type": "websocket.close", "code": 4401, "reason": "unauthorized"})
        return
    transport = Transport(send)
    ready: dict[str, Any] = {"skin": _skin()}
    if CFG.flavor == "new":
        ready.update(change_events=True, replay_epoch=uuid.uuid4().hex, heartbeat=True)
    transport.write(
        {"jsonrpc": "2.0", "method": "event", "params": {"type": "gateway.ready", "payload": ready}}
    )
    try:
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                break
            raw = (event.get("text") or "").strip()
            if not raw:
                continue
            try:
                req = json.loads(raw)
            except json.JSONDecodeError:
                transport.write(
                    {
                        "jsonrpc": "2.0",
                        "error": {"code": -32700, "message": "parse error"},
                        "id": None,
                    }
                )
                continue
            try:
                resp = await dispatch(req, transport)
            except Exception:
                rid = req.get("id") if isinstance(req, dict) else None
                resp = _err(rid, -32603, "internal error")
            if resp is not None:
                transport.write(resp)
    finally:
        transport.close()
        for s in SESSIONS.values():
            if s.transport is transport:
                s.interrupt = True  # detached; the turn winds down, frames are dropped


async def http(scope, receive, send) -> None:
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/api/status" and scope["method"] == "GET":
        body: dict[str, Any] = {
            "version": _version(),
            "release_date": "2026-10-01",
            "gateway_running": True,
            "gateway_state": "running",
            "active_sessions": len(SESSIONS),
            "active_agents": sum(1 for s in SESSIONS.values() if s.turn is not None),
        }
        status = 200
    else:
        body, status = {"detail": "Not Found"}, 404
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


async def heartbeat() -> None:
    """The real gateway logs 'event loop stalled Ns' from a 2 s heartbeat."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(2.0)
        now = loop.time()
        if now - last > 4.0:
            print(f"event loop stalled {now - last - 2.0:.1f}s", file=sys.stderr, flush=True)
        last = now


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        hb = None
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                hb = asyncio.create_task(heartbeat())
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if hb is not None:
                    hb.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await hb
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await http(scope, receive, send)
    elif scope["type"] == "websocket":
        await websocket(scope, receive, send)


class _Server(uvicorn.Server):
    """Exit with status 0 on SIGTERM/SIGINT (uvicorn would re-raise the signal)."""

    def handle_exit(self, sig, frame) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=9119)
    ap.add_argument("--flavor", choices=["old", "new"], default="old")
    ap.add_argument(
        "--token", default=os.environ.get("HERMES_DASHBOARD_SESSION_TOKEN") or "hermes-test-token"
    )
    ap.add_argument("--patched", action="store_true", help="turn the known fault off")
    ap.add_argument("--stall-every", type=int, default=40, metavar="N")
    ap.add_argument("--stall-seconds", type=float, default=25.0)
    ap.add_argument("--error-every", type=int, default=0, metavar="N")
    ap.add_argument("--tool-every", type=int, default=3, metavar="N")
    ap.add_argument("--token-delay", type=float, default=0.01, metavar="SECONDS")
    args = ap.parse_args(argv)
    CFG.flavor = args.flavor
    CFG.token = args.token
    CFG.patched = args.patched
    CFG.stall_every = args.stall_every
    CFG.stall_seconds = args.stall_seconds
    CFG.error_every = args.error_every
    CFG.tool_every = args.tool_every
    CFG.token_delay = args.token_delay
    ping = 20.0 if CFG.flavor == "new" else None  # loopback 0.19.0: keepalive off
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws_ping_interval=ping,
        ws_ping_timeout=20.0,
        timeout_graceful_shutdown=2,
    )
    asyncio.run(_Server(config).serve())


if __name__ == "__main__":
    main()
