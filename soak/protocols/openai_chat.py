"""`openai-chat`: OpenAI-compatible chat completions streamed as server-sent events.

The most common LLM servers (vLLM, llama.cpp's server, Ollama, LiteLLM and any
OpenAI-compatible gateway) answer `POST /v1/chat/completions` with `"stream": true` as
`text/event-stream`: `data: {"choices": [{"delta": {"content": "..."}}]}` events, a
last chunk with a `finish_reason`, optionally a `usage` chunk, then `data: [DONE]`.

A turn is one such request on the chat's keep-alive connection (soak.protocols.
httpstream): a delta with content (or reasoning) is a token, `[DONE]` the terminal
frame, `data: {"error": ...}` or an HTTP error status an error. A body that ends
without `[DONE]` after a `finish_reason` counts as done (noted once: the server omits
`[DONE]`); without one, it is a disconnect (truncated). Data after `[DONE]` and a
second `[DONE]` are violations. Chat completions are stateless: each turn sends the
system prompt, the last `history_turns` exchanges and the prompt.

The target URL is the server's base (`http://127.0.0.1:8000`: requests go to
[protocol] path) or the endpoint itself (`https://gw.example/api/v1/chat/completions`).
"""

from __future__ import annotations

import json
import time
from typing import Any
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
)
from soak.protocols.httpstream import END, HttpStream, SseDecoder, SseEvent, Status
from soak.protocols.settings import Spec, boolean, headers, integer, optional_string, string, table

#: Characters of a raw event or an error body kept for anomaly records.
RAW_EXCERPT = 300
DONE_DATA = "[DONE]"
EVENT_STREAM = "text/event-stream"


def _path(value: Any) -> str:
    path = string(value)
    if not path.startswith("/"):
        raise ValueError(f"expected a path starting with /, got {path!r}")
    return path


class OpenAiChatConversation(Conversation):
    """One chat: a keep-alive connection, one streamed completion per turn."""

    def __init__(self, adapter: OpenAiChatAdapter, url: str, timeout: float) -> None:
        self.config = adapter.config
        parts = urlsplit(url)
        endpoint = parts.path if parts.path not in ("", "/") else self.config["path"]
        self.http = HttpStream(urlunsplit((*parts[:2], endpoint, parts.query, "")), timeout)
        self.http.headers.update(adapter.request_headers)
        self.timeout = timeout
        self.history: list[dict[str, str]] = []
        self.request_id: str | None = None
        self.decoder = SseDecoder()
        self.ready: list[Frame] = []
        self.prompt = ""
        self.reply: list[str] = []
        self.done = self.finished = False
        self.http.open()

    def send_prompt(self, prompt: str, request_id: str) -> None:
        config = self.config
        messages = [{"role": "system", "content": config["system_prompt"]}] * bool(
            config["system_prompt"]
        )
        keep = 2 * config["history_turns"]
        messages += self.history[-keep:] if keep else []
        messages.append({"role": "user", "content": prompt})
        body: dict[str, Any] = {"messages": messages, "stream": True}
        if config["model"]:
            body["model"] = config["model"]
        if config["max_tokens"]:
            body["max_tokens"] = config["max_tokens"]
        if config["include_usage"]:
            body["stream_options"] = {"include_usage": True}
        body.update(config["extra_body"])
        self.request_id, self.prompt, self.reply = request_id, prompt, []
        self.decoder, self.ready, self.done, self.finished = SseDecoder(), [], False, False
        self.http.request(
            "POST",
            json.dumps(body).encode(),
            {
                "Content-Type": "application/json",
                "Accept": EVENT_STREAM,
                "X-Request-Id": request_id,
            },
        )

    def receive(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        while not self.ready:
            part = self.http.read(max(deadline - time.monotonic(), 0.0))
            if part is None:
                stray = self.http.take_unsolicited()
                if not stray:
                    return None
                text = stray.decode("utf-8", "replace")[:RAW_EXCERPT]
                return Frame(INVALID, None, f"data while no request was open: {text!r}", text)
            if isinstance(part, Status):
                if not (200 <= part.code < 300 and part.content_type == EVENT_STREAM):
                    return self._refused(part)
            elif part == END:
                if not self.done:
                    return self._ended()
            else:
                try:
                    self.ready = [self._frame(event) for event in self.decoder.feed(part)]
                except ValueError as exc:
                    self.http.close()
                    raise ConnectionLost(None, str(exc)) from None
        return self.ready.pop(0)

    def _refused(self, status: Status) -> Frame:
        """An error status or a body that is not an event stream: the turn's error."""
        body = self.http.read_body(self.timeout).decode("utf-8", "replace")
        if self.http.busy:  # the body did not end in time: this connection is out of step
            self.http.close()
        what = (
            f"HTTP {status.code} {status.reason}".strip()
            if not 200 <= status.code < 300
            else f"HTTP {status.code} with {status.content_type or 'no content type'}, not "
            f"{EVENT_STREAM} (was the request streamed?)"
        )
        message = _error_message(body) or body[:RAW_EXCERPT]
        return Frame(ERROR, self.request_id, f"{what}: {message}", body[:RAW_EXCERPT])

    def _ended(self) -> Frame:
        """The body ended before [DONE]: done if a choice finished, else truncated."""
        if self.finished:
            self.done = True
            self.notice(
                "no_done_event",
                "the server ends its streams without data: [DONE] (after a finish_reason); "
                "the end of the body is taken as the terminal frame",
            )
            return Frame(DONE, self.request_id, "", "(end of body)")
        cut = " inside an event" if self.decoder.pending() else ""
        raise ConnectionLost(None, f"the response ended{cut} before data: [DONE] (truncated)")

    def _frame(self, event: SseEvent) -> Frame:
        data = event.data.strip()
        raw = f"data: {data[:RAW_EXCERPT]}"
        if data == DONE_DATA:
            if not self.done and self.config["history_turns"]:
                self.history += [
                    {"role": "user", "content": self.prompt},
                    {"role": "assistant", "content": "".join(self.reply)},
                ]
            self.done = True
            return Frame(DONE, self.request_id, "", raw)
        try:
            chunk = json.loads(data)
        except ValueError:
            return Frame(INVALID, self.request_id, f"not JSON: {data[:80]!r}", raw)
        if not isinstance(chunk, dict):
            return Frame(INVALID, self.request_id, f"not a JSON object: {data[:80]!r}", raw)
        if chunk.get("error") is not None or event.event == "error":
            return Frame(ERROR, self.request_id, _error_message(data) or data[:RAW_EXCERPT], raw)
        text = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta, dict):
                for key in ("content", "reasoning_content", "reasoning"):
                    if isinstance(delta.get(key), str) and delta[key]:
                        text.append(delta[key])
                if delta.get("tool_calls"):
                    text.append(json.dumps(delta["tool_calls"])[:RAW_EXCERPT])
            if choice.get("finish_reason"):
                self.finished = True
        if not text:
            return Frame(OTHER, None, "", raw)  # role, finish_reason or usage chunks
        self.reply += text
        return Frame(TOKEN, self.request_id, "".join(text), raw)

    def close(self) -> None:
        self.http.close()


def _error_message(text: str) -> str | None:
    """The message of an OpenAI-style error body {"error": {"message": ...}}, if it is one."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:RAW_EXCERPT]
    return str(error)[:RAW_EXCERPT] if error else None


class OpenAiChatAdapter(Adapter):
    kind = "openai-chat"
    schemes = ("http", "https")
    settings = {
        "path": Spec(_path, "/v1/chat/completions", 'path = "/v1/chat/completions"'),
        "model": Spec(string, "", 'model = "Qwen/Qwen2.5-7B-Instruct"  # "": not sent'),
        "system_prompt": Spec(string, "", 'system_prompt = "You are a helpful assistant."'),
        "max_tokens": Spec(integer(0), 256, "max_tokens = 256  # 0: not sent"),
        "history_turns": Spec(integer(0), 0, "history_turns = 4  # earlier exchanges sent again"),
        "include_usage": Spec(boolean, False, "include_usage = true  # stream_options"),
        "extra_body": Spec(table, {}, "extra_body = { temperature = 0 }"),
        "api_key": Spec(optional_string, None, 'api_key = "${OPENAI_API_KEY}"'),
        "headers": Spec(headers, {}, 'headers = { "X-Tenant" = "soak" }'),
    }

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.request_headers = dict(config.get("headers") or {})
        if config.get("api_key"):
            self.request_headers["Authorization"] = f"Bearer {config['api_key']}"

    def connect(self, url: str, timeout: float) -> Conversation:
        return OpenAiChatConversation(self, url, timeout)
