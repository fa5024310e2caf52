"""agent_zero_like -- a stand-in for agent-zero's web UI server (agent0ai/agent-zero).

Written from agent-zero's own code (``run_ui.py``, ``helpers/ui_server.py``,
``helpers/ws.py``, ``helpers/ws_manager.py``, ``helpers/state_monitor.py``,
``helpers/state_snapshot.py``, ``helpers/log.py``, ``api/csrf_token.py``,
``api/message.py``, ``api/message_async.py``, ``webui/js/api.js``,
``webui/js/websocket.js``, ``webui/index.js``; commit 2d95cd9 of 2026-04-03).
Only the model is fake: it "answers" by echoing the prompt.  Everything else --
handshake, envelopes, acks, snapshot shape, push scoping and coalescing -- copies
the real server.  One process, python-socketio ``AsyncServer`` in ASGI mode under
uvicorn (``ws="wsproto"`` like the real one), bound to 127.0.0.1 only.

Run::

    python tests/gallery/agent_zero_like.py --port 5000 [--patched] [flags]

Wire protocol (what a client must do)
=====================================

1. ``GET /api/csrf_token`` **with an ``Origin`` (or ``Referer``) header** whose
   host is localhost / 127.0.0.1 / 0.0.0.0 (any scheme/port; the first other
   origin ever seen is added to the allowed list, as the real one does).  Without
   one the answer is ``{"ok": false, "error": "Origin None not allowed ..."}``.
   Success: ``{"ok": true, "token": TOKEN, "runtime_id": RID}`` and a
   ``Set-Cookie: session_{RID}=...`` (the Flask session that stores TOKEN).
   The browser then sets cookie ``csrf_token_{RID}=TOKEN`` itself (JS does it,
   not the server) -- a client must do the same.
2. Socket.IO (Engine.IO v4) at ``/socket.io/``, namespace ``/ws``, ping
   interval 25 s, ping timeout 20 s.  The handshake must carry ``Origin`` equal
   to ``http://HOST:PORT`` of the request's ``Host`` (else Engine.IO answers HTTP
   400 "Not an accepted origin."; with no Origin/Referer at all the namespace
   connect is refused), the cookies ``session_{RID}`` and ``csrf_token_{RID}``,
   and auth ``{"csrf_token": TOKEN, "handlers": ["ws_webui"]}``.
   A bad/missing CSRF token or cookie does NOT refuse the connection (real
   behaviour): the connection is accepted with no handler activated, and every
   event is then acked ``{"correlationId", "results": [{"handlerId":
   "ws.dispatch", "ok": false, "error": {"code": "NO_HANDLERS", "error": "No
   handlers activated"}}]}``.
   On connect the server emits ``server_restart`` (data ``{emittedAt,
   runtimeId}``) -- before the namespace CONNECT ack, exactly like the real code
   -- and broadcasts ``ws_lifecycle_connect`` / ``ws_lifecycle_disconnect``
   (data ``{namespace, sid, connectionCount, timestamp}``) to every connection.
3. Every server->client event is an envelope ``{"handlerId", "eventId",
   "correlationId", "ts", "data"}``.
4. ``emit("state_request", {"context": ID|null, "log_from": 0,
   "notifications_from": 0, "timezone": "Europe/Berlin", "correlationId": C},
   callback=ack)`` (the payload may also be wrapped as ``{"data": {...},
   "correlationId": C}``).  The ack is ``{"correlationId": C, "results":
   [{"handlerId": "ws_webui.WsWebui", "ok": true, "correlationId": C, "data":
   {"runtime_epoch": RID, "seq_base": 1}}]}``.  All four fields are required
   (``log_from``/``notifications_from`` ints >= 0, ``timezone`` a valid IANA
   name, ``context`` a string or null); otherwise the ack is STILL ``ok: true``
   but ``data`` is ``{"code": "INVALID_REQUEST", "message": "..."}``.  Other
   events are acked with ``results: []``.  A client correlationId is echoed; if
   absent the server invents one (uuid4 hex).
5. After a good ``state_request`` the server pushes ``state_push`` envelopes,
   ``data = {"runtime_epoch": RID, "seq": N, "snapshot": {...}}``; ``seq``
   restarts at seq_base+1 = 2 after every ``state_request`` and rises by one per
   push; pushes are coalesced (at most one per 25 ms per connection, never
   postponed by further changes).  ``snapshot`` keys: ``deselect_chat, context,
   contexts, tasks, logs, log_guid, log_version, log_progress,
   log_progress_active, paused, notifications, notifications_guid,
   notifications_version``.  ``logs`` holds only the items updated since the
   previous push (incremental; each item complete, not a delta): ``{no, id,
   type, heading, content, kvps, timestamp, agentno}``.  ``contexts`` lists every
   chat ``{id, name, created_at, no, log_guid, log_version, log_length, paused,
   last_message, type, running}``, newest first.
   Scoping (real): a push is triggered for EVERY projecting connection when a log
   item is *added*, but item *updates* (the streaming growth) and progress
   changes only trigger pushes for connections whose state_request named that
   context.  ``context: null``/"" gets ``logs: []`` (only the contexts list).  A
   context id that does not exist (yet) gives ``deselect_chat: true``.
6. Send: ``POST /api/message_async`` JSON ``{"text", "context", "message_id"}``
   with the session cookie and header ``X-CSRF-Token: TOKEN`` (or the
   ``csrf_token_{RID}`` cookie) -> ``{"message": "Message received.", "context":
   ID}``; 403 text ``CSRF token missing or invalid`` otherwise.  ``context`` ""
   or null = the server's FIRST context (created if none: so naive clients all
   share one chat); an unknown id creates that context (the web UI makes an
   8-character id itself, or calls ``POST /api/chat_create`` ->
   ``{"ok": true, "ctxid": ID, "message": "Context created."}``).  A message to a
   context that is running is an *intervention*: the running reply is abandoned
   (its items stay as they are) and the agent answers the new message in the same
   task.  ``POST /api/message`` is the same but waits and returns ``{"message":
   REPLY, "context": ID}``.  ``POST /api/poll`` ``{context, log_from,
   notifications_from, timezone}`` returns one snapshot (the UI's fallback).
7. A turn, as log items: (new chat only) greeting ``response`` item ``no 0``
   with ``kvps.finished = true``; ``user`` item (content = text, id =
   message_id); ``agent`` item (heading ``A0: Calling LLM...`` -> ``A0:
   Thinking... ||`` -> ``A0: Responding to user``; content = the raw JSON tool
   call as it streams, e.g. ``{"thoughts": [...], "headline": "...",
   "tool_name": "response", "tool_args": {"text": "...reply..."}}``); ``response``
   item (heading ``icon://chat A0: Responding``, content = the reply text,
   growing; ``kvps.finished = true`` at the end; same ``id`` as the agent item).
   ``error`` items carry a traceback-like text, ``warning`` items a short text.
   ``log_progress`` is the last heading, ``log_progress_active`` true while the
   agent works, back to ``"Waiting for input"`` / false at the end.
8. Done = the chat's entry in ``snapshot.contexts`` has ``running: false`` and
   ``snapshot.log_progress_active`` is false (only seen by a connection that
   projects that context).
9. ``GET /api/health`` -> ``{"gitinfo": {...}, "error": null}`` only: no process
   stats, sample them yourself.

The fake model answers ``You said: <prompt>`` (so a ``nonce=xxxxxxxx`` in the
prompt comes back), streamed as the JSON tool call in 10-30 steps
``--token-delay`` seconds apart (default 0.01).

Faults (agent-zero's known failures); ``--patched`` turns them all off
=======================================================================

In the real server every ws handler runs on ONE ``WsHandlers`` event-loop thread
and every chat's agent task runs on ONE shared ``AgentContext`` loop thread (both
singletons of ``helpers/defer.py``).  This fake models both as one serialized
worker: every handler call and every agent step takes it in turn.

``--wedge-after N`` (default 100; 0 = off): after N messages, the next message's
    turn hangs forever while holding the worker.  From then on EVERY chat stops:
    running replies freeze (``running`` stays true), new messages are still
    answered "Message received." and logged as ``user`` items, but get no reply,
    and ``state_request`` acks never arrive (so reconnecting clients get no
    pushes at all).  Engine.IO pings keep working: the connection looks healthy.
``--swallow-every N`` (default 30; 0 = off): every Nth turn, a background task of
    the turn raises, the exception is swallowed, and the turn silently stops
    mid-reply: ``running`` stays true and ``log_progress_active`` stays true
    forever, no ``error`` item.

Non-fault options (off by default, also available with ``--patched``):
``--error-every N``: every Nth turn fails like a model API error: an ``error``
    item, then the turn ends normally (running false).
``--warn-every N``: every Nth turn the model first repeats its previous answer
    (a stale ``agent`` + ``response`` pair with the old text appears), the server
    logs the real ``warning`` item ("You have sent the same message again..."),
    and then the real reply follows in a second agent/response pair.

Deviations from the real server: no login, no persistence, no attachments
(multipart), no secrets masking / content truncation, no notifications, no chat
renaming, no pause; the Flask signed session cookie is an opaque server-side id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import math
import random
import secrets
import string
import traceback
import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlparse

import socketio
import uvicorn

NAMESPACE = "/ws"
HANDLER_PATH = "ws_webui"
HANDLER_ID = "ws_webui.WsWebui"  # f"{module}.{class}" of api/ws_webui.py loaded by file name
MANAGER_ID = "helpers.ws_manager.WsManager"
DEBOUNCE_SECONDS = 0.025
GREETING = "**Hello! 👋**, I'm **Agent Zero**, your AI assistant. How can I help you today?"
REPEAT_WARNING = "You have sent the same message again. You have to do something else!"
DEFAULT_ALLOWED_ORIGINS = [
    "*://localhost",
    "*://localhost:*",
    "*://127.0.0.1",
    "*://127.0.0.1:*",
    "*://0.0.0.0",
    "*://0.0.0.0:*",
]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _ts() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _short_id() -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=8))


# --------------------------------------------------------------------------- config


class Config:
    port: int = 5000
    patched: bool = False
    wedge_after: int = 100
    swallow_every: int = 30
    error_every: int = 0
    warn_every: int = 0
    token_delay: float = 0.01


CFG = Config()
RUNTIME_ID = secrets.token_hex(8)


# --------------------------------------------------------------------------- log


class LogItem:
    def __init__(self, log: Log, no: int, type_: str, agentno: int = 0) -> None:
        self.log = log
        self.no = no
        self.type = type_
        self.heading = ""
        self.content = ""
        self.update_progress = "persistent"
        self.kvps: dict[str, Any] | None = None
        self.id: str | None = None
        self.timestamp = datetime.now(UTC).timestamp()
        self.agentno = agentno

    def update(self, **kw: Any) -> None:
        self.log.update_item(self.no, **kw)

    def output(self) -> dict[str, Any]:
        return {
            "no": self.no,
            "id": self.id,
            "type": self.type,
            "heading": self.heading,
            "content": self.content,
            "kvps": self.kvps,
            "timestamp": self.timestamp,
            "agentno": self.agentno,
        }


class Log:
    """helpers/log.py: items + an append-only list of updated item numbers."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.guid = str(uuid.uuid4())
        self.updates: list[int] = []
        self.logs: list[LogItem] = []
        self.progress = ""
        self.progress_no = 0
        self.progress_active = False
        self.set_progress("Waiting for input", 0, False, notify=False)

    def log(
        self,
        type_: str,
        heading=None,
        content=None,
        kvps=None,
        update_progress=None,
        id=None,
        **kwargs: Any,
    ) -> LogItem:
        item = LogItem(self, len(self.logs), type_)
        self.logs.append(item)
        self.update_item(
            item.no,
            type_=type_,
            heading=heading,
            content=content,
            kvps=kvps,
            update_progress=update_progress,
            id=id,
            notify=False,
            **kwargs,
        )
        MONITOR.mark_dirty_all()  # a new item refreshes every tab's chat list
        return item

    def update_item(
        self,
        no: int,
        type_=None,
        heading=None,
        content=None,
        kvps=None,
        update_progress=None,
        id=None,
        notify: bool = True,
        **kwargs: Any,
    ) -> None:
        item = self.logs[no]
        if id is not None:
            item.id = id
        if type_ is not None:
            item.type = type_
        if update_progress is not None:
            item.update_progress = update_progress
        if heading is not None:
            item.heading = str(heading)
        if content is not None:
            item.content = str(content)
        if kvps is not None:
            item.kvps = dict(kvps)
        elif item.kvps is None:
            item.kvps = {}
        if kwargs:
            item.kvps.update(kwargs)
        self.updates.append(item.no)
        if item.heading and item.update_progress != "none" and item.no >= self.progress_no:
            self.progress = item.heading
            self.progress_no = item.no if item.update_progress == "persistent" else -1
            self.progress_active = True
        if notify:
            MONITOR.mark_dirty_for_context(self.ctx.id)

    def set_progress(
        self, progress: str, no: int = 0, active: bool = True, notify: bool = True
    ) -> None:
        prev = (self.progress, self.progress_active)
        self.progress = progress
        self.progress_no = no or len(self.logs)
        self.progress_active = active
        if notify and prev != (self.progress, self.progress_active):
            MONITOR.mark_dirty_for_context(self.ctx.id)

    def output(self, start: int) -> tuple[list[dict[str, Any]], int]:
        end = len(self.updates)
        out, seen = [], set()
        for no in self.updates[start:end]:
            if no not in seen and no < len(self.logs):
                out.append(self.logs[no].output())
                seen.add(no)
        return out, end


# --------------------------------------------------------------------------- contexts


class Context:
    counter = 0

    def __init__(self, ctx_id: str) -> None:
        self.id = ctx_id
        self.name: str | None = None
        self.created_at = datetime.now(UTC)
        self.last_message = self.created_at
        Context.counter += 1
        self.no = Context.counter
        self.running = False
        self.intervention: str | None = None
        self.last_reply: str | None = None
        self.task: asyncio.Task | None = None
        self.done_future: asyncio.Future | None = None
        CONTEXTS.pop(ctx_id, None)
        CONTEXTS[ctx_id] = self
        self.log = Log(self)
        # extensions/python/agent_init/_10_initial_message.py: greeting on a new chat
        self.log.log(
            "response",
            content=GREETING,
            finished=True,
            update_progress="none",
            id=str(uuid.uuid4()),
        )
        self.last_reply = GREETING

    def output(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "no": self.no,
            "log_guid": self.log.guid,
            "log_version": len(self.log.updates),
            "log_length": len(self.log.logs),
            "paused": False,
            "last_message": self.last_message.isoformat(),
            "type": "user",
            "running": self.running,
        }


CONTEXTS: dict[str, Context] = {}


def use_context(ctxid: str | None) -> Context:
    """helpers/context_utils.py: "" -> the first context; unknown id -> created."""
    if not ctxid:
        if CONTEXTS:
            return next(iter(CONTEXTS.values()))
        new_id = _short_id()
        while new_id in CONTEXTS:
            new_id = _short_id()
        return Context(new_id)
    return CONTEXTS.get(ctxid) or Context(ctxid)


# --------------------------------------------------------------------------- snapshot


class StateRequestError(ValueError):
    pass


def _valid_timezone(tz: str) -> bool:
    try:
        zoneinfo.ZoneInfo(tz)
        return True
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # pytz (used by the real server) is case-insensitive
        return tz.lower() in {z.lower() for z in zoneinfo.available_timezones()}


def parse_state_request(payload: dict[str, Any]) -> dict[str, Any]:
    """helpers/state_snapshot.py: parse_state_request_payload."""
    context = payload.get("context")
    log_from = payload.get("log_from")
    notifications_from = payload.get("notifications_from")
    timezone = payload.get("timezone")
    if context is not None and not isinstance(context, str):
        raise StateRequestError("context must be a string or null")
    if isinstance(log_from, bool) or not isinstance(log_from, int) or log_from < 0:
        raise StateRequestError("log_from must be an integer >= 0")
    if (
        isinstance(notifications_from, bool)
        or not isinstance(notifications_from, int)
        or notifications_from < 0
    ):
        raise StateRequestError("notifications_from must be an integer >= 0")
    if not isinstance(timezone, str) or not timezone.strip():
        raise StateRequestError("timezone must be a non-empty string")
    if not _valid_timezone(timezone.strip()):
        raise StateRequestError("timezone must be a valid IANA timezone name")
    ctxid = context.strip() if isinstance(context, str) else None
    return {
        "context": ctxid or None,
        "log_from": log_from,
        "notifications_from": notifications_from,
        "timezone": timezone.strip(),
    }


NOTIFICATIONS_GUID = str(uuid.uuid4())


def build_snapshot(request: dict[str, Any]) -> dict[str, Any]:
    ctxid = (request.get("context") or "").strip()
    active = CONTEXTS.get(ctxid) if ctxid else None
    if active:
        logs, log_end = active.log.output(max(0, int(request.get("log_from") or 0)))
    else:
        logs, log_end = [], 0
    ctxs = sorted(
        (c.output() for c in CONTEXTS.values()), key=lambda c: c["created_at"], reverse=True
    )
    return {
        "deselect_chat": bool(ctxid) and active is None,
        "context": active.id if active else "",
        "contexts": ctxs,
        "tasks": [],
        "logs": logs,
        "log_guid": active.log.guid if active else "",
        "log_version": log_end,
        "log_progress": active.log.progress if active else 0,
        "log_progress_active": bool(active.log.progress_active) if active else False,
        "paused": False,
        "notifications": [],
        "notifications_guid": NOTIFICATIONS_GUID,
        "notifications_version": 0,
    }


# --------------------------------------------------------------------------- socket.io


def _envelope(handler_id: str, data: dict[str, Any], correlation_id: str | None = None):
    return {
        "handlerId": handler_id,
        "eventId": str(uuid.uuid4()),
        "correlationId": correlation_id or str(uuid.uuid4()),
        "ts": _ts(),
        "data": data or {},
    }


def _origin_of(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    p = urlparse(value.strip())
    try:
        port = p.port
    except ValueError:
        return None
    if not p.scheme or not p.hostname:
        return None
    return f"{p.scheme}://{p.hostname}" + (f":{port}" if port else "")


def validate_ws_origin(environ: dict[str, Any]) -> bool:
    """helpers/ws.py validate_ws_origin: Origin host:port must equal the Host header."""
    origin = _origin_of(environ.get("HTTP_ORIGIN") or environ.get("HTTP_REFERER"))
    if origin is None:
        return False
    op = urlparse(origin)
    o_host = (op.hostname or "").lower()
    host_hdr = str(environ.get("HTTP_HOST") or "").strip()
    o_port = op.port or {"http": 80, "https": 443}.get(op.scheme)
    if not o_host or o_port is None:
        return False
    hp = urlparse("http://" + host_hdr)
    r_host = (hp.hostname or "").lower()
    try:
        r_port = hp.port or o_port
    except ValueError:
        return False
    return bool(r_host) and (o_host, o_port) == (r_host, r_port)


sio = socketio.AsyncServer(
    async_mode="asgi",
    namespaces="*",
    cors_allowed_origins=lambda _origin, environ: validate_ws_origin(environ),
    logger=False,
    engineio_logger=False,
    ping_interval=25,
    ping_timeout=20,
    max_http_buffer_size=50 * 1024 * 1024,
)

CONNECTIONS: set[str] = set()
ACTIVE_HANDLERS: dict[str, bool] = {}  # sid -> ws_webui activated


class Projection:
    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.request: dict[str, Any] | None = None
        self.seq = 0
        self.seq_base = 0
        self.dirty_version = 0
        self.pushed_version = 0


class StateMonitor:
    """helpers/state_monitor.py: per-sid dirty tracking, throttled 25 ms pushes."""

    def __init__(self) -> None:
        self.projections: dict[str, Projection] = {}
        self.handles: dict[str, asyncio.TimerHandle] = {}
        self.push_tasks: dict[str, asyncio.Task] = {}

    def register(self, sid: str) -> None:
        self.projections.setdefault(sid, Projection(sid))

    def unregister(self, sid: str) -> None:
        h = self.handles.pop(sid, None)
        if h:
            h.cancel()
        t = self.push_tasks.pop(sid, None)
        if t:
            t.cancel()
        self.projections.pop(sid, None)

    def update_projection(self, sid: str, request: dict[str, Any], seq_base: int) -> None:
        p = self.projections.setdefault(sid, Projection(sid))
        p.request = request
        p.seq_base = seq_base
        p.seq = seq_base

    def mark_dirty_all(self) -> None:
        for sid in list(self.projections):
            self.mark_dirty(sid)

    def mark_dirty_for_context(self, ctx_id: str) -> None:
        for sid, p in list(self.projections.items()):
            if p.request is not None and p.request.get("context") == ctx_id:
                self.mark_dirty(sid)

    def mark_dirty(self, sid: str) -> None:
        p = self.projections.get(sid)
        if p is None:
            return
        p.dirty_version += 1
        self._schedule(sid)

    def _schedule(self, sid: str) -> None:
        p = self.projections.get(sid)
        if p is None or p.seq_base <= 0:
            return
        h = self.handles.get(sid)
        if h is not None and not h.cancelled():
            return
        t = self.push_tasks.get(sid)
        if t is not None and not t.done():
            return
        loop = asyncio.get_running_loop()
        self.handles[sid] = loop.call_later(DEBOUNCE_SECONDS, self._fire, sid)

    def _fire(self, sid: str) -> None:
        self.handles.pop(sid, None)
        t = self.push_tasks.get(sid)
        if t is not None and not t.done():
            return
        self.push_tasks[sid] = asyncio.create_task(self._flush(sid))

    async def _flush(self, sid: str) -> None:
        task = asyncio.current_task()
        try:
            p = self.projections.get(sid)
            if p is None or p.seq_base <= 0 or p.request is None:
                return
            request = p.request
            base_version = p.dirty_version
            snapshot = build_snapshot(request)
            p.seq += 1
            seq = p.seq
            p.request = dict(request, log_from=snapshot["log_version"])
            p.pushed_version = max(p.pushed_version, base_version)
            payload = {"runtime_epoch": RUNTIME_ID, "seq": seq, "snapshot": snapshot}
            if sid in CONNECTIONS:
                await sio.emit(
                    "state_push", _envelope(HANDLER_ID, payload), to=sid, namespace=NAMESPACE
                )
        finally:
            if self.push_tasks.get(sid) is task:
                self.push_tasks.pop(sid, None)
        p = self.projections.get(sid)
        if p is not None and p.dirty_version > p.pushed_version:
            asyncio.get_running_loop().call_soon(self._schedule, sid)


MONITOR = StateMonitor()


class Worker:
    """The serialized handler/agent worker (see module docstring)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.wedged = False

    async def run(self, fn, *args):
        async with self.lock:
            return fn(*args)

    async def hang_forever(self) -> None:
        async with self.lock:
            self.wedged = True
            await asyncio.Event().wait()


WORKER: Worker | None = None


def _cookies(header: str | None) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    if header:
        try:
            jar.load(header)
        except Exception:
            return {}
    return {k: m.value for k, m in jar.items()}


@sio.on("connect", namespace=NAMESPACE)
async def on_connect(sid, environ, auth=None):
    if not validate_ws_origin(environ):
        return False
    cookies = _cookies(environ.get("HTTP_COOKIE"))
    session = SESSIONS.get(cookies.get(f"session_{RUNTIME_ID}", ""), {})
    client_token = None
    handlers: list[str] = []
    if isinstance(auth, dict):
        client_token = auth.get("csrf_token") or auth.get("csrfToken")
        raw = auth.get("handlers")
        if isinstance(raw, list):
            handlers = [h for h in raw if isinstance(h, str)]
    server_token = session.get("csrf_token")
    csrf_ok = (
        bool(server_token)
        and client_token == server_token
        and (cookies.get(f"csrf_token_{RUNTIME_ID}") == server_token)
    )
    CONNECTIONS.add(sid)
    # WsManager.handle_connect: server_restart to this sid (before the CONNECT ack)
    await sio.emit(
        "server_restart",
        _envelope(MANAGER_ID, {"emittedAt": _ts(), "runtimeId": RUNTIME_ID}),
        to=sid,
        namespace=NAMESPACE,
    )
    _lifecycle("ws_lifecycle_connect", sid)
    activated = HANDLER_PATH in handlers and csrf_ok
    ACTIVE_HANDLERS[sid] = activated
    if activated:
        MONITOR.register(sid)
    return True


def _lifecycle(event: str, sid: str) -> None:
    payload = {
        "namespace": NAMESPACE,
        "sid": sid,
        "connectionCount": len(CONNECTIONS),
        "timestamp": _ts(),
    }

    async def _go() -> None:
        for target in list(CONNECTIONS):
            with contextlib.suppress(Exception):
                await sio.emit(
                    event, _envelope(MANAGER_ID, payload), to=target, namespace=NAMESPACE
                )

    task = asyncio.create_task(_go())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Task] = set()


@sio.on("disconnect", namespace=NAMESPACE)
async def on_disconnect(sid, *_args):
    CONNECTIONS.discard(sid)
    if ACTIVE_HANDLERS.pop(sid, False):
        MONITOR.unregister(sid)
    _lifecycle("ws_lifecycle_disconnect", sid)


def _process_event(sid: str, event: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """api/ws_webui.py + extensions/python/webui_ws_event/_10_state_sync.py."""
    if event != "state_request":
        return None
    try:
        request = parse_state_request(payload)
    except StateRequestError as exc:
        return {"code": "INVALID_REQUEST", "message": str(exc)}
    MONITOR.update_projection(sid, request, seq_base=1)
    MONITOR.mark_dirty(sid)
    return {"runtime_epoch": RUNTIME_ID, "seq_base": 1}


@sio.on("*", namespace=NAMESPACE)
async def on_any(event, sid, *args):
    data = args[0] if args else None
    incoming = data if isinstance(data, dict) else {}
    cid = incoming.get("correlationId")
    cid = cid.strip() if isinstance(cid, str) and cid.strip() else uuid.uuid4().hex
    if sid not in CONNECTIONS:
        return _error_response("AUTH_REQUIRED", "No security context", cid)
    if not ACTIVE_HANDLERS.get(sid):
        return _error_response("NO_HANDLERS", "No handlers activated", cid)
    if "data" in incoming and isinstance(incoming.get("data"), dict):
        payload = dict(incoming["data"])
    else:
        payload = dict(incoming)
    payload["correlationId"] = cid
    assert WORKER is not None
    result = await WORKER.run(_process_event, sid, event, payload)
    results = []
    if result:
        results.append({"handlerId": HANDLER_ID, "ok": True, "correlationId": cid, "data": result})
    return {"correlationId": cid, "results": results}


def _error_response(code: str, message: str, cid: str) -> dict[str, Any]:
    return {
        "correlationId": cid,
        "results": [
            {"handlerId": "ws.dispatch", "ok": False, "error": {"code": code, "error": message}}
        ],
    }


# --------------------------------------------------------------------------- fake agent

COUNTERS = {"messages": 0, "turns": 0}
THOUGHTS = ["The user sent a message.", "I will answer with the response tool."]


def _reply_json(reply: str, headline: str = "Responding to user") -> tuple[str, int, int]:
    """The model's raw output (a response tool call) + span of the text value."""
    doc = {
        "thoughts": THOUGHTS,
        "headline": headline,
        "tool_name": "response",
        "tool_args": {"text": reply},
    }
    raw = json.dumps(doc, indent=4, ensure_ascii=False)
    marker = '"text": "'
    start = raw.rindex(marker) + len(marker)
    end = start + len(json.dumps(reply, ensure_ascii=False)) - 2
    return raw, start, end


def _decode_partial(segment: str) -> str:
    for cut in range(len(segment), max(-1, len(segment) - 7), -1):
        try:
            return json.loads('"' + segment[:cut] + '"')
        except ValueError:
            continue
    return ""


def _parsed_partial(raw: str, upto: int, start: int, end: int, headline: str) -> dict[str, Any]:
    shown = raw[:upto]
    parsed: dict[str, Any] = {}
    if '"thoughts"' in shown:
        parsed["thoughts"] = THOUGHTS if '"headline"' in shown else []
    if f'"headline": {json.dumps(headline, ensure_ascii=False)}' in shown:
        parsed["headline"] = headline
    if '"tool_name": "response"' in shown:
        parsed["tool_name"] = "response"
    if upto > start:
        parsed["tool_args"] = {"text": _decode_partial(raw[start : min(upto, end)])}
    return parsed


async def _step(fn, *args) -> None:
    assert WORKER is not None
    await WORKER.run(fn, *args)
    await asyncio.sleep(CFG.token_delay)


class _Intervened(Exception):
    pass


async def _stream_reply(ctx: Context, reply: str, swallow: bool, finished: bool = True) -> None:
    raw, start, end = _reply_json(reply)
    headline = "Responding to user"
    gen = {}

    def begin() -> None:  # before_main_llm_call/_10_log_for_stream.py
        gen["agent"] = ctx.log.log("agent", heading="A0: Calling LLM...", id=str(uuid.uuid4()))

    await _step(begin)
    steps = max(10, min(30, len(raw) // 8))
    cuts = sorted({max(1, round(len(raw) * (i + 1) / steps)) for i in range(steps)})
    for i, cut in enumerate(cuts):
        if ctx.intervention is not None:
            raise _Intervened()
        if swallow and i == len(cuts) // 2:
            await _swallowed_failure()

        def grow(cut=cut) -> None:  # response_stream/_10_log_from_stream + _20_live_response
            parsed = _parsed_partial(raw, cut, start, end, headline)
            if "headline" in parsed:
                heading = f"A0: {headline}"
            elif "thoughts" in parsed:
                heading = "A0: Thinking... " + "|" * math.ceil(math.sqrt(cut) / 2)
            else:
                heading = "A0: Receiving..."
            kvps = {"step": "Using response..."} if parsed.get("tool_name") else {}
            kvps.update(parsed)
            gen["agent"].update(heading=heading, content=raw[:cut], kvps=kvps)
            text = parsed.get("tool_args", {}).get("text")
            if text:
                if "response" not in gen:
                    gen["response"] = ctx.log.log(
                        "response", heading="icon://chat A0: Responding", id=gen["agent"].id
                    )
                gen["response"].update(content=text)

        await _step(grow)

    def finish() -> None:  # response_stream_end + tools/response.py after_execution
        kv = dict(gen["agent"].kvps or {})
        kv.pop("step", None)
        gen["agent"].update(kvps=kv)
        if "response" not in gen:
            gen["response"] = ctx.log.log(
                "response", heading="icon://chat A0: Responding", content=reply, id=gen["agent"].id
            )
        if finished:  # the response tool ran (not for a repeated, rejected answer)
            gen["response"].update(finished=True)

    await _step(finish)


async def _swallowed_failure() -> None:
    """A child task raises; nobody looks at it; the parent waits forever."""

    async def child() -> None:
        raise RuntimeError("background task failed")

    t = asyncio.create_task(child())
    t.add_done_callback(lambda task: task.exception())  # swallowed
    await asyncio.Event().wait()


def _fake_api_error() -> str:
    try:
        raise ConnectionError("litellm.APIConnectionError: Connection error (fake model)")
    except ConnectionError as exc:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


async def run_task(ctx: Context, text: str, wedge: bool) -> None:
    """AgentContext._process_chain -> Agent.monologue, with a fake model."""
    COUNTERS["turns"] += 1
    turn_no = COUNTERS["turns"]
    swallow = (not CFG.patched) and CFG.swallow_every > 0 and turn_no % CFG.swallow_every == 0
    error = CFG.error_every > 0 and turn_no % CFG.error_every == 0
    warn = CFG.warn_every > 0 and turn_no % CFG.warn_every == 0
    assert WORKER is not None
    reply = ""
    try:
        if wedge:
            await WORKER.hang_forever()
        await _step(ctx.log.set_progress, "Building prompt")
        if error:  # the agent item exists before the model call fails
            await _step(
                lambda: ctx.log.log("agent", heading="A0: Calling LLM...", id=str(uuid.uuid4()))
            )
            await _step(lambda: ctx.log.log("error", content=_fake_api_error()))
        else:
            if warn and ctx.last_reply:
                try:
                    await _stream_reply(ctx, ctx.last_reply, swallow=False, finished=False)
                    await _step(
                        lambda: ctx.log.log("warning", content=REPEAT_WARNING, id=str(uuid.uuid4()))
                    )
                except _Intervened:
                    text, ctx.intervention = ctx.intervention or "", None
            while True:
                reply = f"You said: {text}"
                try:
                    await _stream_reply(ctx, reply, swallow=swallow)
                    break
                except _Intervened:
                    text, ctx.intervention = ctx.intervention or "", None
            ctx.last_reply = reply
    finally:
        if not (ctx.done_future and ctx.done_future.done()):
            ctx.running = False
            ctx.log.set_progress("Waiting for input", 0, False)  # monologue_end
            if ctx.done_future is not None and not ctx.done_future.done():
                ctx.done_future.set_result(reply)


def communicate(ctx: Context, text: str, message_id: str | None) -> asyncio.Future:
    COUNTERS["messages"] += 1
    ctx.last_message = datetime.now(UTC)
    ctx.log.log("user", heading="", content=text, kvps={"attachments": []}, id=message_id)
    if ctx.running and ctx.done_future is not None:
        ctx.intervention = text
        return ctx.done_future
    wedge = (
        not CFG.patched
        and CFG.wedge_after > 0
        and not (WORKER and WORKER.wedged)
        and COUNTERS["messages"] > CFG.wedge_after
    )
    ctx.running = True
    ctx.done_future = asyncio.get_running_loop().create_future()
    ctx.task = asyncio.create_task(run_task(ctx, text, wedge))
    return ctx.done_future


# --------------------------------------------------------------------------- HTTP

SESSIONS: dict[str, dict[str, Any]] = {}
ALLOWED_ORIGINS: list[str] = []


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return body
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def _respond(
    send,
    status: int,
    body: Any,
    content_type: str = "application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    raw = json.dumps(body).encode() if isinstance(body, (dict, list)) else str(body).encode()
    hdrs = [(b"content-type", content_type.encode()), (b"content-length", str(len(raw)).encode())]
    hdrs += headers or []
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})


def _origin_allowed(origin: str | None) -> bool:
    """api/csrf_token.py check_allowed_origin (login disabled)."""
    if not origin:
        return False
    if not ALLOWED_ORIGINS and not any(fnmatch.fnmatch(origin, p) for p in DEFAULT_ALLOWED_ORIGINS):
        ALLOWED_ORIGINS.extend(DEFAULT_ALLOWED_ORIGINS + [origin])  # first visit is trusted
    allowed = ALLOWED_ORIGINS or DEFAULT_ALLOWED_ORIGINS
    return any(fnmatch.fnmatch(origin, p) for p in allowed)


class Request:
    def __init__(self, scope, body: bytes) -> None:
        self.method = scope["method"]
        self.path = scope["path"]
        self.headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.cookies = _cookies(self.headers.get("cookie"))
        self.body = body

    def json(self) -> dict[str, Any]:
        ctype = self.headers.get("content-type", "")
        if not ctype.split(";")[0].strip().endswith("json"):
            raise ValueError(
                "415 Unsupported Media Type: Did not attempt to load JSON data "
                "because the request Content-Type was not 'application/json'."
            )
        data = json.loads(self.body or b"null")
        return data if isinstance(data, dict) else {}

    def session(self) -> dict[str, Any] | None:
        return SESSIONS.get(self.cookies.get(f"session_{RUNTIME_ID}", ""))


API_METHODS = {
    "csrf_token": ["GET"],
    "health": ["GET", "POST"],
    "message_async": ["POST"],
    "message": ["POST"],
    "chat_create": ["POST"],
    "poll": ["POST"],
}


async def http_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
        return
    req = Request(scope, await _read_body(receive))
    path = req.path
    if not path.startswith("/api/"):
        if path == "/" and req.method == "GET":
            await _respond(send, 200, "<html><body>agent_zero_like</body></html>", "text/html")
        else:
            await _respond(send, 404, "Not Found", "text/html")
        return
    name = path[len("/api/") :]
    if name not in API_METHODS:
        await _respond(send, 404, f"API endpoint not found: {name}", "text/html")
        return
    if req.method not in API_METHODS[name]:
        await _respond(send, 405, f"Method {req.method} not allowed for: {name}", "text/html")
        return
    if name == "csrf_token":
        await _csrf_token(req, send)
        return
    if name == "health":
        await _respond(
            send,
            200,
            {
                "gitinfo": {
                    "branch": "main",
                    "commit_hash": "0" * 40,
                    "commit_time": "2026-04-03 17:15:57",
                    "tag": "v0.9.8",
                    "short_tag": "v0.9.8",
                    "version": "0.9.8",
                },
                "error": None,
            },
        )
        return
    session = req.session()
    token = session.get("csrf_token") if session else None
    sent = req.headers.get("x-csrf-token") or req.cookies.get(f"csrf_token_{RUNTIME_ID}")
    if not token or not sent or token != sent:
        await _respond(send, 403, "CSRF token missing or invalid", "text/plain")
        return
    try:
        out = await _api(name, req)
    except Exception as exc:  # ApiHandler.handle_request: 500 with the error text
        await _respond(send, 500, f"{type(exc).__name__}: {exc}", "text/plain")
        return
    await _respond(send, 200, out)


async def _csrf_token(req: Request, send) -> None:
    origin = _origin_of(req.headers.get("origin") or req.headers.get("referer"))
    if not _origin_allowed(origin):
        allowed = ",".join(ALLOWED_ORIGINS or DEFAULT_ALLOWED_ORIGINS)
        await _respond(
            send,
            200,
            {
                "ok": False,
                "error": f"Origin {origin} not allowed when login is disabled. Set login and "
                f"password or add your URL to ALLOWED_ORIGINS env variable. Currently allowed "
                f"origins: {allowed}",
            },
        )
        return
    headers = []
    session = req.session()
    if session is None:
        sess_id = secrets.token_urlsafe(24)
        session = SESSIONS[sess_id] = {}
        expires = format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True)
        cookie = f"session_{RUNTIME_ID}={sess_id}; Expires={expires}; HttpOnly; Path=/"
        cookie += "; SameSite=Lax"
        headers.append((b"set-cookie", cookie.encode()))
        headers.append((b"vary", b"Cookie"))
    if "csrf_token" not in session:
        session["csrf_token"] = secrets.token_urlsafe(32)
    await _respond(
        send,
        200,
        {"ok": True, "token": session["csrf_token"], "runtime_id": RUNTIME_ID},
        headers=headers,
    )


async def _api(name: str, req: Request) -> dict[str, Any]:
    if name in ("message_async", "message"):
        data = req.json()
        ctx = use_context(data.get("context", ""))
        future = communicate(ctx, str(data.get("text", "")), data.get("message_id"))
        if name == "message_async":
            return {"message": "Message received.", "context": ctx.id}
        return {"message": await asyncio.shield(future), "context": ctx.id}
    if name == "chat_create":
        data = req.json() if req.body else {}
        ctx = use_context(data.get("new_context") or _short_id())
        MONITOR.mark_dirty_all()
        return {"ok": True, "ctxid": ctx.id, "message": "Context created."}
    if name == "poll":
        data = req.json() if req.body else {}
        tz = data.get("timezone")
        return build_snapshot(
            {
                "context": (data.get("context") or "").strip() or None,
                "log_from": max(0, int(data.get("log_from") or 0)),
                "notifications_from": max(0, int(data.get("notifications_from") or 0)),
                "timezone": tz if isinstance(tz, str) and tz else "UTC",
            }
        )
    raise KeyError(name)


app = socketio.ASGIApp(sio, other_asgi_app=http_app)


# --------------------------------------------------------------------------- main


class _Server(uvicorn.Server):
    """Exit with status 0 on SIGTERM/SIGINT (uvicorn would re-raise the signal)."""

    def handle_exit(self, sig, frame) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--patched", action="store_true", help="turn every known fault off")
    ap.add_argument("--wedge-after", type=int, default=100, metavar="N")
    ap.add_argument("--swallow-every", type=int, default=30, metavar="N")
    ap.add_argument("--error-every", type=int, default=0, metavar="N")
    ap.add_argument("--warn-every", type=int, default=0, metavar="N")
    ap.add_argument("--token-delay", type=float, default=0.01, metavar="SECONDS")
    args = ap.parse_args(argv)
    CFG.port = args.port
    CFG.patched = args.patched
    CFG.wedge_after = args.wedge_after
    CFG.swallow_every = args.swallow_every
    CFG.error_every = args.error_every
    CFG.warn_every = args.warn_every
    CFG.token_delay = args.token_delay

    async def serve() -> None:
        global WORKER
        WORKER = Worker()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=args.port,
            ws="wsproto",
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        await _Server(config).serve()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
