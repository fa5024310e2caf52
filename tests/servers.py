"""Small servers on loopback for tests: scripted chat and /health servers, and one server per
real protocol family of PROTOCOLS.md (nerve-style JSON events, hermes-style JSON-RPC,
agent-zero-style Socket.IO with HTTP send), each with switchable faults."""

from __future__ import annotations

import asyncio
import http
import json
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

Handler = Callable[[ServerConnection, dict], Awaitable[None]]
FILLER = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur"]


@contextmanager
def _loop_thread(main: Callable[[dict, threading.Event], Awaitable[None]]) -> Iterator[dict]:
    """Run `main(state, ready)` on an event loop in a thread until the context exits.

    `main` sets `ready` once it listens and must return when `state["stop"]` (a future) is
    done; yields `state`."""
    ready = threading.Event()
    state: dict = {}
    loop = asyncio.new_event_loop()

    async def run() -> None:
        state["stop"] = asyncio.get_running_loop().create_future()
        await main(state, ready)

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield state
    finally:
        loop.call_soon_threadsafe(state["stop"].set_result, None)
        thread.join(10)
        loop.close()


@contextmanager
def _ws_server(
    handler: Callable[[ServerConnection], Awaitable[None]], health_path: str, health: dict
) -> Iterator[dict]:
    """A WebSocket server on 127.0.0.1 that answers GET `health_path` with `health`."""

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith(health_path):
            return _json_response(connection, health)
        return None

    async def main(state: dict, ready: threading.Event) -> None:
        async with serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
            state["port"] = server.sockets[0].getsockname()[1]
            ready.set()
            await state["stop"]

    with _loop_thread(main) as state:
        yield state


def _json_response(connection: ServerConnection, body: dict) -> Response:
    response = connection.respond(http.HTTPStatus.OK, json.dumps(body))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


def reply_words(prompt: str, tokens: int) -> list[str]:
    """ "You said: <prompt>" padded with filler words up to `tokens` words."""
    words = ["You", "said:", *prompt.split()]
    return words + [FILLER[i % len(FILLER)] for i in range(max(0, tokens - len(words)))]


@contextmanager
def scripted_chat_server(on_message: Handler) -> Iterator[str]:
    """A WebSocket server on 127.0.0.1 that greets like the built-in target, then lets
    `on_message(connection, message)` answer each client frame. Yields its ws:// URL."""

    async def handler(connection: ServerConnection) -> None:
        await connection.send(json.dumps({"type": "session_switched", "session_id": "s1"}))
        async for raw in connection:
            await on_message(connection, json.loads(raw))

    async def main(state: dict, ready: threading.Event) -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            state["port"] = server.sockets[0].getsockname()[1]
            ready.set()
            await state["stop"]

    with _loop_thread(main) as state:
        yield f"ws://127.0.0.1:{state['port']}/ws"


@contextmanager
def http_server(respond: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 whose GET handler is `respond`. Yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            respond(self)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


async def _asgi_body(receive: Callable) -> bytes:
    """The whole body of an ASGI HTTP request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


@dataclass
class Faults:
    """Fault switches shared by the protocol servers; `*_every` = every Nth reply, 0 = off."""

    tokens: int = 12
    token_interval: float = 0.005
    swallow_every: int = 0  # the reply dies silently halfway: no terminal frame ever
    frame_after_done_every: int = 0  # one more token after the terminal frame
    duplicate_done_every: int = 0  # the terminal frame twice
    seq_skip_every: int = 0  # one seq number left out mid-reply
    error_every: int = 0  # the reply ends with an error instead of done
    non_json_every: int = 0  # one frame that is not JSON mid-reply
    answer_previous: bool = False  # the first prompt is dropped, each later one gets the
    # answer to the prompt before it ("it answered the previous question")
    block_loop_every: int = 0  # block the event loop before replying ...
    block_loop_s: float = 0.0  # ... for this long (time.sleep on the loop)
    foreign_every: int = 0  # a token of another request/session mid-reply
    truncate_every: int = 0  # HTTP: the body breaks off mid-stream (no last chunk)
    http_error_every: int = 0  # HTTP: status 500 with an error body instead of a stream
    omit_done: bool = False  # SSE: finish_reason, then the body ends without [DONE]
    words_per_frame: int = 1  # HTTP: this many words packed into one token frame
    ignore_usage: bool = False  # OpenAI: no usage chunk even when include_usage is asked

    def hits(self, rate: int, n: int) -> bool:
        return bool(rate) and n % rate == 0


#: (faults, outcome, violation or mismatch subkind) of every reply after the first, the
#: same on every HTTP streaming family's test server.
HTTP_FAULTS = [
    (Faults(truncate_every=1), "disconnect", None),
    (Faults(swallow_every=1), "stall", None),
    (Faults(error_every=1), "error", None),
    (Faults(http_error_every=1), "error", None),
    (Faults(frame_after_done_every=1), "violation", "frame_after_done"),
    (Faults(duplicate_done_every=1), "violation", "duplicate_done"),
    (Faults(non_json_every=1), "violation", "non_json"),
    (Faults(answer_previous=True), "mismatch", None),
]


@dataclass
class ServerInfo:
    """A running test server: its URLs and what it did (replies finished with done)."""

    url: str
    health_url: str
    replies: int = 0
    prompts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# --- nerve-style plain JSON events -----------------------------------------------------
@contextmanager
def nerve_server(faults: Faults | None = None) -> Iterator[ServerInfo]:
    """PROTOCOLS.md family 3: `session_switched` on connect, `{type: message, content,
    session_id}` in, `token` frames and one `done` out (no request ids), ping -> pong,
    GET /health. Yields a ServerInfo (url ws://.../ws)."""
    faults = faults or Faults()
    info = ServerInfo("", "")
    previous: list[str] = []  # answer_previous: prompts waiting, across connections

    async def reply(connection: ServerConnection, session: str, prompt: str) -> None:
        info.prompts += 1
        n = info.prompts
        if faults.answer_previous:
            previous.append(prompt)
            if len(previous) < 2:
                return  # the first send "dropped during a reconnect window"
            prompt = previous.pop(0)
        if faults.hits(faults.block_loop_every, n):
            time.sleep(faults.block_loop_s)  # noqa: ASYNC251 - blocking the loop is the fault
        words = reply_words(prompt, faults.tokens)
        for i, word in enumerate(words):
            if faults.hits(faults.swallow_every, n) and i == len(words) // 2:
                return
            if faults.hits(faults.non_json_every, n) and i == 1:
                await connection.send("<html>502 Bad Gateway</html>")
            await connection.send(
                json.dumps({"type": "token", "session_id": session, "content": word + " "})
            )
            await asyncio.sleep(faults.token_interval)
        if faults.hits(faults.error_every, n):
            await connection.send(json.dumps({"type": "error", "error": "model overloaded"}))
            return
        done = json.dumps({"type": "done", "session_id": session, "usage": {"tokens": len(words)}})
        await connection.send(done)
        info.replies += 1
        if faults.hits(faults.duplicate_done_every, n):
            await connection.send(done)
        if faults.hits(faults.frame_after_done_every, n):
            await asyncio.sleep(0.01)
            await connection.send(
                json.dumps({"type": "token", "session_id": session, "content": "!"})
            )

    async def handler(connection: ServerConnection) -> None:
        session = uuid.uuid4().hex
        await connection.send(json.dumps({"type": "session_switched", "session_id": session}))
        try:
            async for raw in connection:
                message = json.loads(raw)
                if message.get("type") == "ping":
                    await connection.send(json.dumps({"type": "pong"}))
                elif message.get("type") == "message":
                    await reply(connection, session, message["content"])
        except ConnectionClosed:
            pass  # the client left mid-reply

    with _ws_server(handler, "/health", {"status": "ok", "version": "test"}) as state:
        base = f"127.0.0.1:{state['port']}"
        info.url, info.health_url = f"ws://{base}/ws", f"http://{base}/health"
        yield info


# --- hermes-style JSON-RPC 2.0 ----------------------------------------------------------
@contextmanager
def hermes_server(faults: Faults | None = None, token: str = "secret") -> Iterator[ServerInfo]:
    """PROTOCOLS.md family 1: `ws://.../api/ws?token=T` (bad token: close 4401),
    `gateway.ready`, `session.create`, `prompt.submit` (busy: RPC error 4009), events with
    `seq`, `message.delta` tokens, `message.complete {status}`, `ping` -> `{pong: true}`,
    GET /api/status. Yields a ServerInfo whose url carries the token."""
    faults = faults or Faults()
    info = ServerInfo("", "")

    async def stream(send: Callable, session: str, prompt: str, n: int, turn: dict) -> None:
        hung = False  # a swallowed failure: the session stays busy, nothing more is sent
        try:
            if faults.hits(faults.block_loop_every, n):
                time.sleep(faults.block_loop_s)  # noqa: ASYNC251 - blocking the loop is the fault
            await send(session, "message.start", {})
            words = reply_words(prompt, faults.tokens)
            for i, word in enumerate(words):
                if faults.hits(faults.swallow_every, n) and i == len(words) // 2:
                    hung = True
                    return
                if faults.hits(faults.seq_skip_every, n) and i == 2:
                    turn["seq"] += 1  # an event lost on the way
                if faults.hits(faults.foreign_every, n) and i == 1:
                    await send("other-session", "message.delta", {"text": "stray "})
                await send(session, "message.delta", {"text": word + " "})
                await asyncio.sleep(faults.token_interval)
            status = "error" if faults.hits(faults.error_every, n) else "complete"
            payload = {"text": " ".join(words), "usage": {"tokens": len(words)}, "status": status}
            if status == "error":
                payload["error"] = "provider returned 500"
            await send(session, "message.complete", payload)
            info.replies += status == "complete"
        finally:
            turn["busy"] = hung

    async def handler(connection: ServerConnection) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(connection.request.path).query)
        if query.get("token") != [token]:
            await connection.close(4401, "unauthorized")
            return
        sessions: dict[str, dict] = {}

        async def send_event(session: str, kind: str, payload: dict) -> None:
            turn = sessions.get(session, {"seq": 0})
            turn["seq"] += 1
            params = {"type": kind, "session_id": session, "payload": payload, "seq": turn["seq"]}
            await connection.send(
                json.dumps({"jsonrpc": "2.0", "method": "event", "params": params})
            )

        async def answer(call_id: Any, result: Any = None, error: dict | None = None) -> None:
            body = {"jsonrpc": "2.0", "id": call_id}
            body.update({"error": error} if error else {"result": result})
            await connection.send(json.dumps(body))

        await connection.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "event",
                    "params": {"type": "gateway.ready", "payload": {"version": "test"}},
                }
            )  # fmt: skip
        )
        tasks = set()
        async for raw in connection:
            try:
                call = json.loads(raw)
            except ValueError:
                await answer(None, error={"code": -32700, "message": "parse error"})
                continue
            method, params, call_id = call.get("method"), call.get("params") or {}, call.get("id")
            if method == "ping":
                await answer(call_id, {"pong": True})
            elif method == "session.create":
                session = uuid.uuid4().hex[:8]
                sessions[session] = {"seq": 0, "busy": False}
                await answer(call_id, {"session_id": session, "info": params})
            elif method == "prompt.submit":
                turn = sessions.get(params.get("session_id"))
                if turn is None:
                    await answer(call_id, error={"code": 4004, "message": "no such session"})
                elif turn["busy"]:
                    await answer(call_id, error={"code": 4009, "message": "session busy"})
                else:
                    turn["busy"] = True
                    info.prompts += 1
                    await answer(call_id, {"status": "streaming"})
                    task = asyncio.create_task(
                        stream(send_event, params["session_id"], params["text"], info.prompts, turn)
                    )
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            else:
                await answer(call_id, error={"code": -32601, "message": "method not found"})

    with _ws_server(handler, "/api/status", {"version": "test", "gateway": "ready"}) as state:
        base = f"127.0.0.1:{state['port']}"
        info.url = f"ws://{base}/api/ws?token={token}"
        info.health_url = f"http://{base}/api/status"
        yield info


# --- agent-zero-style Socket.IO with HTTP send ------------------------------------------------
@contextmanager
def agent_zero_server(faults: Faults | None = None) -> Iterator[ServerInfo]:
    """PROTOCOLS.md family 2 on python-socketio's AsyncServer under uvicorn: CSRF token and
    cookie, same-origin check, auth `{csrf_token, handlers}`, `POST /api/message_async`,
    `state_request` then `state_push` snapshots with `seq`, done when the context stops
    running; GET /api/health. A swallowed task exception leaves the context running (the
    chat silently stops). Yields a ServerInfo (url ws://HOST:PORT)."""
    import socketio
    import uvicorn

    faults = faults or Faults()
    info = ServerInfo("", "")
    runtime_id = uuid.uuid4().hex[:6]
    tokens: set[str] = set()
    contexts: dict[str, dict] = {}
    subscribers: dict[str, dict[str, int]] = {}  # context -> {sid: seq}
    sio = socketio.AsyncServer(async_mode="asgi")
    background: set[asyncio.Task] = set()

    def snapshot(context: str) -> dict:
        ctx = contexts[context]
        return {
            "contexts": [{"id": context, "running": ctx["running"]}],
            "logs": ctx["logs"],
            "log_progress_active": ctx["running"],
        }

    async def push(context: str, skip: bool = False) -> None:
        for sid, seq in list(subscribers.get(context, {}).items()):
            seq += 2 if skip else 1
            subscribers[context][sid] = seq
            data = {"runtime_epoch": runtime_id, "seq": seq, "snapshot": snapshot(context)}
            await sio.emit("state_push", {"data": data}, to=sid, namespace="/ws")

    async def run_agent(context: str, text: str, message_id: str) -> None:
        ctx = contexts[context]
        info.prompts += 1
        n = info.prompts
        ctx["logs"].append({"no": len(ctx["logs"]), "id": message_id, "type": "user",
                            "heading": "User message", "content": text})  # fmt: skip
        ctx["running"] = True
        await push(context)
        item = {"no": len(ctx["logs"]), "id": uuid.uuid4().hex[:8], "type": "response",
                "heading": "Response", "content": ""}  # fmt: skip
        ctx["logs"].append(item)
        words = reply_words(text, faults.tokens)
        try:
            for i, word in enumerate(words):
                if faults.hits(faults.swallow_every, n) and i == len(words) // 2:
                    raise RuntimeError("tool crashed")  # swallowed below, like the real bug
                item["content"] += word + " "
                await push(context, skip=faults.hits(faults.seq_skip_every, n) and i == 2)
                await asyncio.sleep(faults.token_interval)
        except RuntimeError:
            return  # the context stays "running" forever
        if faults.hits(faults.error_every, n):
            ctx["logs"].append({"no": len(ctx["logs"]), "id": "e", "type": "error",
                                "heading": "Error", "content": "LLM call failed"})  # fmt: skip
        ctx["running"] = False
        info.replies += not faults.hits(faults.error_every, n)
        await push(context)

    @sio.on("connect", namespace="/ws")
    async def on_connect(sid: str, environ: dict, auth: Any) -> bool:
        cookies = dict(
            part.strip().split("=", 1)
            for part in environ.get("HTTP_COOKIE", "").split(";")
            if "=" in part
        )
        token = (auth or {}).get("csrf_token")
        return (
            token in tokens
            and cookies.get(f"csrf_token_{runtime_id}") == token
            and "ws_webui" in (auth or {}).get("handlers", [])
        )

    @sio.on("state_request", namespace="/ws")
    async def on_state_request(sid: str, data: dict) -> dict:
        context = data.get("context")
        subscribers.setdefault(context, {})[sid] = 0
        if context in contexts:
            task = asyncio.create_task(push(context))
            background.add(task)
            task.add_done_callback(background.discard)
        return {"runtime_epoch": runtime_id, "seq_base": 0}

    @sio.on("disconnect", namespace="/ws")
    async def on_disconnect(sid: str, reason: Any = None) -> None:
        for subs in subscribers.values():
            subs.pop(sid, None)

    async def http_app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        extra: list[tuple[bytes, bytes]] = []
        status, body = 404, {"error": "not found"}
        if path == "/api/csrf_token":
            token = uuid.uuid4().hex
            tokens.add(token)
            status, body = 200, {"ok": True, "token": token, "runtime_id": runtime_id}
            extra.append(
                (b"set-cookie", f"session_{runtime_id}={uuid.uuid4().hex}; Path=/".encode())
            )
        elif path == "/api/health":
            status, body = 200, {"gitinfo": {"version": "test"}, "error": None}
        elif path == "/api/message_async" and method == "POST":
            raw = await _asgi_body(receive)
            if headers.get("x-csrf-token") not in tokens:
                status, body = 403, {"error": "CSRF token missing or invalid"}
            else:
                request = json.loads(raw)
                context = request.get("context") or uuid.uuid4().hex[:8]
                contexts.setdefault(context, {"logs": [], "running": False})
                task = asyncio.create_task(
                    run_agent(context, request["text"], request.get("message_id", ""))
                )
                background.add(task)
                task.add_done_callback(background.discard)
                status, body = 200, {"message": "Message received.", "context": context}
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    app = socketio.ASGIApp(sio, other_asgi_app=http_app, socketio_path="socket.io")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="error", lifespan="off", ws="wsproto")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    info.url = f"ws://127.0.0.1:{port}"
    info.health_url = f"http://127.0.0.1:{port}/api/health"
    try:
        yield info
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# --- OpenAI-compatible chat completions (vLLM style: an ASGI app on uvicorn) ------------
@contextmanager
def openai_server(
    faults: Faults | None = None, keep_alive_s: float = 5.0, model: str = "test-model"
) -> Iterator[ServerInfo]:
    """`POST /v1/chat/completions` streamed as SSE the way vLLM and llama.cpp do (a role
    chunk, content chunks, a finish_reason chunk, a usage chunk when asked, `data: [DONE]`)
    by uvicorn, which closes idle keep-alive connections after `keep_alive_s`; `GET
    /health`. The reply echoes the last user message word by word. Faults as in `Faults`
    (swallow: the stream stops with nothing more, until the client goes away)."""
    faults = faults or Faults()
    info = ServerInfo(url="", health_url="")
    previous: list[str] = []

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["path"] == "/health":
            await _json_answer(send, 200, {"status": "ok", "replies": info.replies})
            return
        if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
            await _json_answer(send, 404, {"error": {"message": "not found", "type": "nf"}})
            return
        request = json.loads(await _asgi_body(receive))
        info.prompts += 1
        n = info.prompts
        info.extra.setdefault("requests", []).append(request)
        prompt = request["messages"][-1]["content"]
        if faults.answer_previous:
            previous.append(prompt)
            prompt = previous[-2] if len(previous) > 1 else "(nothing before)"
        if faults.hits(faults.http_error_every, n):
            await _json_answer(send, 500, {"error": {"message": "model overloaded", "code": 500}})
            return

        def chunk(delta: dict | None, finish: str | None = None) -> bytes:
            if delta is None:
                return b"data: {not json\n\n"
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            event = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk",
                     "model": model, "choices": [choice]}  # fmt: skip
            return f"data: {json.dumps(event)}\n\n".encode()

        emit = await _stream(send, b"text/event-stream; charset=utf-8")
        await emit(chunk({"role": "assistant", "content": ""}))

        def token(word: str | None) -> bytes:
            return chunk(None if word is None else {"content": word + " "})

        error = b'data: {"error": {"message": "engine died", "code": 500}}\n\n'
        if not await _faulty_reply(faults, n, prompt, emit, receive, token, error):
            await send({"type": "http.response.body", "body": b""})
            return
        await emit(chunk({}, "stop"))
        asked = (request.get("stream_options") or {}).get("include_usage")
        if asked and not faults.ignore_usage:
            made, given = len(reply_words(prompt, faults.tokens)), len(prompt.split())
            usage = {"prompt_tokens": given, "completion_tokens": made,
                     "total_tokens": given + made}  # fmt: skip
            await emit(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        if not faults.omit_done:
            await emit(b"data: [DONE]\n\n")
        if faults.hits(faults.frame_after_done_every, n):
            await emit(chunk({"content": "late "}))
        if faults.hits(faults.duplicate_done_every, n):
            await emit(b"data: [DONE]\n\n")
        info.replies += 1
        await send({"type": "http.response.body", "body": b""})

    with _uvicorn(app, keep_alive_s) as port:
        info.url, info.health_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/health"
        yield info


@contextmanager
def _uvicorn(app: Callable, keep_alive_s: float = 5.0) -> Iterator[int]:
    """Serve an ASGI app with uvicorn on a free loopback port, in a thread; yields the port.
    uvicorn closes keep-alive connections idle for `keep_alive_s`."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        log_level="critical",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=keep_alive_s,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


async def _json_answer(send: Callable, status: int, body: dict) -> None:
    """A whole JSON response from an ASGI app."""
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})


async def _stream(send: Callable, content_type: bytes) -> Callable:
    """Start a streamed ASGI response; returns the function that sends one part."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type)]})  # fmt: skip

    async def emit(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    return emit


async def _faulty_reply(
    faults: Faults,
    n: int,
    prompt: str,
    emit: Callable,
    receive: Callable,
    token: Callable,
    error: bytes,
) -> bool:
    """Stream the reply's words (`words_per_frame` a frame) with the faults of reply `n`;
    False: it ended early (an error sent, or swallowed until the client went away)."""
    words, k = reply_words(prompt, faults.tokens), max(1, faults.words_per_frame)
    words = [" ".join(words[i : i + k]) for i in range(0, len(words), k)]
    for index, word in enumerate(words):
        if index == len(words) // 2:
            if faults.hits(faults.truncate_every, n):
                raise ConnectionAbortedError("test fault: the stream breaks off")
            if faults.hits(faults.swallow_every, n):
                while (await receive())["type"] != "http.disconnect":
                    pass
                return False
            if faults.hits(faults.non_json_every, n):
                await emit(token(None))
            if faults.hits(faults.error_every, n):
                await emit(error)
                return False
        await emit(token(word))
        await asyncio.sleep(faults.token_interval)
    return True


# --- Trinity-style agent server: POST /api/chat, SSE on /api/executions/{id}/stream --
@contextmanager
def trinity_server(faults: Faults | None = None, keep_alive_s: float = 5.0) -> Iterator[ServerInfo]:
    """An agent server in the style of Trinity's: `POST /api/chat` takes one global lock
    and answers `{"execution_id"}`; `GET /api/executions/{id}/stream` streams SSE
    `{"type": "token", "content"}` events ending with `{"type": "stream_end"}`;
    `GET /health` with `diagnostics` (thread_count, running_executions, ...)."""
    faults = faults or Faults()
    info = ServerInfo(url="", health_url="")
    executions: dict[str, str] = {}
    previous: list[str] = []

    def sse(event: dict | None) -> bytes:
        return (
            b"data: {not json\n\n" if event is None else f"data: {json.dumps(event)}\n\n".encode()
        )

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/health":
            diagnostics = {"thread_count": threading.active_count(),
                           "running_executions": len(executions)}  # fmt: skip
            await _json_answer(send, 200, {"status": "healthy", "diagnostics": diagnostics})
        elif path == "/api/chat" and method == "POST":
            request = json.loads(await _asgi_body(receive))
            info.prompts += 1
            prompt = request["message"]
            if faults.answer_previous:
                previous.append(prompt)
                prompt = previous[-2] if len(previous) > 1 else "(nothing before)"
            if faults.hits(faults.http_error_every, info.prompts):
                await _json_answer(send, 503, {"detail": "agent busy"})
                return
            execution = f"exec-{info.prompts}"
            executions[execution] = prompt
            await _json_answer(send, 200, {"execution_id": execution, "status": "started"})
        elif path.startswith("/api/executions/") and path.endswith("/stream"):
            execution = path.split("/")[3]
            prompt = executions.pop(execution, None)
            if prompt is None:
                await _json_answer(send, 404, {"detail": f"no execution {execution}"})
                return
            n = int(execution.split("-")[1])
            emit = await _stream(send, b"text/event-stream")
            await emit(b": connected\n\n")

            def token(word: str | None) -> bytes:
                return sse(None if word is None else {"type": "token", "content": word + " "})

            error = sse({"type": "error", "error": "tool crashed"})
            if await _faulty_reply(faults, n, prompt, emit, receive, token, error):
                await emit(sse({"type": "stream_end"}))
                if faults.hits(faults.frame_after_done_every, n):
                    await emit(sse({"type": "token", "content": "late "}))
                if faults.hits(faults.duplicate_done_every, n):
                    await emit(sse({"type": "stream_end"}))
                info.replies += 1
            await send({"type": "http.response.body", "body": b""})
        else:
            await _json_answer(send, 404, {"detail": "not found"})

    with _uvicorn(app, keep_alive_s) as port:
        info.url, info.health_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/health"
        yield info


# --- agentex-style JSON-RPC message/send answering NDJSON -----------------------------
#: What an agentex reply can open with besides its text (agentex_server `reasoning`).
REASONING = ("", "delta", "full", "interleaved")


@contextmanager
def agentex_server(
    faults: Faults | None = None, keep_alive_s: float = 5.0, reasoning: str = ""
) -> Iterator[ServerInfo]:
    """JSON-RPC `message/send` with `stream: true` on `POST /agents/name/NAME/rpc` (as
    agentex; `POST /api` too), answered as JSON lines `{"jsonrpc", "id", "result":
    {"type": start|delta|full|done, "index", ...}, "error": null}` (params.content a
    string or agentex's `{type: text, author, content}`; text deltas `{"type": "text",
    "text_delta"}`); `GET /health`. The url is `http://HOST:PORT/agents/name/soak-agent`.

    `reasoning`: the text comes at index 1 after a reasoning message at index 0, streamed
    (`"delta"`: start, reasoning_content deltas, done), sent whole (`"full"`), or left
    open until the text is over (`"interleaved"`: its done comes just before the
    text's). Faults after done (a late delta, a second done) hit the reasoning message
    when it was closed first, else the text."""
    assert reasoning in REASONING, reasoning
    faults = faults or Faults()
    info = ServerInfo(url="", health_url="")
    previous: list[str] = []

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        path = scope["path"]
        if path == "/health":
            await _json_answer(send, 200, {"status": "ok"})
            return
        if not (path == "/api" or path.endswith("/rpc")) or scope["method"] != "POST":
            await _json_answer(send, 404, {"detail": "not found"})
            return
        request = json.loads(await _asgi_body(receive))
        info.prompts += 1
        n, rpc_id = info.prompts, request.get("id")
        content = request["params"]["content"]
        prompt = content["content"] if isinstance(content, dict) else content
        if faults.answer_previous:
            previous.append(prompt)
            prompt = previous[-2] if len(previous) > 1 else "(nothing before)"
        if faults.hits(faults.http_error_every, n):
            failed = {"code": -32603, "message": "worker died"}
            await _json_answer(send, 500, {"jsonrpc": "2.0", "id": rpc_id, "error": failed})
            return

        def line(result: dict | None) -> bytes:
            if result is None:
                return b"{not json\n"
            body = {"jsonrpc": "2.0", "id": rpc_id, "result": result, "error": None}
            return (json.dumps(body) + "\n").encode()

        async def after_done(index: int) -> None:
            """The faults of agentex's stream ticker: a delta after done, a second done."""
            if faults.hits(faults.frame_after_done_every, n):
                delta = {"type": "text", "text_delta": "late "}
                await emit(line({"type": "delta", "index": index, "delta": delta}))
            if faults.hits(faults.duplicate_done_every, n):
                await emit(line({"type": "done", "index": index}))

        emit = await _stream(send, b"application/x-ndjson")
        text_index = 1 if reasoning else 0
        if reasoning:
            thought = {"type": "reasoning", "author": "agent", "summary": [], "content": []}
            if reasoning == "full":
                whole = {**thought, "content": ["The user wants the code back."]}
                await emit(line({"type": "full", "index": 0, "content": whole}))
            else:
                await emit(line({"type": "start", "index": 0, "content": thought}))
                for word in ("The", "user", "wants", "the", "code."):
                    delta = {"type": "reasoning_content", "content_index": 0,
                             "content_delta": word + " "}  # fmt: skip
                    await emit(line({"type": "delta", "index": 0, "delta": delta}))
                    await asyncio.sleep(faults.token_interval)
            if reasoning == "delta":
                await emit(line({"type": "done", "index": 0}))
            if reasoning != "interleaved":
                await after_done(0)
        text = {"type": "text", "author": "agent", "content": ""}
        await emit(line({"type": "start", "index": text_index, "content": text}))

        def token(word: str | None) -> bytes:
            delta = {"type": "text", "text_delta": f"{word} "}
            return line(None if word is None else {"type": "delta", "index": text_index,
                                                   "delta": delta})  # fmt: skip

        error = (
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": rpc_id,
                    "result": None,
                    "error": {"code": -32603, "message": "stream failed"},
                }
            )
            + "\n"
        ).encode()
        if await _faulty_reply(faults, n, prompt, emit, receive, token, error):
            if reasoning == "interleaved":
                await emit(line({"type": "done", "index": 0}))
            await emit(line({"type": "done", "index": text_index}))
            if reasoning in ("", "interleaved"):
                await after_done(text_index)
            info.replies += 1
        await send({"type": "http.response.body", "body": b""})

    with _uvicorn(app, keep_alive_s) as port:
        base = f"http://127.0.0.1:{port}"
        info.url, info.health_url = f"{base}/agents/name/soak-agent", f"{base}/health"
        yield info


def chat(
    url: str,
    protocol: dict[str, Any] | None = None,
    prompts: int = 1,
    *,
    timeout: float = 3.0,
    linger: float = 0.2,
    between: Callable[..., Any] | None = None,
) -> list:
    """Run `prompts` turns on one connection with the adapter of `protocol` (a [protocol]
    table, defaults filled in); each prompt carries a fresh nonce, checked when the table
    says require_nonce. `between(channel)` runs between turns. Returns the TurnResults."""
    from soak.profile import profile_from_mapping
    from soak.protocols import adapter_for
    from soak.protocols.turn import Channel, run_turn

    table = profile_from_mapping({"protocol": protocol or {}}).protocol
    channel = Channel(adapter_for(table).connect(url, timeout=5))
    results = []
    try:
        for n in range(prompts):
            if n and between:
                between(channel)
            nonce = uuid.uuid4().hex[:8]
            results.append(
                run_turn(
                    channel,
                    f"turn {n} nonce {nonce}",
                    f"r{n}",
                    first_token_timeout=timeout,
                    reply_timeout=timeout,
                    linger=linger,
                    nonce=nonce if table["require_nonce"] else None,
                )  # fmt: skip
            )
    finally:
        channel.conversation.close()
    return results
