#!/usr/bin/env python3
"""Hand probe of a running hermes-agent tui_gateway (``/api/ws``).

Records every frame it sends and receives, with times, as JSON lines, and
prints a summary.  Needs the ``websockets`` package (soak's venv has it).

    python probe_hermes.py --port 19119 --token TOKEN [--cwd DIR]
        [--out transcript.jsonl] [--idle-seconds 45]

Steps: first frame; ``ping``; ``session.create``; one prompt to its end;
a second prompt sent while a slow turn runs (``FAKE_SLOW=3``, see
fake_openai.py); a turn whose model call fails (``FAKE_ERROR``); a bad and a
missing token; ``GET /api/status`` idle and mid-turn; and a raw-socket idle
watch for server-sent WebSocket pings (opcode 0x9).

Loopback only: it refuses any host but 127.0.0.1 / ::1 / localhost.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import socket
import sys
import time
import urllib.request

import websockets

T0 = time.monotonic()
RECORD: list[dict] = []


def rec(kind: str, **kw) -> None:
    entry = {"t": round(time.monotonic() - T0, 3), "kind": kind, **kw}
    RECORD.append(entry)


def nonce() -> str:
    return secrets.token_hex(4)


class Client:
    def __init__(self, ws, label: str):
        self.ws = ws
        self.label = label
        self.next_id = 1
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        try:
            async for raw in self.ws:
                try:
                    obj = json.loads(raw)
                except ValueError:
                    obj = {"_unparsed": raw}
                rec("recv", conn=self.label, frame=obj)
                await self.inbox.put(obj)
        except websockets.ConnectionClosed as exc:
            rec(
                "closed",
                conn=self.label,
                code=exc.rcvd.code if exc.rcvd else None,
                reason=exc.rcvd.reason if exc.rcvd else None,
            )
        await self.inbox.put(None)

    async def send(self, method: str, params: dict | None = None) -> int:
        rid = self.next_id
        self.next_id += 1
        frame = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            frame["params"] = params
        rec("send", conn=self.label, frame=frame)
        await self.ws.send(json.dumps(frame))
        return rid

    async def next(self, timeout: float = 30.0):
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def until(self, pred, timeout: float = 30.0) -> list[dict]:
        """Collect frames until ``pred(frame)`` is true (inclusive)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.label}: no matching frame in {timeout}s")
            f = await self.next(left)
            if f is None:
                raise ConnectionError(f"{self.label}: closed while waiting")
            out.append(f)
            if pred(f):
                return out

    async def call(self, method: str, params: dict | None = None, timeout: float = 30.0):
        rid = await self.send(method, params)
        frames = await self.until(lambda f: f.get("id") == rid and "method" not in f, timeout)
        return frames[-1], frames[:-1]


def is_event(f: dict, etype: str, sid: str | None = None) -> bool:
    p = f.get("params") or {}
    return (
        f.get("method") == "event"
        and p.get("type") == etype
        and (sid is None or p.get("session_id") == sid)
    )


def http_get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body[:500].decode(errors="replace")


def raw_handshake(host: str, port: int, path: str, idle: float) -> dict:
    """Open a WebSocket with a bare socket: return the HTTP status line and,
    if upgraded, every frame opcode the server sends during ``idle`` seconds
    (0x1 text, 0x8 close, 0x9 ping)."""
    s = socket.create_connection((host, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    result = {"status_line": lines[0], "headers": lines[1:], "opcodes": []}
    if " 101 " not in lines[0]:
        result["body"] = rest[:300].decode(errors="replace")
        s.close()
        return result
    s.settimeout(0.5)
    end = time.monotonic() + idle
    data = rest
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
            if not chunk:
                result["opcodes"].append(("eof", round(time.monotonic() - (end - idle), 1)))
                break
            data += chunk
        except TimeoutError:
            pass
        while len(data) >= 2:
            op = data[0] & 0x0F
            ln = data[1] & 0x7F
            off = 2
            if ln == 126:
                if len(data) < 4:
                    break
                ln = int.from_bytes(data[2:4], "big")
                off = 4
            elif ln == 127:
                if len(data) < 10:
                    break
                ln = int.from_bytes(data[2:10], "big")
                off = 10
            if len(data) < off + ln:
                break
            payload = data[off : off + ln]
            data = data[off + ln :]
            result["opcodes"].append(
                (
                    hex(op),
                    round(time.monotonic() - (end - idle), 1),
                    payload[:80].decode(errors="replace"),
                )
            )
    s.close()
    return result


async def main_async(args) -> dict:
    base = f"ws://{args.host}:{args.port}/api/ws"
    http = f"http://{args.host}:{args.port}"
    summary: dict = {}

    st, body = http_get(http + "/api/status")
    rec("http", path="/api/status", status=st, body=body)
    summary["status_idle"] = body

    t = time.monotonic()
    ws = await websockets.connect(f"{base}?token={args.token}", max_size=None, ping_interval=None)
    summary["connect_s"] = round(time.monotonic() - t, 3)
    c = Client(ws, "main")
    first = await c.next(10)
    summary["first_frame"] = first

    resp, _ = await c.call("ping")
    summary["ping"] = resp

    resp, _ = await c.call("nosuch.method", {})
    summary["unknown_method"] = resp

    # malformed JSON
    rec("send", conn="main", frame="{not json")
    await ws.send("{not json")
    summary["bad_json"] = await c.next(10)

    t = time.monotonic()
    resp, ev = await c.call("session.create", {"cwd": args.cwd})
    summary["session_create"] = resp
    summary["session_create_s"] = round(time.monotonic() - t, 3)
    sid = resp["result"]["session_id"]

    # Turn 1
    n1 = nonce()
    t = time.monotonic()
    await c.send("prompt.submit", {"session_id": sid, "text": f"hello nonce={n1}"})
    frames = await c.until(lambda f: is_event(f, "message.complete", sid), 60)
    summary["turn1_s"] = round(time.monotonic() - t, 3)
    summary["turn1_frames"] = frames
    summary["turn1_nonce"] = n1

    # Let trailing events (session.title, session.info ...) arrive.
    await asyncio.sleep(2.0)
    trailing = []
    while not c.inbox.empty():
        trailing.append(c.inbox.get_nowait())
    summary["turn1_trailing"] = trailing

    # Turn 2 (slow) + a prompt while it runs
    n2, n3 = nonce(), nonce()
    rid2 = await c.send(
        "prompt.submit", {"session_id": sid, "text": f"slow one FAKE_SLOW=3 nonce={n2}"}
    )
    pre = await c.until(lambda f: f.get("id") == rid2, 10)
    await asyncio.sleep(1.0)
    st, body = http_get(http + "/api/status")
    rec("http", path="/api/status", status=st, body=body)
    summary["status_busy"] = body
    rid3 = await c.send("prompt.submit", {"session_id": sid, "text": f"second nonce={n3}"})
    got = await c.until(lambda f: f.get("id") == rid3, 10)
    summary["busy_submit_reply"] = got[-1]
    # Expect: complete (interrupted) for turn 2, then turn 3 runs and completes.
    rest = await c.until(
        lambda f: (
            is_event(f, "message.complete", sid)
            and n3 in ((f["params"].get("payload") or {}).get("text") or "")
        ),
        60,
    )
    summary["turn2_3_frames"] = pre + got + rest
    summary["turn2_nonce"], summary["turn3_nonce"] = n2, n3
    await asyncio.sleep(2.0)
    while not c.inbox.empty():
        summary.setdefault("turn3_trailing", []).append(c.inbox.get_nowait())

    # Turn 4: model error
    await c.send("prompt.submit", {"session_id": sid, "text": "please FAKE_ERROR now"})
    frames = await c.until(lambda f: is_event(f, "message.complete", sid), 120)
    summary["turn_error_frames"] = frames
    await asyncio.sleep(1.0)
    while not c.inbox.empty():
        summary.setdefault("turn_error_trailing", []).append(c.inbox.get_nowait())

    # Unknown session
    resp, _ = await c.call("prompt.submit", {"session_id": "nosuch", "text": "x"})
    summary["unknown_session"] = resp

    await ws.close()
    await asyncio.sleep(0.3)

    # Bad / missing token
    loop = asyncio.get_running_loop()
    summary["bad_token"] = await loop.run_in_executor(
        None, raw_handshake, args.host, args.port, "/api/ws?token=wrong", 0
    )
    summary["no_token"] = await loop.run_in_executor(
        None, raw_handshake, args.host, args.port, "/api/ws", 0
    )
    try:
        await websockets.connect(f"{base}?token=wrong")
        summary["bad_token_websockets"] = "connected?!"
    except Exception as exc:  # InvalidStatus
        summary["bad_token_websockets"] = f"{type(exc).__name__}: {exc}"

    # Idle watch for server pings
    if args.idle_seconds > 0:
        summary["idle_watch"] = await loop.run_in_executor(
            None,
            raw_handshake,
            args.host,
            args.port,
            f"/api/ws?token={args.token}",
            args.idle_seconds,
        )

    st, body = http_get(http + "/api/status")
    rec("http", path="/api/status", status=st, body=body)
    summary["status_end"] = body
    return summary


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--cwd", default=os.getcwd())
    ap.add_argument("--out", default="")
    ap.add_argument("--summary", default="")
    ap.add_argument("--idle-seconds", type=float, default=45.0)
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        ap.error("loopback only")
    summary = asyncio.run(main_async(args))
    if args.out:
        with open(args.out, "w") as f:
            for e in RECORD:
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
    text = json.dumps(summary, indent=1, ensure_ascii=False)
    if args.summary:
        with open(args.summary, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
