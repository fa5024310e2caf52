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

With `include_usage` the request asks for `stream_options.include_usage`; a server that
honours it sends a chunk with `usage` (prompt_tokens, completion_tokens) and empty
`choices` before `[DONE]`. The terminal frame then carries those counts (the last
`usage` seen: vLLM's continuous usage stats repeat it per chunk), so time per output
token counts the server's tokens, not its frames (several tokens per frame are common).
A server that ignores the option is no error: the turn counts frames.

The target URL is the server's base (`http://127.0.0.1:8000`: requests go to
[protocol] path) or the endpoint itself (`https://gw.example/api/v1/chat/completions`).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from soak.protocols.base import DONE, ERROR, INVALID, OTHER, TOKEN, Adapter, Conversation, Frame
from soak.protocols.httpchat import RAW_EXCERPT, StreamedConversation, error_message
from soak.protocols.httpstream import HttpStream, SseDecoder, SseEvent
from soak.protocols.settings import Spec, boolean, headers, integer, optional_string, string, table
from soak.protocols.turn import UsageDone

DONE_DATA = "[DONE]"
EVENT_STREAM = "text/event-stream"


def _path(value: Any) -> str:
    path = string(value)
    if not path.startswith("/"):
        raise ValueError(f"expected a path starting with /, got {path!r}")
    return path


class OpenAiChatConversation(StreamedConversation):
    """One chat: a keep-alive connection, one streamed completion per turn."""

    content_types = (EVENT_STREAM,)

    def __init__(self, adapter: OpenAiChatAdapter, url: str, timeout: float) -> None:
        self.config = adapter.config
        parts = urlsplit(url)
        endpoint = parts.path if parts.path not in ("", "/") else self.config["path"]
        http = HttpStream(urlunsplit((*parts[:2], endpoint, parts.query, "")), timeout)
        http.headers.update(adapter.request_headers)
        self.history: list[dict[str, str]] = []
        self.prompt = ""
        self.reply: list[str] = []
        self.finished = False
        #: The turn's `usage` counts so far: (prompt_tokens, completion_tokens), or None.
        self.usage: tuple[int | None, int | None] | None = None
        super().__init__(http, timeout)

    def new_decoder(self) -> SseDecoder:
        return SseDecoder()

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
        self.begin(request_id)
        self.prompt, self.reply, self.finished, self.usage = prompt, [], False, None
        self.http.request(
            "POST",
            json.dumps(body).encode(),
            {
                "Content-Type": "application/json",
                "Accept": EVENT_STREAM,
                "X-Request-Id": request_id,
            },
        )

    def ended(self) -> Frame:
        """The body ended before [DONE]: done if a choice finished, else truncated."""
        if not self.finished:
            raise self.truncated("data: [DONE]")
        self.done = True
        self.notice(
            "no_done_event",
            "the server ends its streams without data: [DONE] (after a finish_reason); "
            "the end of the body is taken as the terminal frame",
        )
        return self._done("(end of body)")

    def _done(self, raw: str) -> Frame:
        """The terminal frame, with the server's token counts when it reported them."""
        if self.usage is None:
            return Frame(DONE, self.request_id, "", raw)
        prompt, completion = self.usage
        return UsageDone(DONE, self.request_id, "", raw, None, prompt, completion)

    def frames(self, event: SseEvent) -> list[Frame]:
        return [self._frame(event)]

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
            return self._done(raw)
        try:
            chunk = json.loads(data)
        except ValueError:
            return Frame(INVALID, self.request_id, f"not JSON: {data[:80]!r}", raw)
        if not isinstance(chunk, dict):
            return Frame(INVALID, self.request_id, f"not a JSON object: {data[:80]!r}", raw)
        if chunk.get("error") is not None or event.event == "error":
            return Frame(ERROR, self.request_id, error_message(data) or data[:RAW_EXCERPT], raw)
        if isinstance(chunk.get("usage"), dict):
            self.usage = (_count(chunk["usage"], "prompt_tokens"),
                          _count(chunk["usage"], "completion_tokens"))  # fmt: skip
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


def _count(usage: dict[str, Any], key: str) -> int | None:
    """A token count of a `usage` object, None when it is not a whole number >= 0."""
    value = usage.get(key)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else None


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
