"""What every HTTP streaming kind shares: a chat whose turns are streamed responses.

A `StreamedConversation` holds one keep-alive connection (soak.protocols.httpstream)
and turns a response into frames: a status that is not 2xx, or a body that is not
the stream the kind expects, is the turn's error (with the server's error message when
it sent a JSON one); the body's bytes go through the kind's decoder (server-sent
events or JSON lines) and its `frames`; a body that ends before the terminal frame is
the kind's to judge (`ended`: done for some servers, truncated for most). Bytes the
server sends while no request is open are an INVALID frame (a violation).
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from typing import Any, ClassVar, Protocol

from soak.protocols.base import ERROR, INVALID, ConnectionLost, Conversation, Frame
from soak.protocols.httpstream import END, HttpStream, Status

#: Characters of a raw event or an error body kept for anomaly records.
RAW_EXCERPT = 300
#: Longest wait (s) for the end of a response whose terminal frame came (`settle`).
SETTLE_S = 1.0


class Decoder(Protocol):
    def feed(self, chunk: bytes) -> list[Any]: ...

    def pending(self) -> bool: ...


class StreamedConversation(Conversation):
    """One chat on one keep-alive HTTP connection; one streamed response per turn."""

    #: Content types a 2xx answer must have to be read as the stream (empty: any).
    content_types: ClassVar[tuple[str, ...]] = ()

    def __init__(self, http: HttpStream, timeout: float) -> None:
        self.http = http
        self.timeout = timeout
        self.request_id: str | None = None
        self.ready: list[Frame] = []
        self.done = False
        self.decoder = self.new_decoder()
        self.http.open()

    @abstractmethod
    def new_decoder(self) -> Decoder:
        """A fresh decoder for one response body."""

    @abstractmethod
    def frames(self, item: Any) -> list[Frame]:
        """The frames of one decoded event or line (set `done` on the terminal one)."""

    @abstractmethod
    def ended(self) -> Frame:
        """The body ended before the terminal frame: a DONE frame, or raise ConnectionLost."""

    def begin(self, request_id: str) -> None:
        """Start reading a new turn's response. Frames the previous response still held
        (after its terminal frame) stay queued: the new turn sees them as frames of an
        earlier request after it ended."""
        self.settle()
        self.request_id, self.done = request_id, False
        self.decoder = self.new_decoder()

    def settle(self) -> None:
        """Read the rest of a response whose terminal frame came, up to `SETTLE_S` s: its
        end has usually arrived with that frame, and only then does the next request go
        on the same connection (else `HttpStream.request` opens a new one). A server that
        hangs up there instead has only ended its reply its own way: the next request
        reconnects."""
        deadline = time.monotonic() + SETTLE_S
        while self.done and self.http.busy and (remaining := deadline - time.monotonic()) > 0:
            try:
                part = self.http.read(remaining)
            except ConnectionLost:
                return
            if part is None:
                return
            if isinstance(part, bytes):
                self.ready += self.decode(part)

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
                if not self.accepts(part):
                    return self.refused(part)
            elif part == END:
                if not self.done:
                    return self.ended()
            else:
                self.ready = self.decode(part)
        return self.ready.pop(0)

    def decode(self, part: bytes) -> list[Frame]:
        """The frames of body bytes `part`; a stream the decoder cannot cut is ConnectionLost."""
        try:
            return [f for item in self.decoder.feed(part) for f in self.frames(item)]
        except ValueError as exc:
            self.http.close()
            raise ConnectionLost(None, str(exc)) from None

    def accepts(self, status: Status) -> bool:
        """Whether a response is the stream: 2xx, and of a content type the kind reads."""
        ok = 200 <= status.code < 300
        return ok and (not self.content_types or status.content_type in self.content_types)

    def refused(self, status: Status) -> Frame:
        """An error status, or a body that is not the stream: the turn's error."""
        body = self.http.read_body(self.timeout).decode("utf-8", "replace")
        if self.http.busy:  # the body did not end in time: this connection is out of step
            self.http.close()
        if 200 <= status.code < 300:
            what = (
                f"HTTP {status.code} with {status.content_type or 'no content type'}, not "
                f"{' or '.join(self.content_types)} (was the request streamed?)"
            )
        else:
            what = f"HTTP {status.code} {status.reason}".strip()
        message = error_message(body) or body[:RAW_EXCERPT]
        return Frame(ERROR, self.request_id, f"{what}: {message}", body[:RAW_EXCERPT])

    def truncated(self, terminal: str) -> ConnectionLost:
        """The error of a body that ended before its terminal frame `terminal`."""
        cut = " inside an event" if self.decoder.pending() else ""
        return ConnectionLost(None, f"the response ended{cut} before {terminal} (truncated)")

    def close(self) -> None:
        self.http.close()


def error_message(text: str) -> str | None:
    """The message of a JSON error body ({"error": {"message": ...}}, {"error": "..."},
    {"detail": "..."}), if it is one."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error") or body.get("detail")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:RAW_EXCERPT]
    return str(error)[:RAW_EXCERPT] if error else None
