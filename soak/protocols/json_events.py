"""Declarative JSON events over WebSocket (the built-in target, nerve-style servers).

The profile describes the frame to send as a JSON template with placeholders
({prompt}, {session_id}, {request_id}, {nonce}) and how to recognise frames:
matchers `{path, value}` for ready, token, done and error frames, plus where
the request id, token text and error text live.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from soak.protocols.base import (
    DONE,
    ERROR,
    OTHER,
    TOKEN,
    Adapter,
    ConnectionLost,
    Conversation,
    Frame,
)

#: Largest frame accepted, in bytes: bigger frames close the connection (code 1009).
MAX_FRAME_BYTES = 16 * 1024 * 1024


def lookup(data: Any, path: str | None) -> Any:
    """Value at a dotted path ("params.payload.text", "items.0.id"), or None."""
    if path is None:
        return None
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def matches(data: Any, matcher: dict[str, Any] | None) -> bool:
    """Whether a parsed frame satisfies a `{path, value}` matcher (value may be a list)."""
    if matcher is None:
        return False
    found = lookup(data, matcher["path"])
    wanted = matcher.get("value")
    if wanted is None:
        return found is not None
    if isinstance(wanted, list):
        return found in wanted
    return found == wanted


def render(template: Any, values: dict[str, str]) -> Any:
    """Fill {placeholders} in every string of a JSON template."""
    if isinstance(template, dict):
        return {key: render(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, values) for value in template]
    if isinstance(template, str):
        for key, value in values.items():
            template = template.replace("{" + key + "}", value)
    return template


class JsonEventsConversation(Conversation):
    def __init__(
        self, adapter: JsonEventsAdapter, socket: ClientConnection, closer: contextlib.ExitStack
    ) -> None:
        self.adapter = adapter
        self.socket = socket
        self.closer = closer
        self.session_id: str | None = None

    def send_prompt(self, prompt: str, request_id: str) -> None:
        values = {"prompt": prompt, "request_id": request_id, "session_id": self.session_id or ""}
        frame = render(self.adapter.config["send"], values)
        try:
            self.socket.send(json.dumps(frame))
        except ConnectionClosed as exc:
            raise _lost(exc) from None

    def receive(self, timeout: float) -> Frame | None:
        try:
            raw = self.socket.recv(timeout=max(timeout, 0.0))
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            raise _lost(exc) from None
        return self.adapter.classify(raw)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken socket must never fail a user
            self.closer.close()


class JsonEventsAdapter(Adapter):
    def connect(self, url: str, timeout: float) -> Conversation:
        closer = contextlib.ExitStack()  # connect() is a context manager since websockets 17.1
        try:
            socket = closer.enter_context(
                connect(
                    url,
                    open_timeout=timeout,
                    proxy=None,
                    max_size=MAX_FRAME_BYTES,
                    close_timeout=2,
                )
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectionLost(None, f"connect failed: {exc}") from None
        conversation = JsonEventsConversation(self, socket, closer)
        ready = self.config.get("ready")
        if ready is not None:
            conversation.session_id = self._await_ready(conversation, ready, timeout)
        return conversation

    def _await_ready(
        self, conversation: JsonEventsConversation, ready: dict[str, Any], timeout: float
    ) -> str | None:
        try:
            while True:
                raw = conversation.socket.recv(timeout=timeout)
                data = _parse(raw)
                if matches(data, ready):
                    session = lookup(data, self.config.get("session_id_path"))
                    return None if session is None else str(session)
        except TimeoutError:
            conversation.close()
            raise ConnectionLost(None, f"no ready frame {ready} within {timeout:g} s") from None
        except ConnectionClosed as exc:
            raise _lost(exc) from None

    def classify(self, raw: str | bytes) -> Frame:
        """Recognise one frame as token, done, error or other."""
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        data = _parse(raw)
        config = self.config
        request = lookup(data, config.get("request_id_path"))
        request_id = None if request is None else str(request)
        if matches(data, config["token"]):
            token = lookup(data, config.get("token_text_path"))
            return Frame(TOKEN, request_id, "" if token is None else str(token), text)
        if matches(data, config["done"]):
            return Frame(DONE, request_id, "", text)
        if matches(data, config.get("error")):
            error = lookup(data, config.get("error_text_path"))
            return Frame(ERROR, request_id, str(error or text), text)
        return Frame(OTHER, request_id, "", text)


def _parse(raw: str | bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _lost(exc: ConnectionClosed) -> ConnectionLost:
    close = exc.rcvd or exc.sent
    if close is None:
        return ConnectionLost(None, "connection dropped without a close frame")
    return ConnectionLost(close.code, close.reason or "closed")
