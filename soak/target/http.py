"""The built-in target's HTTP side: `/health` and three streaming chat protocols on h11.

Every request that is not a WebSocket upgrade lands here (see `server.RoutedConnection`), on
keep-alive HTTP/1.1 connections. Replies are the same words, streamed at the same pace and with
the same faults as the WebSocket chat (`server.stream_reply`); a stalled reply leaves its
response open and silent until the client goes away.

Endpoints
---------
- `GET /health`: the diagnostics JSON.
- `POST /v1/chat/completions` (OpenAI-compatible, as vLLM or llama.cpp's server): the last
  user message is the prompt; `stream: true` answers SSE chunks (a role chunk, one content
  chunk per word, a `finish_reason` chunk, a usage chunk if `stream_options.include_usage`,
  then `data: [DONE]`), otherwise one `chat.completion` JSON. `max_tokens` cuts the reply
  (`finish_reason: "length"`).
- `POST /api/chat` `{"message"}` -> `{"execution_id", "status": "started"}`, then
  `GET /api/executions/{id}/stream` streams SSE `{"type": "token", "content"}` events ending
  with `{"type": "stream_end"}` (Trinity style). Executions never streamed expire after
  `EXECUTION_TTL_S`.
- `POST /rpc` JSON-RPC 2.0 `message/send` with `params.content` (text, or `{"content": text}`)
  and `params.stream: true`: NDJSON lines `{"jsonrpc", "id", "result": {"type": "start" |
  "delta" | "done", "index": 0, ...}}`, deltas `{"type": "text", "text_delta"}`, then the
  body ends (agentex style). Without `stream` one JSON-RPC response with the whole text.
"""

from __future__ import annotations

import asyncio
import http
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11

from soak.target.replies import ChatMemory, SimulatedFault, TargetState, stream_reply

MAX_BODY_BYTES = 1 << 20
EXECUTION_TTL_S = 300.0
SSE = "text/event-stream; charset=utf-8"
NDJSON = "application/x-ndjson"


class HttpError(Exception):
    """A request answered with an error status and a JSON body (before any streaming)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def _status(status: int, headers: list[tuple[str, str]]) -> h11.Response:
    """A response head with the standard reason phrase ("404 Not Found")."""
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return h11.Response(status_code=status, headers=headers, reason=reason)


class Response:
    """The response being written on one connection: status line once, then body chunks."""

    def __init__(self, connection: HttpConnection) -> None:
        self.connection = connection
        self.started = False

    async def start(self, status: int, content_type: str) -> None:
        """Send the status line and headers of a streamed (chunked) response."""
        headers = [("content-type", content_type), ("cache-control", "no-cache")]
        await self.connection.send(_status(status, headers))
        self.started = True

    async def send(self, data: bytes) -> None:
        """Send one body chunk, waiting while the client reads slower than we write."""
        await self.connection.send(h11.Data(data=data))

    async def end(self) -> None:
        """End the body; the connection is then free for the next request."""
        await self.connection.send(h11.EndOfMessage())

    async def json(self, status: int, body: dict[str, Any]) -> None:
        """A whole JSON response with a content-length."""
        data = json.dumps(body).encode()
        headers = [("content-type", "application/json"), ("content-length", str(len(data)))]
        await self.connection.send(_status(status, headers))
        self.started = True
        await self.send(data)
        await self.end()


Handler = Callable[["Endpoints", h11.Request, bytes, Response], Awaitable[None]]


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: requests answered one after the other."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self.transport: asyncio.Transport | None = None
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.worker: asyncio.Task[None] | None = None
        self.memory = ChatMemory()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.endpoints.state.connections += 1
        self.endpoints.open.add(self)
        self.worker = asyncio.get_running_loop().create_task(self.serve())

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self.h11.receive_data(data)
        self.readable.set()

    def eof_received(self) -> None:  # noqa: D102
        self.h11.receive_data(b"")
        self.readable.set()
        # Returning None closes the transport: a client that hangs up during a (stalled)
        # reply is gone, and its reply is cancelled as when the connection resets.

    def pause_writing(self) -> None:  # noqa: D102
        self.writable.clear()

    def resume_writing(self) -> None:  # noqa: D102
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.endpoints.state.connections -= 1
        self.endpoints.open.discard(self)
        self.writable.set()
        if self.worker is not None:
            self.worker.cancel()  # a client gone mid-reply ends that reply
        if not self.closed.done():
            self.closed.set_result(None)

    async def send(self, event: h11.Event) -> None:
        """Write one h11 event, then wait until the transport's buffer drains if it is full."""
        assert self.transport is not None
        if self.transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        data = self.h11.send(event)
        if data:
            self.transport.write(data)
        await self.writable.wait()

    async def next_event(self) -> h11.Event:
        """The next request-side event, reading from the socket as needed."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.readable.clear()
            await self.readable.wait()

    async def read_body(self) -> bytes:
        """The request body (at most `MAX_BODY_BYTES`)."""
        body = bytearray()
        while not isinstance(event := await self.next_event(), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise HttpError(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the client closed the connection mid-request")
        return bytes(body)

    async def serve(self) -> None:
        """Answer requests until either side closes the connection."""
        assert self.transport is not None
        try:
            while True:
                try:
                    event = await self.next_event()
                except h11.RemoteProtocolError as error:
                    await self.answer_bad_request(error)
                    break
                if not isinstance(event, h11.Request):
                    break  # ConnectionClosed, or a client that breaks HTTP/1.1
                response = Response(self)
                try:
                    body = await self.read_body()
                    await self.endpoints.dispatch(event, body, response)
                except HttpError as error:
                    if response.started:
                        break
                    await response.json(error.status, error.body)
                if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                    break
                self.h11.start_next_cycle()
        except (ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            self.transport.close()

    async def answer_bad_request(self, error: h11.RemoteProtocolError) -> None:
        """Answer a request h11 cannot parse with its status (400, 431, ...), if still possible."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = json.dumps({"error": str(error)}).encode()
            headers = [("content-type", "application/json"), ("connection", "close")]
            try:
                status = error.error_status_hint
                await self.send(_status(status, headers))
                await self.send(h11.Data(data=body))
                await self.send(h11.EndOfMessage())
            except (ConnectionError, h11.LocalProtocolError):
                pass


def _json_body(body: bytes, fail: Callable[[str], HttpError]) -> dict[str, Any]:
    """The request body as a JSON object, or `fail(reason)` (the endpoint's error shape)."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise fail(f"the body is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise fail("the body must be a JSON object")
    return value


def _detail(message: str) -> HttpError:
    """A 400 in FastAPI's shape, `{"detail"}` (Trinity)."""
    return HttpError(400, {"detail": message})


def _sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event carrying `data` (JSON-encoded unless already a string)."""
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}\n\n".encode()


def _openai_error(message: str, param: str | None = None, status: int = 400) -> HttpError:
    """An error in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`."""
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return HttpError(status, {"error": error})


def _last_user_text(request: dict[str, Any]) -> str:
    """The text of the last user message of a chat-completions request."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _openai_error("'messages' must be a non-empty list", "messages")
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # content parts: [{"type": "text", "text"}]
                texts = [p.get("text", "") for p in content if isinstance(p, dict)]
                return " ".join(t for t in texts if isinstance(t, str))
            raise _openai_error("a user message's 'content' must be text", "messages")
    raise _openai_error("'messages' has no user message", "messages")


@dataclass
class Execution:
    """A Trinity-style execution started by `POST /api/chat`, waiting to be streamed."""

    created: float  # monotonic seconds
    prompt: str
    words: list[str]


class Endpoints:
    """The HTTP routes of one target process, sharing its state with the WebSocket chat."""

    def __init__(self, state: TargetState) -> None:
        self.state = state
        self.executions: dict[str, Execution] = {}
        self.open: set[HttpConnection] = set()
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/health"): Endpoints.health,
            ("POST", "/v1/chat/completions"): Endpoints.chat_completions,
            ("POST", "/api/chat"): Endpoints.start_execution,
            ("POST", "/rpc"): Endpoints.json_rpc,
        }

    def connection(self) -> HttpConnection:
        """A protocol for one new HTTP connection."""
        return HttpConnection(self)

    def close_all(self) -> None:
        """Drop every open HTTP connection (the target is stopping)."""
        for connection in list(self.open):
            if connection.transport is not None:
                connection.transport.abort()

    async def dispatch(self, request: h11.Request, body: bytes, response: Response) -> None:
        """Answer `request` by method and path (404 / 405 otherwise)."""
        method = request.method.decode()
        path = request.target.decode().split("?", 1)[0]
        handler = self.routes.get((method, path))
        if handler is None and path.startswith("/api/executions/") and path.endswith("/stream"):
            handler = Endpoints.stream_execution if method == "GET" else None
            if handler is None:
                raise HttpError(405, {"error": f"{method} not allowed on {path}"})
        if handler is None:
            if any(p == path for _, p in self.routes):
                raise HttpError(405, {"error": f"{method} not allowed on {path}"})
            if path == "/ws":
                raise HttpError(426, {"error": "/ws takes a WebSocket upgrade"})
            raise HttpError(404, {"error": "not found"})
        await handler(self, request, body, response)

    async def health(self, request: h11.Request, body: bytes, response: Response) -> None:
        """`GET /health`."""
        await response.json(200, self.state.health())

    async def streamed(
        self, words: list[str], response: Response, frame: Callable[[str], bytes], context: dict
    ) -> None:
        """Stream `words` as body chunks made by `frame`.

        A stalled reply keeps its response open and silent: the swallowed exception of the
        modelled bug, seen from the client as a stream that never ends.
        """

        async def send_token(token: str) -> None:
            await response.send(frame(token))

        try:
            await stream_reply(self.state, words, send_token, context)
        except SimulatedFault:
            await asyncio.Event().wait()  # until the client goes away or the target stops

    async def chat_completions(self, request: h11.Request, body: bytes, response: Response) -> None:
        """`POST /v1/chat/completions`, streamed (SSE) or whole."""
        query = _json_body(body, _openai_error)
        prompt = _last_user_text(query)
        max_tokens = query.get("max_tokens", query.get("max_completion_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise _openai_error("'max_tokens' must be a positive integer", "max_tokens")
        words = self.state.reply_words(prompt, response.connection.memory)
        finish = "length" if max_tokens and len(words) > max_tokens else "stop"
        words = words[:max_tokens] if max_tokens else words
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        model = query.get("model") or "soak-target"
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(words),
            "total_tokens": len(prompt.split()) + len(words),
        }
        head = {"id": completion_id, "created": int(time.time()), "model": model}
        context = {"id": completion_id, "prompt": prompt}
        if not query.get("stream"):
            await self.streamed(words, _Discard(), lambda token: b"", context)
            message = {"role": "assistant", "content": " ".join(words) + " "}
            choice = {"index": 0, "message": message, "finish_reason": finish}
            whole = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            await response.json(200, whole)
            return

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return _sse({**head, "object": "chat.completion.chunk", "choices": [choice]})

        await response.start(200, SSE)
        await response.send(chunk({"role": "assistant", "content": ""}))
        await self.streamed(words, response, lambda token: chunk({"content": token}), context)
        await response.send(chunk({}, finish))
        options = query.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage_chunk = {**head, "object": "chat.completion.chunk", "choices": []}
            await response.send(_sse({**usage_chunk, "usage": usage}))
        await response.send(_sse("[DONE]"))
        await response.end()

    async def start_execution(self, request: h11.Request, body: bytes, response: Response) -> None:
        """`POST /api/chat`: register an execution to be streamed."""
        message = _json_body(body, _detail).get("message")
        if not isinstance(message, str):
            raise _detail("field 'message' must be a string")
        now = time.monotonic()
        for key, execution in list(self.executions.items()):
            if now - execution.created > EXECUTION_TTL_S:
                del self.executions[key]
        execution_id = f"exec-{uuid.uuid4().hex[:16]}"
        words = self.state.reply_words(message, response.connection.memory)
        self.executions[execution_id] = Execution(now, message, words)
        await response.json(200, {"execution_id": execution_id, "status": "started"})

    async def stream_execution(self, request: h11.Request, body: bytes, response: Response) -> None:
        """`GET /api/executions/{id}/stream`: the execution's reply as SSE, then stream_end."""
        execution_id = request.target.decode().split("?", 1)[0].split("/")[3]
        execution = self.executions.pop(execution_id, None)
        if execution is None:
            raise HttpError(404, {"detail": f"no execution {execution_id}"})
        await response.start(200, SSE)
        event = {"execution_id": execution_id}
        context = {**event, "prompt": execution.prompt}

        def frame(token: str) -> bytes:
            return _sse({**event, "type": "token", "content": token})

        await self.streamed(execution.words, response, frame, context)
        end = {**event, "type": "stream_end", "tokens": len(execution.words)}
        await response.send(_sse(end))
        await response.end()

    async def json_rpc(self, request: h11.Request, body: bytes, response: Response) -> None:
        """`POST /rpc`: JSON-RPC `message/send`, streamed as JSON lines or answered whole."""
        rpc_id = None

        def failed(code: int, message: str) -> HttpError:
            error = {"code": code, "message": message}
            return HttpError(200, {"jsonrpc": "2.0", "id": rpc_id, "error": error})

        call = _json_body(body, lambda reason: failed(-32700, reason))
        rpc_id, params = call.get("id"), call.get("params")

        if call.get("method") != "message/send":
            raise failed(-32601, f"unknown method {call.get('method')!r}")
        content = params.get("content") if isinstance(params, dict) else None
        if isinstance(content, dict):
            content = content.get("content")
        if not isinstance(content, str):
            raise failed(-32602, "params.content must be text or {'content': text}")
        words = self.state.reply_words(content, response.connection.memory)
        context = {"id": rpc_id, "prompt": content}

        def line(result: dict[str, Any]) -> bytes:
            return (json.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result}) + "\n").encode()

        if not params.get("stream"):
            await self.streamed(words, _Discard(), lambda token: b"", context)
            text = {"type": "text", "author": "agent", "content": " ".join(words) + " "}
            await response.json(200, {"jsonrpc": "2.0", "id": rpc_id, "result": text})
            return

        def delta(token: str) -> bytes:
            text_delta = {"type": "text", "text_delta": token}
            return line({"type": "delta", "index": 0, "delta": text_delta})

        await response.start(200, NDJSON)
        await response.send(line({"type": "start", "index": 0, "content": {"type": "text"}}))
        await self.streamed(words, response, delta, context)
        await response.send(line({"type": "done", "index": 0}))
        await response.end()


class _Discard(Response):
    """A response whose chunks go nowhere: a whole (unstreamed) reply produced at stream pace."""

    def __init__(self) -> None:
        self.started = False

    async def send(self, data: bytes) -> None:  # noqa: D102
        pass
