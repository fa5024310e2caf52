"""nerve_like -- a stand-in for nerve's gateway (ClickHouse/nerve, ``nerve start``).

Written from nerve's own code (``nerve/gateway/server.py`` websocket_endpoint,
``nerve/gateway/auth.py``, ``nerve/gateway/routes/sessions.py``,
``nerve/agent/streaming.py`` StreamBroadcaster, ``nerve/agent/engine.py`` run /
_run_inner / _finalize_turn / stop_session, ``nerve/agent/sessions.py``,
``web/src/api/websocket.ts``, ``web/src/stores/chatStore.ts``; commit 1985e37 of
2026-08-20).  Only the agent runtime (the Claude SDK/CLI) is fake: it answers by
echoing the prompt.  Raw ASGI app under uvicorn (nerve is FastAPI on uvicorn),
bound to 127.0.0.1 only.

Run::

    python tests/gallery/nerve_like.py --port 8900 [--patched] [--token T] [flags]

Wire protocol
=============

WebSocket ``ws://127.0.0.1:PORT/ws``; one JSON object per text frame, no request
ids.  Dev mode (default): no auth.  With ``--token T`` (stands in for the JWT):
``?token=T`` (or cookie ``nerve_token=T``) is required; the server ACCEPTS the
socket first and then closes it with code 4001 reason "Unauthorized".

On connect the client is bound to the channel ``web:default``'s LAST session
(created if none), so all default clients share one session and see each other's
events.  Then::

    <- {"type": "session_switched", "session_id": S}
    <- {"type": "session_status", "session_id": S, "is_running": true, "status": "active",
        "buffered_events": [every event of the running turn so far]}   # only mid-turn

Client -> server (``web/src/api/websocket.ts``)::

    {"type": "message", "content": TEXT, "session_id": S2}
    {"type": "switch_session", "session_id": S2}
    {"type": "stop", "session_id": S2}
    {"type": "ping"}                      -> {"type": "pong"}

A ``message`` (or ``switch_session``) naming another session re-binds THIS socket
to that session and re-points ``web:default`` at it (so later new connections
land there).  A session that does not exist makes the handler raise "Session not
found": the socket is dropped without a close frame (client sees 1006).  The web
UI therefore first creates a chat with ``POST /api/sessions`` ``{"title"?,
"source"?: "web", "model"?, "backend"?, "cwd"?}`` -> the session row ``{"id": S,
"title", "status": "created", "source", "created_at", ...}`` and then sends
``message`` with ``session_id: S`` (no switch_session needed).

Server -> client, per turn (a turn of a session waits for the previous one: one
lock per session, FIFO)::

    {"type": "user_message", "session_id", "content", "blocks": null}   # to OTHER clients
    {"type": "session_running", "session_id", "is_running": true,
     "pending_wakeup_at": null, "has_background_tasks": false}        # to EVERY client
    {"type": "session_updated", "session_id", "title"}   # first turn: placeholder title,
                                                         # later the generated title --
                                                         # may arrive AFTER done
    {"type": "thinking", "session_id", "content"}
    {"type": "tool_use", "session_id", "tool", "input", "tool_use_id"}
    {"type": "tool_result", "session_id", "tool_use_id", "result", "is_error"}
    {"type": "subagent_start", "session_id", "tool_use_id", "subagent_type", "description",
     "model"}
    {"type": "token", "session_id", "content", "parent_tool_use_id"}  # sub-agent text!
    {"type": "subagent_complete", "session_id", "tool_use_id", "duration_ms", "is_error"}
    {"type": "token", "session_id", "content"}                         # the reply
    {"type": "done", "session_id", "usage": {input_tokens, output_tokens,
     cache_creation_input_tokens, cache_read_input_tokens}, "max_context_tokens": 200000,
     "num_turns": N}
    {"type": "session_running", "session_id", "is_running": false, ...}

Terminal events: ``done``; ``stopped`` (after a hard stop; no done);
``{"type": "error", "session_id", "error": "Agent error: ..."}`` which is
FOLLOWED by a ``done`` without ``usage`` (real: _finalize_turn always runs).  A
graceful ``stop`` (interrupt) ends the turn with a normal ``done``; ``stop`` with
nothing to stop answers ``{"type": "error", "error": "No running task to stop"}``
only if the session never ran.  Events go to every client bound to the session
(tokens and done of one client's turn reach the others -- real behaviour), the
session_running events to every client.

HTTP: ``GET /health`` -> ``{"status": "ok", "version": "0.1.0"}`` (no auth);
``POST /api/sessions``; ``GET /api/sessions``, ``/api/sessions/{id}``,
``/api/sessions/{id}/status``, ``/api/sessions/{id}/messages``; with ``--token``
these need ``Authorization: Bearer T`` / cookie / ``?token=`` (else 401
``{"detail": ...}``).

The fake runtime answers ``You said: <prompt>`` in 10-30 ``token`` frames
``--token-delay`` s apart (default 0.01), after two ``thinking`` frames; every
``--tool-every`` th turn (default 3) it first calls a ``Read`` tool, every
``--subagent-every`` th turn (default 5) a ``Task`` sub-agent whose text streams
as ``token`` frames with ``parent_tool_use_id``; ``--error-every N`` (default 0)
makes a turn fail mid-stream (``error`` then ``done``).

Fault (off with ``--patched``)
==============================

``--hang-every N`` (default 50; 0 = off): every Nth runtime call hangs silently
before its first event, holding the session lock, for ``--hang-seconds`` (default
900, the real idle timeout that fixed the original 15-minute hang).  Later turns
of that session wait behind it; other sessions are unaffected.  Then the idle
timeout fires and, as in the real engine, a call that produced no content yet is
retried once with a fresh client (which answers normally, unless it is itself a
hanging call: then ``error`` "Agent error: " + ``done``).

Deviations: no persistence (sessions live in memory), no file uploads, fork /
resume / interactions / cron / notifications are not implemented (their frames
are ignored, as unknown types are by the real server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

import uvicorn

CHANNEL = "web:default"
GLOBAL = "__global__"
MAX_BUFFER_SIZE = 10_000
MAX_CONTEXT = 200_000


class Config:
    patched = False
    token: str | None = None
    hang_every = 50
    hang_seconds = 900.0
    error_every = 0
    tool_every = 3
    subagent_every = 5
    token_delay = 0.01


CFG = Config()


def _sqlnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _isonow() -> str:
    return datetime.now(UTC).isoformat()


def _short_id() -> str:
    return str(uuid.uuid4())[:8]


# --------------------------------------------------------------------------- broadcaster


class Broadcaster:
    """nerve/agent/streaming.py StreamBroadcaster."""

    def __init__(self) -> None:
        self.listeners: dict[str, list[tuple[str, Any]]] = {}
        self.buffers: dict[str, list[dict[str, Any]]] = {}
        self.open_turns: set[str] = set()

    def register(self, session_id: str, cid: str, cb) -> None:
        self.listeners.setdefault(session_id, []).append((cid, cb))

    def unregister(self, session_id: str, cid: str) -> None:
        if session_id in self.listeners:
            self.listeners[session_id] = [(c, f) for c, f in self.listeners[session_id] if c != cid]
            if not self.listeners[session_id]:
                del self.listeners[session_id]

    async def broadcast(self, session_id: str, msg: dict[str, Any], exclude: str | None = None):
        if msg.get("type") in ("done", "stopped", "error"):
            self.open_turns.discard(session_id)
        if session_id in self.buffers:
            buf = self.buffers[session_id]
            buf.append(msg)
            if len(buf) > MAX_BUFFER_SIZE:
                self.buffers[session_id] = buf[-MAX_BUFFER_SIZE:]
        for cid, cb in list(self.listeners.get(session_id, [])):
            if cid == exclude:
                continue
            with contextlib.suppress(Exception):
                await cb(session_id, msg)

    async def token(self, sid: str, text: str, parent: str | None = None) -> None:
        msg: dict[str, Any] = {"type": "token", "session_id": sid, "content": text}
        if parent:
            msg["parent_tool_use_id"] = parent
        await self.broadcast(sid, msg)

    async def thinking(self, sid: str, text: str) -> None:
        await self.broadcast(sid, {"type": "thinking", "session_id": sid, "content": text})

    async def done(self, sid: str, usage=None, max_context_tokens=None, num_turns=None) -> None:
        msg: dict[str, Any] = {"type": "done", "session_id": sid}
        if usage is not None:
            msg["usage"] = usage
        if max_context_tokens is not None:
            msg["max_context_tokens"] = max_context_tokens
        if num_turns is not None:
            msg["num_turns"] = num_turns
        await self.broadcast(sid, msg)


BROADCASTER = Broadcaster()


# --------------------------------------------------------------------------- sessions


class Sessions:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.channels: dict[str, str] = {}
        self.running: set[str] = set()
        self.clients: dict[str, FakeClient] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.stop_requested: set[str] = set()
        self.msg_id = 0

    def create(self, session_id: str, title=None, source="web", model=None, cwd=None):
        now = _sqlnow()
        row = {
            "id": session_id,
            "title": title,
            "created_at": now,
            "updated_at": now,
            "source": source,
            "metadata": "{}",
            "status": "created",
            "sdk_session_id": None,
            "parent_session_id": None,
            "forked_from_message": None,
            "connected_at": None,
            "last_activity_at": None,
            "archived_at": None,
            "message_count": 0,
            "total_cost_usd": 0.0,
            "last_memorized_at": None,
            "starred": 0,
            "model": model or "claude-sonnet-4-5",
            "backend": "claude",
            "cwd": cwd or "/workspace",
        }
        self.rows[session_id] = row
        self.messages[session_id] = []
        return row

    def get_or_create(self, session_id: str, **kw) -> dict[str, Any]:
        return self.rows.get(session_id) or self.create(session_id, **kw)

    def get_last_session(self, channel: str) -> str | None:
        sid = self.channels.get(channel)
        row = self.rows.get(sid or "")
        if row and row.get("status") != "archived":
            return sid
        return None

    def get_active_session(self, channel: str) -> str:
        sid = self.get_last_session(channel)
        if sid:
            return sid
        sid = _short_id()
        self.create(sid, source="web")
        self.channels[channel] = sid
        return sid

    def set_active_session(self, channel: str, session_id: str) -> None:
        row = self.rows.get(session_id)
        if not row:
            raise ValueError(f"Session not found: {session_id}")
        self.channels[channel] = session_id
        row["last_activity_at"] = _isonow()

    def add_message(self, session_id: str, role: str, content: str, **extra) -> None:
        self.msg_id += 1
        self.messages.setdefault(session_id, []).append(
            {
                "id": self.msg_id,
                "session_id": session_id,
                "role": role,
                "content": content,
                "created_at": _sqlnow(),
                **extra,
            }
        )
        row = self.rows[session_id]
        row["message_count"] += 1
        row["updated_at"] = _sqlnow()


SESSIONS = Sessions()


# --------------------------------------------------------------------------- fake runtime

COUNTERS = {"calls": 0, "turns": 0}


class FakeClient:
    """Stands in for the Claude SDK client: one per session, reused across turns."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.native_session_id = str(uuid.uuid4())
        self.interrupted = False

    async def interrupt(self) -> None:
        self.interrupted = True

    async def receive_turn(self, text: str, turn_no: int):
        """Yields (kind, payload) events. Raises TimeoutError on a hang (idle timeout)."""
        COUNTERS["calls"] += 1
        call_no = COUNTERS["calls"]
        self.interrupted = False
        if not CFG.patched and CFG.hang_every > 0 and call_no % CFG.hang_every == 0:
            await asyncio.sleep(CFG.hang_seconds)  # silent CLI; interrupt does not help
            raise TimeoutError()
        delay = CFG.token_delay
        tool_calls = 0
        yield "thinking", "Let me look at "
        yield "thinking", "the request."
        if CFG.tool_every > 0 and turn_no % CFG.tool_every == 0:
            tid = "toolu_" + uuid.uuid4().hex[:20]
            tool_calls += 1
            yield "tool_use", ("Read", {"file_path": "/workspace/README.md"}, tid)
            await asyncio.sleep(delay)
            yield "tool_result", (tid, "# Workspace\nNothing interesting here.", False)
        if CFG.subagent_every > 0 and turn_no % CFG.subagent_every == 0:
            tid = "toolu_" + uuid.uuid4().hex[:20]
            tool_calls += 1
            desc = "Survey the workspace"
            yield (
                "tool_use",
                (
                    "Task",
                    {"description": desc, "prompt": "Look around.", "subagent_type": "Explore"},
                    tid,
                ),
            )
            yield "subagent_start", (tid, "Explore", desc)
            for piece in ("Sub-agent: ", "scanning ", "the workspace ", "files."):
                await asyncio.sleep(delay)
                yield "subtoken", (piece, tid)
            yield "subagent_complete", (tid, 40)
            yield "tool_result", (tid, "The workspace holds a README.", False)
        reply = f"You said: {text}"
        n = max(10, min(30, len(reply) // 4))
        cuts = sorted({round(len(reply) * (i + 1) / n) for i in range(n)})
        prev = 0
        fail_at = len(cuts) // 2 if (CFG.error_every and turn_no % CFG.error_every == 0) else -1
        for i, cut in enumerate(cuts):
            if self.interrupted:
                break
            if i == fail_at:
                raise RuntimeError("Command failed with exit code 1 (fake claude runtime)")
            await asyncio.sleep(delay)
            if cut > prev:
                yield "text", reply[prev:cut]
                prev = cut
        usage = {
            "input_tokens": 12 + len(text) // 4,
            "output_tokens": max(1, prev // 4),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1024,
        }
        yield (
            "completed",
            {
                "usage": usage,
                "num_turns": 1 + tool_calls,
                "native_session_id": self.native_session_id,
                "status": "interrupted" if self.interrupted else "completed",
            },
        )


class TurnState:
    def __init__(self) -> None:
        self.text = ""
        self.got_content = False
        self.usage: dict[str, Any] | None = None
        self.num_turns: int | None = None
        self.sdk_session_id: str | None = None


class Engine:
    def __init__(self) -> None:
        self.locks: dict[str, asyncio.Lock] = {}
        self.semaphore = asyncio.Semaphore(32)

    async def session_running(self, session_id: str, is_running: bool) -> None:
        await BROADCASTER.broadcast(
            GLOBAL,
            {
                "type": "session_running",
                "session_id": session_id,
                "is_running": is_running,
                "pending_wakeup_at": None,
                "has_background_tasks": False,
            },
        )

    async def run(self, session_id: str, text: str) -> str:
        lock = self.locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            BROADCASTER.buffers[session_id] = []
            async with self.semaphore:
                SESSIONS.stop_requested.discard(session_id)
                SESSIONS.running.add(session_id)
                BROADCASTER.open_turns.add(session_id)
                await self.session_running(session_id, True)
                try:
                    return await self._run_inner(session_id, text)
                finally:
                    SESSIONS.running.discard(session_id)
                    if session_id in BROADCASTER.open_turns:
                        await BROADCASTER.done(session_id)  # synthetic done backstop
                    BROADCASTER.buffers.pop(session_id, None)
                    await self.session_running(session_id, False)

    async def _title(self, session_id: str, text: str) -> None:
        await asyncio.sleep(0.3)  # the title model call
        words = [w for w in text.split() if "=" not in w][:4] or ["New", "chat"]
        title = " ".join(words).title()[:59]
        if session_id in SESSIONS.rows:
            SESSIONS.rows[session_id]["title"] = title
            await BROADCASTER.broadcast(
                session_id, {"type": "session_updated", "session_id": session_id, "title": title}
            )

    async def _run_inner(self, session_id: str, text: str) -> str:
        row = SESSIONS.get_or_create(session_id, source="web")
        COUNTERS["turns"] += 1
        turn_no = COUNTERS["turns"]
        if row.get("title") in (None, "", session_id):
            placeholder = text[:40].strip()
            if len(text) > 40:
                placeholder = (
                    placeholder.rsplit(" ", 1)[0] + "..."
                    if " " in placeholder
                    else placeholder + "..."
                )
            row["title"] = placeholder
            await BROADCASTER.broadcast(
                session_id,
                {"type": "session_updated", "session_id": session_id, "title": placeholder},
            )
            task = asyncio.create_task(self._title(session_id, text))
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)
        SESSIONS.add_message(session_id, "user", text, channel="web")
        st = TurnState()
        try:
            client = self._client(session_id)
            if session_id in SESSIONS.stop_requested:
                SESSIONS.stop_requested.discard(session_id)
                return ""
            BROADCASTER.open_turns.add(session_id)
            for attempt in range(2):
                try:
                    async for kind, data in client.receive_turn(text, turn_no):
                        await self._event(session_id, kind, data, st)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    if st.got_content or attempt > 0:
                        raise
                    SESSIONS.clients.pop(session_id, None)  # hung/crashed: fresh client
                    client = self._client(session_id)
                    continue
                break
        except asyncio.CancelledError:
            partial = st.text + ("\n\n[Stopped by user]" if st.text else "[Stopped by user]")
            row["status"] = "stopped"
            SESSIONS.clients.pop(session_id, None)
            SESSIONS.add_message(session_id, "assistant", partial, channel="web")
            await BROADCASTER.broadcast(session_id, {"type": "stopped", "session_id": session_id})
            return partial
        except Exception as e:
            error_msg = f"Agent error: {e}"
            await BROADCASTER.broadcast(
                session_id, {"type": "error", "session_id": session_id, "error": error_msg}
            )
            SESSIONS.clients.pop(session_id, None)
            row["status"] = "error"
            st.text = error_msg
        # _finalize_turn
        SESSIONS.add_message(session_id, "assistant", st.text, channel="web")
        if st.sdk_session_id:
            row["status"] = "active"
            row["sdk_session_id"] = st.sdk_session_id
        await BROADCASTER.done(
            session_id, usage=st.usage, max_context_tokens=MAX_CONTEXT, num_turns=st.num_turns or 1
        )
        return st.text

    def _client(self, session_id: str) -> FakeClient:
        client = SESSIONS.clients.get(session_id)
        if client is None:
            client = SESSIONS.clients[session_id] = FakeClient(session_id)
            SESSIONS.rows[session_id]["connected_at"] = _isonow()
            SESSIONS.rows[session_id]["status"] = "active"
        return client

    async def _event(self, sid: str, kind: str, data: Any, st: TurnState) -> None:
        b = BROADCASTER
        if kind == "text":
            st.got_content = True
            st.text += data
            await b.token(sid, data)
        elif kind == "thinking":
            st.got_content = True
            await b.thinking(sid, data)
        elif kind == "subtoken":
            st.got_content = True
            await b.token(sid, data[0], parent=data[1])
        elif kind == "tool_use":
            st.got_content = True
            name, inp, tid = data
            await b.broadcast(
                sid,
                {
                    "type": "tool_use",
                    "session_id": sid,
                    "tool": name,
                    "input": inp,
                    "tool_use_id": tid,
                },
            )
        elif kind == "tool_result":
            tid, result, is_error = data
            await b.broadcast(
                sid,
                {
                    "type": "tool_result",
                    "session_id": sid,
                    "tool_use_id": tid,
                    "result": result,
                    "is_error": is_error,
                },
            )
        elif kind == "subagent_start":
            tid, stype, desc = data
            await b.broadcast(
                sid,
                {
                    "type": "subagent_start",
                    "session_id": sid,
                    "tool_use_id": tid,
                    "subagent_type": stype,
                    "description": desc,
                    "model": None,
                },
            )
        elif kind == "subagent_complete":
            tid, ms = data
            await b.broadcast(
                sid,
                {
                    "type": "subagent_complete",
                    "session_id": sid,
                    "tool_use_id": tid,
                    "duration_ms": ms,
                    "is_error": False,
                },
            )
        elif kind == "completed":
            st.usage = data["usage"]
            st.num_turns = data["num_turns"]
            st.sdk_session_id = data["native_session_id"]

    async def stop_session(self, session_id: str) -> bool:
        client = SESSIONS.clients.get(session_id)
        interrupted = False
        if client:
            await client.interrupt()
            interrupted = True
        task = SESSIONS.tasks.get(session_id)
        if task and not task.done():
            if interrupted:
                done, _ = await asyncio.wait({task}, timeout=5.0)
                if done:
                    return True
            task.cancel()
            return True
        if session_id in SESSIONS.running:
            SESSIONS.stop_requested.add(session_id)
            return True
        return client is not None


ENGINE: Engine | None = None
_BACKGROUND: set[asyncio.Task] = set()


# --------------------------------------------------------------------------- ASGI plumbing


def _cookies(scope) -> dict[str, str]:
    for k, v in scope.get("headers", []):
        if k.lower() == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            with contextlib.suppress(Exception):
                jar.load(v.decode("latin-1"))
            return {k2: m.value for k2, m in jar.items()}
    return {}


def _query(scope) -> dict[str, str]:
    qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {k: v[0] for k, v in qs.items()}


def _header(scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def ws_authenticated(scope) -> bool:
    if not CFG.token:
        return True
    token = _query(scope).get("token")
    if token:
        return token == CFG.token
    token = _cookies(scope).get("nerve_token")
    return bool(token) and token == CFG.token


def http_auth_error(scope) -> str | None:
    if not CFG.token:
        return None
    token = _cookies(scope).get("nerve_token")
    if not token:
        auth = _header(scope, b"authorization") or ""
        token = auth[7:] if auth.startswith("Bearer ") else None
    if not token:
        token = _query(scope).get("token")
    if not token:
        return "Not authenticated"
    return None if token == CFG.token else "Invalid token"


async def _respond(send, status: int, body: Any) -> None:
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


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return body
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def http(scope, receive, send) -> None:
    method, path = scope["method"], scope["path"]
    body = await _read_body(receive)
    if path == "/health" and method == "GET":
        await _respond(send, 200, {"status": "ok", "version": "0.1.0"})
        return
    if not path.startswith("/api/"):
        await _respond(send, 404, {"detail": "Not Found"})
        return
    err = http_auth_error(scope)
    if err:
        await _respond(send, 401, {"detail": err})
        return
    parts = path.strip("/").split("/")  # ["api", "sessions", ...]
    if parts[:2] != ["api", "sessions"]:
        await _respond(send, 404, {"detail": "Not Found"})
        return
    if len(parts) == 2 and method == "POST":
        try:
            req = json.loads(body or b"{}")
            if not isinstance(req, dict):
                raise ValueError
        except ValueError:
            await _respond(
                send,
                422,
                {"detail": [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}]},
            )
            return
        row = SESSIONS.create(
            _short_id(),
            title=req.get("title"),
            source=req.get("source") or "web",
            model=req.get("model"),
            cwd=req.get("cwd"),
        )
        await _respond(send, 200, row)
        return
    if len(parts) == 2 and method == "GET":
        rows = sorted(SESSIONS.rows.values(), key=lambda r: r["updated_at"], reverse=True)
        rows = [dict(r, is_running=r["id"] in SESSIONS.running) for r in rows]
        await _respond(
            send,
            200,
            {
                "sessions": rows,
                "archived_count": 0,
                "system_count": 0,
                "has_more": False,
                "next_offset": len(rows),
            },
        )
        return
    row = SESSIONS.rows.get(parts[2]) if len(parts) >= 3 else None
    if method == "GET" and len(parts) in (3, 4):
        if row is None and not (len(parts) == 4 and parts[3] == "messages"):
            await _respond(send, 404, {"detail": "Session not found"})
            return
        if len(parts) == 3:
            await _respond(send, 200, row)
            return
        if parts[3] == "status":
            await _respond(
                send,
                200,
                {
                    "session_id": row["id"],
                    "status": row["status"],
                    "is_running": row["id"] in SESSIONS.running,
                    "awaiting_input": False,
                    "sdk_session_id": row["sdk_session_id"],
                    "connected_at": row["connected_at"],
                    "parent_session_id": None,
                    "message_count": row["message_count"],
                    "total_cost_usd": row["total_cost_usd"],
                },
            )
            return
        if parts[3] == "messages":
            await _respond(
                send, 200, {"messages": SESSIONS.messages.get(parts[2], []), "last_usage": None}
            )
            return
    await _respond(send, 404, {"detail": "Not Found"})


async def websocket(scope, receive, send) -> None:
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    if not ws_authenticated(scope):
        await send({"type": "websocket.close", "code": 4001, "reason": "Unauthorized"})
        return
    assert ENGINE is not None
    engine = ENGINE
    client_id = _short_id()
    closed = False

    async def ws_send(obj: dict[str, Any]) -> None:
        await send({"type": "websocket.send", "text": json.dumps(obj)})

    async def ws_broadcast(_session_id: str, message: dict[str, Any]) -> None:
        if closed:
            return
        with contextlib.suppress(Exception):
            await ws_send(message)

    active = SESSIONS.get_last_session(CHANNEL) or SESSIONS.get_active_session(CHANNEL)
    BROADCASTER.register(active, client_id, ws_broadcast)
    BROADCASTER.register(GLOBAL, f"global:{client_id}", ws_broadcast)
    try:
        await ws_send({"type": "session_switched", "session_id": active})
        if active in BROADCASTER.buffers:
            await _session_status(ws_send, active)
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                break
            data = json.loads(event["text"])  # a binary/invalid frame ends the handler
            msg_type = data.get("type", "")
            if msg_type == "message":
                user_text = data.get("content", "")
                session_id = data.get("session_id", active)
                if session_id != active:
                    BROADCASTER.unregister(active, client_id)
                    active = session_id
                    BROADCASTER.register(active, client_id, ws_broadcast)
                    SESSIONS.set_active_session(CHANNEL, session_id)  # raises if unknown
                await BROADCASTER.broadcast(
                    session_id,
                    {
                        "type": "user_message",
                        "session_id": session_id,
                        "content": user_text,
                        "blocks": None,
                    },
                    exclude=client_id,
                )
                task = asyncio.create_task(engine.run(session_id, user_text))
                SESSIONS.tasks[session_id] = task
                _BACKGROUND.add(task)
                task.add_done_callback(_BACKGROUND.discard)
            elif msg_type == "stop":
                session_id = data.get("session_id", active)
                if not await engine.stop_session(session_id):
                    await ws_send(
                        {
                            "type": "error",
                            "session_id": session_id,
                            "error": "No running task to stop",
                        }
                    )
            elif msg_type == "switch_session":
                new_session = data.get("session_id", active)
                BROADCASTER.unregister(active, client_id)
                active = new_session
                BROADCASTER.register(active, client_id, ws_broadcast)
                SESSIONS.set_active_session(CHANNEL, new_session)
                await _session_status(ws_send, new_session)
                await ws_send({"type": "session_switched", "session_id": new_session})
            elif msg_type == "ping":
                await ws_send({"type": "pong"})
    except Exception:
        pass  # real: logger.warning("WebSocket error ..."); the socket is dropped
    finally:
        closed = True
        BROADCASTER.unregister(active, client_id)
        BROADCASTER.unregister(GLOBAL, f"global:{client_id}")


async def _session_status(ws_send, session_id: str) -> None:
    row = SESSIONS.rows.get(session_id)
    is_running = session_id in SESSIONS.running
    msg: dict[str, Any] = {
        "type": "session_status",
        "session_id": session_id,
        "is_running": is_running,
        "status": row.get("status") if row else "unknown",
    }
    if is_running:
        msg["buffered_events"] = list(BROADCASTER.buffers.get(session_id, []))
    await ws_send(msg)


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await http(scope, receive, send)
    elif scope["type"] == "websocket":
        if scope["path"] != "/ws":
            await receive()
            await send({"type": "websocket.close", "code": 1000})
            return
        await websocket(scope, receive, send)


class _Server(uvicorn.Server):
    """Exit with status 0 on SIGTERM/SIGINT (uvicorn would re-raise the signal)."""

    def handle_exit(self, sig, frame) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=8900)
    ap.add_argument("--patched", action="store_true", help="turn the known fault off")
    ap.add_argument("--token", default=None, help="require ?token=T (stands in for the JWT)")
    ap.add_argument("--hang-every", type=int, default=50, metavar="N")
    ap.add_argument("--hang-seconds", type=float, default=900.0)
    ap.add_argument("--error-every", type=int, default=0, metavar="N")
    ap.add_argument("--tool-every", type=int, default=3, metavar="N")
    ap.add_argument("--subagent-every", type=int, default=5, metavar="N")
    ap.add_argument("--token-delay", type=float, default=0.01, metavar="SECONDS")
    args = ap.parse_args(argv)
    CFG.patched = args.patched
    CFG.token = args.token
    CFG.hang_every = args.hang_every
    CFG.hang_seconds = args.hang_seconds
    CFG.error_every = args.error_every
    CFG.tool_every = args.tool_every
    CFG.subagent_every = args.subagent_every
    CFG.token_delay = args.token_delay

    async def serve() -> None:
        global ENGINE
        ENGINE = Engine()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        await _Server(config).serve()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
