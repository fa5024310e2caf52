"""`sse` and `ndjson`: agent servers that stream a turn's events over HTTP, described
in the profile the way json-events describes WebSocket frames.

A turn is one HTTP request (`start`: method, path, JSON body template, headers) whose
response streams JSON events, as server-sent events (`sse`: each event's data) or as
JSON lines (`ndjson`); matchers say which events are tokens, the terminal event and
errors (`token`, `done`, `error`, as in json-events). Some servers answer the request
with an id and stream elsewhere: with `stream_path` ("/api/executions/{id}/stream")
soak reads the id at `id_path` of the answer and then GETs the stream, as Trinity's
agent server does (POST /api/chat, SSE on /api/executions/{id}/stream, ending with
`{"type": "stream_end"}`). agentex's JSON-RPC `message/send` with `stream: true`
answers JSON lines `{id, result: {type: start|delta|full|done, index}}` (`ndjson`,
request_id_path = "id").

The turn ends at the terminal event (`end = "done"`), or at the end of the response
body (`end = "body"`: a server whose streams simply end); a body that ends before
its terminal event is a disconnect (truncated). Events after the terminal one are
violations, as are events that name another request (`request_id_path`). An event
that is both a token and the terminal event (a last chunk with text) is both.

Several messages per reply (`index_path`): agentex streams one turn as several
messages, each numbered by `index` (a reasoning message at 0, the answer at 1, possibly
interleaved), each ending with its own `done` (or sent whole as one `full`, which the
profile's `done` matcher may also match); the response ends when the turn is over.
With `index_path`, a terminal event that carries an index closes that message only,
and the end of the body ends the turn once any indexed event came (messages still
open then are closed by the end, as agentex's server flushes them); a terminal event
without an index still ends the turn (`end = "done"`). Any event for a closed index
is a violation, as agentex's server drops such events itself: a second `done` is
`duplicate_done`, a delta (or anything else) `frame_after_done`. A `done` for an
index that never had an event is no violation (agentex accepts it: an empty message).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from soak.protocols.base import (
    DONE,
    ERROR,
    INVALID,
    OTHER,
    TOKEN,
    Adapter,
    ConnectionLost,
    Conversation,
    Frame,
    fill_placeholders,
)
from soak.protocols.httpchat import RAW_EXCERPT, Decoder, StreamedConversation
from soak.protocols.httpstream import HttpStream, LineDecoder, SseDecoder, SseEvent, Status
from soak.protocols.matchers import compile_matcher, match, optional_match
from soak.protocols.settings import Spec, headers, http_call, optional_string, string, string_list
from soak.protocols.turn import DUPLICATE_DONE, FRAME_AFTER_DONE, ViolationFrame
from soak.protocols.wsjson import lookup

#: Where a turn ends: at the terminal event, or at the end of the response body.
ENDS = ("done", "body")


def _start(value: Any) -> dict[str, Any]:
    """The request that starts a turn: {method, path, body (a JSON template), headers}."""
    return http_call(
        value, '{ method = "POST", path = "/api/chat", body = { message = "{prompt}" } }'
    )


def _stream_path(value: Any) -> str | None:
    if value is None:
        return None
    path = string(value)
    if not path.startswith("/") or "{id}" not in path:
        raise ValueError(
            f'expected a path with {{id}}, such as "/api/streams/{{id}}", got {path!r}'
        )
    return path


def _text_paths(value: Any) -> list[str]:
    """One path or a list of paths; the first one present in an event is its text."""
    return [string(value)] if isinstance(value, str) else string_list(value)


def _optional_path(value: Any) -> str | None:
    """A dotted JSON path into an event ("result.index"), or None."""
    if value is None:
        return None
    path = string(value)
    if not path or any(not part.strip() or part != part.strip() for part in path.split(".")):
        raise ValueError(
            f'expected a dotted path into an event, such as "result.index", got {path!r}'
        )
    return path


def _end(value: Any) -> str:
    text = string(value)
    if text not in ENDS:
        raise ValueError(f"expected one of {', '.join(ENDS)}, got {text!r}")
    return text


class HttpEventsConversation(StreamedConversation):
    """One chat; each turn a request whose response streams the profile's events."""

    def __init__(self, adapter: HttpEventsAdapter, url: str, timeout: float) -> None:
        self.adapter = adapter
        self.config = adapter.config
        parts = urlsplit(url)
        #: The target URL's path is a prefix of the profile's paths ("" for none).
        self.prefix = parts.path.rstrip("/")
        http = HttpStream(urlunsplit((*parts[:2], self.prefix or "/", parts.query, "")), timeout)
        http.headers.update(self.config["headers"])
        self.content_types = adapter.content_types
        #: With index_path: the message indexes of this turn seen, and those closed.
        self.indexes: set[Any] = set()
        self.closed: set[Any] = set()
        super().__init__(http, timeout)

    def new_decoder(self) -> Decoder:
        return self.adapter.decoder()

    def send_prompt(self, prompt: str, request_id: str) -> None:
        start = self.config["start"]
        values = {"prompt": prompt, "request_id": request_id, "session_id": self.session_id or ""}
        body = json.dumps(fill_placeholders(start["body"], values)).encode()
        self.begin(request_id)
        self.indexes, self.closed = set(), set()
        accept = self.adapter.accept
        request_headers = {"Content-Type": "application/json", **start["headers"]}
        if not self.config["stream_path"]:
            request_headers["Accept"] = accept
        self.http.request(start["method"], body, request_headers, self.prefix + start["path"])
        if self.config["stream_path"]:
            stream_id = self._started()
            if stream_id is not None:
                path = self.config["stream_path"].replace("{id}", stream_id)
                self.http.request("GET", b"", {"Accept": accept}, self.prefix + path)

    def _started(self) -> str | None:
        """The stream id of the start request's JSON answer (None: its error is queued)."""
        part = self.http.read(self.timeout)
        if not isinstance(part, Status):
            self.http.close()
            raise ConnectionLost(None, f"no answer to {self.config['start']['path']} in time")
        if not 200 <= part.code < 300:
            self.ready.append(self.refused(part))
            return None
        answer = self.http.read_body(self.timeout, limit=1 << 16).decode("utf-8", "replace")
        try:
            found = lookup(json.loads(answer), self.config["id_path"])
        except ValueError:
            found = None
        if found is None:
            self.ready.append(
                Frame(ERROR, self.request_id, f"{self.config['start']['path']} answered no "
                      f"{self.config['id_path']!r}: {answer[:RAW_EXCERPT]!r}", answer[:RAW_EXCERPT])
            )  # fmt: skip
            return None
        return str(found)

    def frames(self, item: SseEvent | str) -> list[Frame]:
        raw = item.data if isinstance(item, SseEvent) else item
        excerpt = raw[:RAW_EXCERPT]
        try:
            data = json.loads(raw)
        except ValueError:
            return [Frame(INVALID, self.request_id, f"not JSON: {raw[:80]!r}", excerpt)]
        adapter, config = self.adapter, self.config
        given = lookup(data, config["request_id_path"])
        request_id = self.request_id if given is None else str(given)
        if adapter.is_error(data):
            text = lookup(data, config["error_text_path"]) or excerpt
            return [Frame(ERROR, request_id, str(text)[:RAW_EXCERPT], excerpt)]
        token, done = adapter.is_token(data), adapter.is_done(data)
        index = lookup(data, config["index_path"])
        if index is not None and request_id == self.request_id:  # another's: the turn's call
            index = index if isinstance(index, int | str) else json.dumps(index)
            if index in self.closed:
                return [self._after_close(index, done and not token, request_id, excerpt)]
            self.indexes.add(index)
            if done:
                self.closed.add(index)
        frames = []
        if token:
            texts = (lookup(data, path) for path in config["token_text_path"])
            text = next((t for t in texts if t is not None), "")
            frames.append(Frame(TOKEN, request_id, str(text), excerpt))
        if done and index is None and config["end"] == "done":
            self.done = True
            frames.append(Frame(DONE, request_id, "", excerpt))
        elif not frames:  # a message's start or done, a status event: not a reply frame
            frames.append(Frame(OTHER, None if index is None else request_id, "", excerpt))
        return frames

    def _after_close(self, index: Any, done: bool, request_id: str | None, raw: str) -> Frame:
        """An event for a message index its terminal event already closed: a violation."""
        if done:
            text = f"a second terminal event for message index {index!r}"
            return ViolationFrame(INVALID, request_id, text, raw, None, DUPLICATE_DONE)
        text = f"an event for message index {index!r} after its terminal event"
        return ViolationFrame(INVALID, request_id, text, raw, None, FRAME_AFTER_DONE)

    def ended(self) -> Frame:
        if self.config["end"] == "body" or self.indexes:
            self.done = True
            return Frame(DONE, self.request_id, "", "(end of body)")
        raise self.truncated("the terminal event")


class HttpEventsAdapter(Adapter):
    """`sse`: the response is text/event-stream."""

    kind = "sse"
    schemes = ("http", "https")
    content_types: ClassVar[tuple[str, ...]] = ("text/event-stream",)
    #: The body's decoder, and the Accept header of the stream request.
    decoder: ClassVar[type[Decoder]] = SseDecoder
    accept: ClassVar[str] = "text/event-stream"
    settings = {
        "start": Spec(
            _start,
            {"method": "POST", "path": "/api/chat", "body": {"message": "{prompt}"}, "headers": {}},
            'start = { method = "POST", path = "/api/chat", body = { message = "{prompt}" } }',
        ),
        "stream_path": Spec(
            _stream_path, None, 'stream_path = "/api/executions/{id}/stream"  # a second GET'
        ),
        "id_path": Spec(string, "id", 'id_path = "execution_id"  # in the start answer'),
        "token": Spec(match, {"path": "type", "value": "token"}, 'token = { path = "type", ... }'),
        "token_text_path": Spec(_text_paths, ["content"], 'token_text_path = "content"'),
        "done": Spec(match, {"path": "type", "value": "done"}, 'done = { path = "type", ... }'),
        "error": Spec(
            optional_match, {"path": "type", "value": "error"}, 'error = { path = "type", ... }'
        ),
        "error_text_path": Spec(optional_string, "error", 'error_text_path = "error"'),
        "request_id_path": Spec(optional_string, None, 'request_id_path = "id"'),
        "index_path": Spec(
            _optional_path, None, 'index_path = "result.index"  # several messages per reply'
        ),
        "end": Spec(_end, "done", 'end = "done"  # or "body": the end of the response'),
        "headers": Spec(headers, {}, 'headers = { Authorization = "Bearer ${TOKEN}" }'),
    }

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.is_token = compile_matcher(config["token"])
        self.is_done = compile_matcher(config["done"])
        self.is_error = compile_matcher(config.get("error"))

    def connect(self, url: str, timeout: float) -> Conversation:
        return HttpEventsConversation(self, url, timeout)


class NdjsonAdapter(HttpEventsAdapter):
    """`ndjson`: the response is JSON lines (any content type)."""

    kind = "ndjson"
    content_types: ClassVar[tuple[str, ...]] = ()
    decoder: ClassVar[type[Decoder]] = LineDecoder
    accept: ClassVar[str] = "application/x-ndjson"
    settings = {
        **HttpEventsAdapter.settings,
        "start": Spec(
            _start,
            {
                "method": "POST",
                "path": "/api",
                "body": {
                    "jsonrpc": "2.0",
                    "id": "{request_id}",
                    "method": "message/send",
                    "params": {"content": "{prompt}", "stream": True},
                },
                "headers": {},
            },
            'start = { path = "/api", body = { jsonrpc = "2.0", id = "{request_id}", ... } }',
        ),
        "token": Spec(
            match,
            {"path": "result.type", "value": "delta"},
            'token = { path = "result.type", ... }',
        ),
        "token_text_path": Spec(
            _text_paths, ["result.delta.text_delta"], 'token_text_path = "result.delta.text_delta"'
        ),
        "done": Spec(
            match, {"path": "result.type", "value": "done"}, 'done = { path = "result.type", ... }'
        ),
        "error": Spec(optional_match, {"path": "error"}, 'error = { path = "error" }'),
        "error_text_path": Spec(
            optional_string, "error.message", 'error_text_path = "error.message"'
        ),
        "request_id_path": Spec(optional_string, "id", 'request_id_path = "id"'),
    }
