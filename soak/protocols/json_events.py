"""Declarative JSON events over WebSocket (the built-in target, nerve-style servers).

The profile describes the frame to send as a JSON template with placeholders
({prompt}, {session_id}, {request_id}, {nonce}) and how to recognise frames:
matchers `{path, value}` for ready, token, done, error and pong frames, plus
where the request id, sequence number, token text, final text and error text
live. Frames that match nothing are `other` and never fail a turn, so servers
may add event types freely.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

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
from soak.protocols.wsjson import JsonSocket, as_text, lookup, lookup_parts, parse


class Matcher:
    """A compiled `{path, value}` matcher (value may be a list; absent: the path exists)."""

    __slots__ = ("parts", "wanted")

    def __init__(self, matcher: dict[str, Any]) -> None:
        self.parts = tuple(matcher["path"].split("."))
        wanted = matcher.get("value")
        self.wanted = frozenset(wanted) if isinstance(wanted, list) else wanted

    def __call__(self, data: Any) -> bool:
        found = lookup_parts(data, self.parts)
        if self.wanted is None:
            return found is not None
        if isinstance(self.wanted, frozenset):
            return isinstance(found, Hashable) and found in self.wanted
        return found == self.wanted


def _never(data: Any) -> bool:
    return False


def _compile(matcher: dict[str, Any] | None) -> Callable[[Any], bool]:
    return _never if matcher is None else Matcher(matcher)


def _parts(path: str | None) -> tuple[str, ...] | None:
    return None if path is None else tuple(path.split("."))


def matches(data: Any, matcher: dict[str, Any] | None) -> bool:
    """Whether a parsed frame satisfies a `{path, value}` matcher (value may be a list)."""
    return _compile(matcher)(data)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


class JsonEventsConversation(Conversation):
    def __init__(self, adapter: JsonEventsAdapter, socket: JsonSocket) -> None:
        self.adapter = adapter
        self.socket = socket
        self.session_id: str | None = None
        self.supports_ping = adapter.config.get("ping") is not None

    def send_prompt(self, prompt: str, request_id: str) -> None:
        values = {"prompt": prompt, "request_id": request_id, "session_id": self.session_id or ""}
        self.socket.send(fill_placeholders(self.adapter.config["send"], values))

    def send_ping(self) -> None:
        values = {"session_id": self.session_id or ""}
        self.socket.send(fill_placeholders(self.adapter.config["ping"], values))

    def receive(self, timeout: float) -> Frame | None:
        raw = self.socket.recv(timeout)
        return None if raw is None else self.adapter.classify(raw)

    def close(self) -> None:
        self.socket.close()


class JsonEventsAdapter(Adapter):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.is_token = _compile(config["token"])
        self.is_done = _compile(config["done"])
        self.is_error = _compile(config.get("error"))
        self.is_pong = _compile(config.get("pong"))
        self.request_path = _parts(config.get("request_id_path"))
        self.seq_path = _parts(config.get("seq_path"))
        self.token_path = _parts(config.get("token_text_path"))
        self.done_path = _parts(config.get("done_text_path"))
        self.error_path = _parts(config.get("error_text_path"))

    def connect(self, url: str, timeout: float) -> Conversation:
        socket = JsonSocket(url, timeout, self.config.get("keepalive", 0.0))
        conversation = JsonEventsConversation(self, socket)
        ready = self.config.get("ready")
        if ready is not None:
            try:
                conversation.session_id = self._await_ready(socket, ready, timeout)
            except ConnectionLost:
                socket.close()
                raise
        return conversation

    def _await_ready(self, socket: JsonSocket, ready: dict[str, Any], timeout: float) -> str | None:
        is_ready = Matcher(ready)
        raw = socket.recv(timeout)
        while raw is not None:
            data = parse(raw)
            if is_ready(data):
                return _optional_str(lookup(data, self.config.get("session_id_path")))
            raw = socket.recv(timeout)
        raise ConnectionLost(None, f"no ready frame {ready} within {timeout:g} s")

    def classify(self, raw: str | bytes) -> Frame:
        """Recognise one frame as token, done, error, pong, invalid or other."""
        text = as_text(raw)
        data = parse(raw)
        if not isinstance(data, dict | list):
            return Frame(INVALID, None, "not a JSON object", text)
        request_id = _optional_str(self._get(data, self.request_path))
        seq = self._get(data, self.seq_path)
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        if self.is_token(data):
            token = self._get(data, self.token_path)
            return Frame(TOKEN, request_id, "" if token is None else str(token), text, seq)
        if self.is_done(data):
            final = self._get(data, self.done_path)
            return Frame(DONE, request_id, "" if final is None else str(final), text, seq)
        if self.is_error(data):
            error = self._get(data, self.error_path)
            return Frame(ERROR, request_id, str(error or text), text, seq)
        if self.is_pong(data):
            return Frame(PONG, None, "", text, seq)
        return Frame(OTHER, request_id, "", text, seq)

    @staticmethod
    def _get(data: Any, parts: tuple[str, ...] | None) -> Any:
        return None if parts is None else lookup_parts(data, parts)
