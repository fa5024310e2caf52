"""JsonSocket's own frame parser against a raw WebSocket server on loopback.

The server here writes frames byte for byte (RFC 6455), so every shape a real server
may send reaches the client as it would on the wire: many frames in one segment, a frame
cut into single bytes, 16- and 64-bit lengths, fragments with a ping between them, and
each way a connection can go wrong (close codes, bad UTF-8, an oversized message, a masked
or unexpected frame, a cut in the middle of a frame).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from soak.protocols.base import ConnectionLost
from soak.protocols.wsjson import MAX_FRAME_BYTES, JsonSocket

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = False) -> bytes:
    """One server frame (unmasked unless `masked`)."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head = bytes((first, mask_bit | size))
    elif size < 1 << 16:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", size)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", size)
    if masked:
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def text(value: str) -> bytes:
    return frame(0x1, value.encode())


class Peer:
    """The server's side of one connection: what the client sent, frame by frame."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The client's next frame (opcode, unmasked payload)."""
        self.conn.settimeout(timeout)

        def take(n: int) -> bytes:
            while len(self.buffer) < n:
                chunk = self.conn.recv(65536)
                if not chunk:
                    raise EOFError
                self.buffer += chunk
            out, self.buffer = self.buffer[:n], self.buffer[n:]
            return out

        first, second = take(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", take(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", take(8))
        key = take(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(take(size)))
        return first & 0x0F, payload


def read_request(conn: socket.socket) -> bytes:
    """The client's handshake request, up to the end of its head."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(4096)
    return request


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """serve(script, after_head=b"") -> ws:// URL of a one-connection server that answers
    the handshake (with `after_head` in the same write) and then runs script(peer)."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(script: Callable[[Peer], None], after_head: bytes = b"") -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def run() -> None:
            conn, _ = listener.accept()
            with conn:
                request = read_request(conn)
                key = next(
                    line.split(b":", 1)[1].strip()
                    for line in request.split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key:")
                )
                accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
                head = (
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                conn.sendall(head + after_head)
                with contextlib.suppress(EOFError, OSError):
                    script(Peer(conn))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return f"ws://127.0.0.1:{listener.getsockname()[1]}/ws"

    yield start
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(timeout=5)


def messages(client: JsonSocket, count: int) -> list[str | bytes]:
    out = []
    for _ in range(count):
        message = client.recv(5.0)
        assert message is not None, f"got {out}, then nothing"
        out.append(message)
    return out


def test_frames_after_the_head_many_per_segment_and_cut_into_bytes(serve) -> None:
    many = b"".join(text(f'{{"n": {n}}}') for n in range(50))
    long16, long64 = "x" * 300, "y" * 70_000
    not_utf8 = frame(0x1, b'"\xff\xfe":1')

    def script(peer: Peer) -> None:
        peer.send(many)
        for byte in text(long16) + text(long64) + not_utf8 + text('{"last": "é"}'):
            peer.send(bytes((byte,)))
        peer.read_frame()  # until the client closes

    client = JsonSocket(serve(script, after_head=text('{"hello": 1}')), timeout=5)
    try:
        got = messages(client, 55)
    finally:
        client.close()
    assert got[0] == '{"hello": 1}'
    assert got[1:51] == [f'{{"n": {n}}}' for n in range(50)]
    assert got[51:] == [long16, long64, '"\ufffd\ufffd":1', '{"last": "é"}']


def test_fragments_with_a_ping_between_are_one_message_and_the_ping_is_answered(serve) -> None:
    pongs: list[bytes] = []

    def script(peer: Peer) -> None:
        peer.send(frame(0x1, b'{"part": "one', fin=False) + frame(0x9, b"are-you-there"))
        pongs.append(peer.read_frame()[1])
        peer.send(frame(0x0, b" two", fin=False) + frame(0x0, b' three"}'))
        peer.send(frame(0x2, b"\x00\x01", fin=False) + frame(0x0, b"\x02"))
        peer.read_frame()

    client = JsonSocket(serve(script), timeout=5)
    try:
        assert messages(client, 2) == ['{"part": "one two three"}', b"\x00\x01\x02"]
    finally:
        client.close()
    assert pongs == [b"are-you-there"]


def test_keepalive_pongs_are_matched(serve) -> None:
    pings: list[bytes] = []

    def script(peer: Peer) -> None:
        deadline = time.monotonic() + 1.6  # three keepalives: only matched pongs keep it open
        while time.monotonic() < deadline:
            opcode, payload = peer.read_frame()
            assert opcode == 0x9
            pings.append(payload)
            peer.send(frame(0xA, payload))
        peer.send(text('{"still": "open"}'))
        peer.read_frame()

    client = JsonSocket(serve(script), timeout=5, keepalive=0.5)
    try:
        assert client.recv(5.0) == '{"still": "open"}'
    finally:
        client.close()
    assert len(pings) >= 2 and len(set(pings)) == len(pings)


def lost(url: str) -> ConnectionLost:
    client = JsonSocket(url, timeout=5)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            client.recv(1.0)
    except ConnectionLost as exc:
        return exc
    finally:
        client.close()
    raise AssertionError("the connection did not end")


def closing_script(data: bytes, close_seen: list[tuple[int, bytes]]) -> Callable[[Peer], None]:
    """Send `data`, record the client's close frame, echo it and end the connection."""

    def script(peer: Peer) -> None:
        peer.send(data)
        opcode, payload = peer.read_frame()
        close_seen.append((opcode, payload))
        peer.send(frame(0x8, payload))
        peer.conn.shutdown(socket.SHUT_RDWR)

    return script


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        (frame(0x1, b'{"a"', fin=False) + frame(0x1, b"1}"), 1002, "continuation"),
        (frame(0x0, b"orphan"), 1002, "unexpected continuation"),
        (b"\x81\x7f" + struct.pack("!Q", MAX_FRAME_BYTES + 1), 1009, "exceeds limit"),
        (frame(0x1, b'{"masked": 1}', masked=True), 1002, ""),
        (bytes((0x80 | 0x40 | 0x1, 2)) + b"{}", 1002, ""),  # RSV1 without an extension
    ],
    ids=["text-inside-fragments", "orphan-continuation", "too-big", "masked", "rsv1"],
)
def test_a_broken_frame_closes_with_the_code_websockets_would(serve, data, code, reason) -> None:
    close_seen: list[tuple[int, bytes]] = []
    exc = lost(serve(closing_script(text('{"ok": 1}') + data, close_seen)))
    assert exc.code == code
    assert reason in exc.reason
    assert close_seen and close_seen[0][0] == 0x8
    assert struct.unpack("!H", close_seen[0][1][:2])[0] == code


def test_the_server_closing_gives_its_code_and_reason(serve) -> None:
    def script(peer: Peer) -> None:
        peer.send(text('{"n": 1}') + frame(0x8, struct.pack("!H", 4001) + b"bye now"))
        peer.read_frame()  # the client's echo

    client = JsonSocket(serve(script), timeout=5)
    try:
        assert client.recv(5.0) == '{"n": 1}'
        with pytest.raises(ConnectionLost) as caught:
            client.recv(5.0)
    finally:
        client.close()
    assert (caught.value.code, caught.value.reason) == (4001, "bye now")


def test_a_cut_in_the_middle_of_a_frame_is_a_drop_without_close(serve) -> None:
    def script(peer: Peer) -> None:
        peer.send(text('{"n": 1}') + text('{"cut": "here"}')[:6])
        peer.conn.shutdown(socket.SHUT_RDWR)

    exc = lost(serve(script))
    assert exc.code is None
    assert "without a close frame" in exc.reason


def test_a_refusal_whose_body_comes_later_is_a_connect_failure_with_its_status() -> None:
    """The head of a non-101 answer goes to websockets, then its body as it comes (not held
    back waiting for a blank line the body does not have)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        conn, _ = listener.accept()
        with conn:
            read_request(conn)
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\n")
            time.sleep(0.3)
            conn.sendall(b"nope!")
            time.sleep(3)  # the connection stays open: only the body can end the handshake

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionLost) as caught:
            JsonSocket(f"ws://127.0.0.1:{listener.getsockname()[1]}/ws", timeout=10)
        assert "403" in caught.value.reason
        assert time.monotonic() - started < 3  # decided by the body, not by the timeout
    finally:
        thread.join(timeout=5)
        listener.close()
