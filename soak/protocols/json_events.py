"""Declarative JSON events over WebSocket (the built-in target, nerve-style servers).

The profile describes the frame to send as a JSON template with placeholders
({prompt}, {session_id}, {request_id}, {nonce}) and how to recognise frames:
matchers for ready, token, done, error and pong frames, plus where the request
id, sequence number, token text, final text and error text live. A matcher is
`{path, value}` (value may be a list of values), `{path, absent = true}`, or a
list of those that must all hold. Frames that match nothing are `other` and
never fail a turn, so servers may add event types freely.

What a web UI does around the frames can be said too: `ready = false` for a
server that sends nothing on connect; `session_create` for one that makes a chat
with an HTTP call first (its id goes into {session_id}); `session_path` for one
whose socket may carry other sessions' events (ignored, as the UI ignores them);
`error_ends_turn = false` for one that ends a failed turn with its usual terminal
frame after the error; `resume_query` / `resume_send` for one that rejoins a
session after a reconnect by a URL parameter or by a frame.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from soak.protocols.base import (
    DONE,
    ERROR,
    INVALID,
    OTHER,
    PONG,
    TOKEN,
    Adapter,
    ConnectionLost,
    Conversation,
    Frame,
    fill_placeholders,
)
from soak.protocols.matchers import (
    Matcher,
    compile_matcher,
    match,
    optional_match,
    optional_template,
    template,
)
from soak.protocols.settings import (
    KEEPALIVE,
    Spec,
    boolean,
    http_call,
    optional_string,
)
from soak.protocols.wsjson import JsonSocket, as_text, http_base, lookup, lookup_parts, parse

#: Characters of an HTTP answer quoted in an error.
ANSWER_EXCERPT = 300


def _parts(path: str | None) -> tuple[str, ...] | None:
    return None if path is None else tuple(path.split("."))


def _key(parts: tuple[str, ...] | None) -> str | None:
    """The one key of a one-part path (None for none)."""
    return None if parts is None else parts[0]


def _lookup_key(data: Any, key: str | None) -> Any:
    """The value at a one-key path (None: no path) of a frame that is not a plain dict."""
    return None if key is None else lookup_parts(data, (key,))


def _lookup_parts(data: Any, parts: tuple[str, ...] | None) -> Any:
    return None if parts is None else lookup_parts(data, parts)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


class JsonEventsConversation(Conversation):
    def __init__(
        self, adapter: JsonEventsAdapter, socket: JsonSocket, base: str, timeout: float
    ) -> None:
        self.adapter = adapter
        self.socket = socket
        self.base = base  # http(s)://host:port of the target, for session_create
        self.timeout = timeout  # of an HTTP call, in seconds
        self.session_id: str | None = None
        self.supports_ping = adapter.config.get("ping") is not None
        self.resumable = adapter.can_resume
        self.error_ends_turn = adapter.config.get("error_ends_turn", True)
        self.own_session = False  # the session is the chat's (created or resumed)

    def send_prompt(self, prompt: str, request_id: str) -> None:
        if self.adapter.config.get("session_create") and not self.own_session:
            self.session_id, self.own_session = self._create_session(), True
        values = {"prompt": prompt, "request_id": request_id, "session_id": self.session_id or ""}
        self.socket.send(fill_placeholders(self.adapter.config["send"], values))

    def _create_session(self) -> str:
        """The id of a new chat made by the profile's `session_create` HTTP call."""
        import requests  # here, not at the top: profile validation imports this module

        create = self.adapter.config["session_create"]
        url = self.base + create["path"]
        try:
            response = requests.request(
                create["method"],
                url,
                json=create.get("body") or {},
                headers=create.get("headers") or {},
                timeout=self.timeout,
            )
            answer = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise ConnectionLost(None, f"session_create {create['path']} failed: {exc}") from None
        session = lookup(answer, create["id_path"])
        if not response.ok or session is None:
            raise ConnectionLost(
                None,
                f"session_create {create['path']}: HTTP {response.status_code}, no "
                f"{create['id_path']!r} in {response.text[:ANSWER_EXCERPT]!r}",
            )
        return str(session)

    def resume(self, session_id: str) -> None:
        self.session_id, self.own_session = session_id, True
        frame = self.adapter.config.get("resume_send")
        if frame:
            self.socket.send(fill_placeholders(frame, {"session_id": session_id}))

    def send_ping(self) -> None:
        values = {"session_id": self.session_id or ""}
        self.socket.send(fill_placeholders(self.adapter.config["ping"], values))

    def receive(self, timeout: float) -> Frame | None:
        raw = self.socket.recv(timeout)
        return None if raw is None else self.adapter.classify(raw, self.session_id)

    def plan_ping(self, at: float) -> None:
        self.socket.plan_send(at)

    def close(self) -> None:
        self.socket.close()


# --- the [protocol] settings ------------------------------------------------------
def _session_create(value: Any) -> dict[str, Any] | None:
    """An HTTP call that makes a chat, as a web UI does before it sends: its id's path."""
    example = '{ path = "/api/sessions", id_path = "id" }'
    return None if value is None else http_call(value, example, ("id_path",))


def _ready(value: Any) -> dict[str, Any] | list[dict[str, Any]] | bool:
    """The frame to wait for after connect, or false: the server sends nothing first."""
    if value is False:
        return False
    if value is True:
        raise ValueError("true says nothing; give the frame's matcher, or false for none")
    try:
        return match(value)
    except ValueError as exc:
        raise ValueError(f"{exc}, or false when the server sends nothing on connect") from None


class JsonEventsAdapter(Adapter):
    kind = "json-events"
    settings = {
        "keepalive": KEEPALIVE,
        "send": Spec(
            template,
            {
                "type": "message",
                "content": "{prompt}",
                "session_id": "{session_id}",
                "request_id": "{request_id}",
            },
            'send = { type = "message", content = "{prompt}" }',
        ),
        "ready": Spec(
            _ready,
            {"path": "type", "value": "session_switched"},
            'ready = { path = "type", value = "session_switched" }  (or false: nothing sent)',
        ),
        "session_id_path": Spec(optional_string, "session_id", 'session_id_path = "session_id"'),
        "token": Spec(match, {"path": "type", "value": "token"}, 'token = { path = "type", ... }'),
        "token_text_path": Spec(optional_string, "content", 'token_text_path = "content"'),
        "done": Spec(
            match, {"path": "type", "value": ["done", "stopped"]}, 'done = { path = "type", ... }'
        ),
        "error": Spec(
            optional_match, {"path": "type", "value": "error"}, 'error = { path = "type", ... }'
        ),
        "error_text_path": Spec(optional_string, "error", 'error_text_path = "error"'),
        "request_id_path": Spec(optional_string, "request_id", 'request_id_path = "request_id"'),
        "done_text_path": Spec(optional_string, None, 'done_text_path = "text"'),
        "seq_path": Spec(optional_string, None, 'seq_path = "seq"'),
        "ping": Spec(optional_template, {"type": "ping"}, 'ping = { type = "ping" }'),
        "session_path": Spec(
            optional_string, None, 'session_path = "session_id"  # frames of other sessions'
        ),
        "error_ends_turn": Spec(
            boolean, True, "error_ends_turn = false  # the terminal frame follows an error"
        ),
        "session_create": Spec(
            _session_create,
            None,
            'session_create = { path = "/api/sessions", id_path = "id" }',
        ),
        "resume_query": Spec(
            optional_string, None, 'resume_query = "session_id"  # ?session_id=... to rejoin'
        ),
        "resume_send": Spec(
            optional_template,
            None,
            'resume_send = { type = "switch_session", session_id = "{session_id}" }',
        ),
        "pong": Spec(
            optional_match,
            {"path": "type", "value": "pong"},
            'pong = { path = "type", value = "pong" }',
        ),
    }

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.is_token = compile_matcher(config["token"])
        self.is_done = compile_matcher(config["done"])
        self.is_error = compile_matcher(config.get("error"))
        self.is_pong = compile_matcher(config.get("pong"))
        paths = [
            _parts(config.get(name))
            for name in (
                "request_id_path",
                "session_path",
                "seq_path",
                "token_text_path",
                "done_text_path",
                "error_text_path",
            )
        ]
        #: Every path one key or none: then a frame that is a JSON object (nearly all) has
        #: each read with one dict.get of that key, and paths are kept as their keys.
        self.flat = all(parts is None or len(parts) == 1 for parts in paths)
        at = [_key(parts) for parts in paths] if self.flat else paths
        self.request_at, self.session_at, self.seq_at = at[:3]
        self.token_at, self.done_at, self.error_at = at[3:]
        self._lookup = _lookup_key if self.flat else _lookup_parts
        sends_session = "{session_id}" in json.dumps(config["send"])
        self.can_resume = sends_session or bool(
            config.get("resume_query") or config.get("resume_send")
        )

    def resume_url(self, url: str, session_id: str) -> str:
        """`url` with the profile's `resume_query` parameter naming the session, if any."""
        name = self.config.get("resume_query")
        if not name:
            return url
        parts = urlsplit(url)
        query = "&".join(filter(None, (parts.query, urlencode({name: session_id}))))
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))

    def connect(self, url: str, timeout: float) -> Conversation:
        socket = JsonSocket(url, timeout, self.config.get("keepalive", 0.0))
        conversation = JsonEventsConversation(self, socket, http_base(url), timeout)
        ready = self.config.get("ready")
        if ready:
            try:
                conversation.session_id = self._await_ready(socket, ready, timeout)
            except ConnectionLost:
                socket.close()
                raise
        return conversation

    def _await_ready(self, socket: JsonSocket, ready: dict[str, Any], timeout: float) -> str | None:
        """The session id of the ready frame, which must come within `timeout` seconds in
        all (other frames before it, a heartbeat say, do not extend the wait)."""
        is_ready = Matcher(ready)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            raw = socket.recv(remaining)
            if raw is None:
                break
            data = parse(raw)
            if is_ready(data):
                return _optional_str(lookup(data, self.config.get("session_id_path")))
        raise ConnectionLost(
            None,
            f"no ready frame ({Matcher.describe(ready)}) within {timeout:g} s of connecting; "
            "if the server sends nothing on connect, set [protocol] ready = false",
        )

    def classify(self, raw: str | bytes, session_id: str | None = None) -> Frame:
        """Recognise one frame as token, done, error, pong, invalid or other.

        A frame that names another session than `session_id` (at `session_path`) is
        other: not this chat's. Runs for every frame of the load: `parse` takes json.loads'
        scanner straight, the matchers are compiled, and when every path is one key (the
        usual profile) each is one dict.get on the frame's object.
        """
        text = raw if raw.__class__ is str else as_text(raw)
        data = parse(raw)
        get: Callable[[Any], Any]
        if self.flat and data.__class__ is dict:
            get = data.get  # keys, or None for a path not set: JSON keys are never None
        elif isinstance(data, dict | list):
            get = partial(self._lookup, data)
        else:
            return Frame(INVALID, None, "not a JSON object", text)
        if session_id and self.session_at is not None:
            session = get(self.session_at)
            if session is not None and str(session) != session_id:
                return Frame(OTHER, None, "", text)
        request_id = get(self.request_at)
        if request_id is not None:
            request_id = str(request_id)
        seq = get(self.seq_at)
        if seq is not None and (seq.__class__ is bool or not isinstance(seq, int)):
            seq = None
        if self.is_token(data):
            token = get(self.token_at)
            return Frame(TOKEN, request_id, "" if token is None else str(token), text, seq)
        if self.is_done(data):
            final = get(self.done_at)
            return Frame(DONE, request_id, "" if final is None else str(final), text, seq)
        if self.is_error(data):
            error = get(self.error_at)
            return Frame(ERROR, request_id, str(error or text), text, seq)
        if self.is_pong(data):
            return Frame(PONG, None, "", text, seq)
        return Frame(OTHER, request_id, "", text, seq)
