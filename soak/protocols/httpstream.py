"""Streamed HTTP responses for the HTTP protocol kinds: one keep-alive connection, and
decoders for server-sent events and JSON lines.

`HttpStream` is soak's own small HTTP/1.1 client on h11's Sans-I/O protocol over a
plain socket, for the same reasons as soak.protocols.wsjson: it uses no thread of its
own (in the load process the socket is gevent's, so thousands of chats share one
process), it reads with a timeout at every step (a turn's deadlines are soak's, not a
library's), and it keeps one connection alive across turns as a browser would (a new
one only when the server closed it, or the chat churns). A body that ends before its
length or its last chunk, or a reset, is `ConnectionLost`: a disconnect, not a reply.

`SseDecoder` follows the WHATWG event-stream rules (data lines joined by newlines, an
event ends at a blank line, `:` comments ignored); `LineDecoder` splits JSON lines.
Imports neither locust nor gevent.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

from soak.protocols.base import ConnectionLost

#: Bytes read from the socket at a time.
READ_SIZE = 65536
#: Most bytes of an error response's body kept (the rest is read and dropped).
ERROR_BODY_LIMIT = 4096
#: Longest event or line accepted before the stream is called broken (bytes).
MAX_EVENT_BYTES = 1 << 20


@dataclass(frozen=True)
class Status:
    """The response's status line and headers (lower-case names)."""

    code: int
    reason: str
    headers: dict[str, str]

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


#: What `HttpStream.read` returns besides body bytes: the response has ended.
END = "end"


@dataclass
class HttpStream:
    """One keep-alive HTTP/1.1 connection to `url`'s host, one request at a time."""

    url: str
    timeout: float
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectionLost(None, f"not an http:// or https:// URL: {self.url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if default_port else f"{host}:{self.port}"
        self.path = parts.path or "/"
        self.sock: socket.socket | None = None
        self.protocol: h11.Connection | None = None
        #: Whether a response is being read (its status seen or awaited).
        self.busy = False
        #: Connections opened so far (1 while the server keeps the first one alive).
        self.connections = 0
        #: Bytes the server sent while no request was open (see take_unsolicited).
        self.unsolicited = b""
        #: An event read past the body bytes `read` returned, to be returned next.
        self.held: h11.Event | None = None

    # -- connection ------------------------------------------------------------------
    def open(self) -> None:
        """Connect now (soak measures connect time and failures here, not on first send)."""
        self.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except OSError as exc:
            raise ConnectionLost(None, f"connect failed: {exc}") from None
        self.sock, self.protocol = sock, h11.Connection(h11.CLIENT)
        self.connections += 1

    def close(self) -> None:
        """Close the connection; never raises."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock, self.protocol, self.busy, self.held = None, None, False, None

    # -- one exchange ----------------------------------------------------------------
    def request(
        self, method: str, body: bytes, headers: dict[str, str] | None = None, path: str = ""
    ) -> None:
        """Send a request (on the kept-alive connection, or a new one if it was closed)."""
        if self.protocol is None or self.protocol.our_state is not h11.IDLE:
            self.open()
        assert self.protocol is not None
        all_headers = {
            "Host": self.authority,
            "User-Agent": "soak",
            "Content-Length": str(len(body)),
            **self.headers,
            **(headers or {}),
        }
        try:
            data = self.protocol.send(
                h11.Request(
                    method=method, target=path or self.path, headers=list(all_headers.items())
                )
            )
            data += self.protocol.send(h11.Data(data=body)) if body else b""
            data += self.protocol.send(h11.EndOfMessage())
            self._send(data)
        except h11.LocalProtocolError as exc:
            raise ConnectionLost(None, f"soak could not send the request: {exc}") from None
        self.busy = True

    def read(self, timeout: float) -> Status | bytes | str | None:
        """The next part of the response: its `Status`, body bytes, `END`, or None when
        nothing came within `timeout` s. Raises ConnectionLost on a reset or a body cut
        short. Between responses it notices a server that closes the idle connection
        (the next request reconnects) and returns None."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.busy:
                self._idle(deadline)
                return None
            assert self.protocol is not None
            try:
                event, self.held = self.held or self.protocol.next_event(), None
            except h11.RemoteProtocolError as exc:
                self.close()
                raise ConnectionLost(None, f"the response broke off: {exc}") from None
            if event is h11.NEED_DATA:
                if not self._receive(deadline):
                    return None
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers
                }
                return Status(event.status_code, event.reason.decode("latin-1"), headers)
            if isinstance(event, h11.Data):
                return self._buffered_body(bytes(event.data))
            if isinstance(event, h11.EndOfMessage):
                self._next_cycle()
                return END
            if isinstance(event, h11.ConnectionClosed):
                self.close()
                raise ConnectionLost(None, "the server closed the connection before answering")
            raise ConnectionLost(None, f"unexpected HTTP event {type(event).__name__}")

    def read_body(self, timeout: float, limit: int = ERROR_BODY_LIMIT) -> bytes:
        """The rest of the body (first `limit` bytes; an error answer's), within `timeout` s."""
        deadline = time.monotonic() + timeout
        kept = b""
        while (remaining := deadline - time.monotonic()) > 0:
            part = self.read(remaining)
            if part is None or part == END:
                break
            if isinstance(part, bytes) and len(kept) < limit:
                kept += part[: limit - len(kept)]
        return kept

    def _buffered_body(self, data: bytes) -> bytes:
        """`data` and every body chunk h11 already holds after it, as one part (a server
        sends each event as its own chunk: one call per recv, not per event)."""
        assert self.protocol is not None
        while True:
            try:
                event = self.protocol.next_event()
            except h11.RemoteProtocolError:
                return data  # raised again by the next read, after these bytes are used
            if not isinstance(event, h11.Data):
                self.held = None if event is h11.NEED_DATA else event
                return data
            data += event.data

    # -- socket ----------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        assert self.sock is not None
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ConnectionLost(None, f"sending the request failed: {exc}") from None

    def _receive(self, deadline: float) -> bool:
        """Feed what the socket has to h11; False when nothing came before `deadline`."""
        assert self.sock is not None and self.protocol is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            self.sock.settimeout(remaining)
            data = self.sock.recv(READ_SIZE)
        except TimeoutError:
            return False
        except OSError as exc:
            self.close()
            raise ConnectionLost(None, f"connection reset: {exc}") from None
        self.protocol.receive_data(data)  # b"": the server closed its side
        return True

    def _next_cycle(self) -> None:
        """After a response: keep the connection for the next request, or let it go."""
        assert self.protocol is not None
        self.busy = False
        if self.protocol.our_state is h11.DONE and self.protocol.their_state is h11.DONE:
            self.protocol.start_next_cycle()
        else:  # the server said Connection: close (or HTTP/1.0): reconnect next time
            self.close()

    def _idle(self, deadline: float) -> None:
        """Wait until `deadline` on an idle connection; a close by the server is normal."""
        while self.sock is not None and (remaining := deadline - time.monotonic()) > 0:
            try:
                self.sock.settimeout(remaining)
                data = self.sock.recv(READ_SIZE)
            except TimeoutError:
                return
            except OSError:
                data = b""
            if not data:  # an idle keep-alive connection closed: the next request reconnects
                self.close()
                return
            self.unsolicited = (self.unsolicited + data)[:ERROR_BODY_LIMIT]
        remaining = deadline - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def take_unsolicited(self) -> bytes:
        """Bytes the server sent while no request was open (a protocol violation)."""
        data, self.unsolicited = self.unsolicited, b""
        return data


@dataclass
class SseEvent:
    """One server-sent event: its `event` field ("message" when absent), data, id."""

    event: str
    data: str
    id: str | None = None


class SseDecoder:
    """Bytes of a text/event-stream body → events, by the WHATWG event-stream rules."""

    def __init__(self) -> None:
        self.buffer = b""
        self._reset()

    def _reset(self) -> None:
        self.event, self.data, self.id = "", [], None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events that `chunk` completes (the buffer is cut once per chunk, not per line)."""
        lines, self.buffer = _complete_lines(self.buffer + chunk)
        if len(self.buffer) > MAX_EVENT_BYTES:
            raise ValueError(f"an event-stream line longer than {MAX_EVENT_BYTES} bytes")
        events = []
        for line in lines:
            if not line:
                if self.data:
                    events.append(SseEvent(self.event or "message", "\n".join(self.data), self.id))
                self._reset()
            elif line.startswith(b"data:"):
                value = line[6:] if line.startswith(b"data: ") else line[5:]
                self.data.append(value.decode("utf-8", "replace"))
            elif not line.startswith(b":"):
                name, _, raw = line.decode("utf-8", "replace").partition(":")
                value = raw[1:] if raw.startswith(" ") else raw
                if name == "data":  # a bare "data" line: an empty data value
                    self.data.append(value)
                elif name == "event":
                    self.event = value
                elif name == "id":
                    self.id = value
        return events

    def pending(self) -> bool:
        """Whether an event was begun but not ended (a body cut inside an event)."""
        return bool(self.data or self.buffer.strip())


def _complete_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of `buffer` (ended by \r\n, \n or \r) and what follows them; a
    \r at the very end may still be followed by \n, so it waits."""
    if b"\r" not in buffer:  # the usual case: one split
        *lines, rest = buffer.split(b"\n")
        return lines, rest
    lines, start = [], 0
    while True:
        lf, cr = buffer.find(b"\n", start), buffer.find(b"\r", start)
        if cr == -1 or -1 < lf < cr:
            if lf == -1:
                break
            end, after = lf, lf + 1
        elif cr + 1 == len(buffer):
            break
        else:
            end, after = cr, cr + (2 if buffer[cr + 1] == 0x0A else 1)
        lines.append(buffer[start:end])
        start = after
    return lines, buffer[start:]


class LineDecoder:
    """Bytes of a line-delimited body (NDJSON) → its non-blank lines."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        if len(self.buffer) > MAX_EVENT_BYTES:
            raise ValueError(f"a JSON line longer than {MAX_EVENT_BYTES} bytes")
        return [text for line in lines if (text := line.decode("utf-8", "replace").strip())]

    def pending(self) -> bool:
        return bool(self.buffer.strip())
