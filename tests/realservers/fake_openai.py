#!/usr/bin/env python3
"""A tiny fake OpenAI-compatible model server (stdlib only).

Serves, on 127.0.0.1 only:

* ``POST /v1/chat/completions`` (also ``/chat/completions``): the reply
  echoes the last user message, as ``echo: <text>``.  With ``"stream": true``
  it is sent as SSE ``data: {...chat.completion.chunk...}`` lines spread over
  ``--chunks`` pieces ``--delay-ms`` apart, a final chunk with
  ``finish_reason: "stop"`` (plus a ``usage`` chunk when
  ``stream_options.include_usage`` is set) and ``data: [DONE]``.  Without
  ``stream`` it answers one ``chat.completion`` JSON object.  It never returns
  tool calls, whatever tools the request offers.
* ``GET /v1/models`` (also ``/models``) and ``GET /v1/models/<id>``.
* ``GET /health`` → ``{"status": "ok"}``.

Anything else is answered 404 with an OpenAI-style ``{"error": {...}}`` body
and logged, so a client's unexpected calls show up.

Test hooks, looked for in the last user message:

* ``FAKE_ERROR`` → HTTP 500 ``{"error": {...}}`` instead of a reply.
* ``FAKE_SLOW=<seconds>`` → wait that long before the first chunk.

Every request is logged as one JSON line (method, path, model, stream,
message count, last user text, tool count) to ``--log`` (default stderr).

Usage: ``python fake_openai.py --port P [--chunks 15] [--delay-ms 5]``.
Prints ``FAKE_OPENAI_READY port=P`` on stdout once it listens (``--port 0``
picks a free port).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_ID = "fake-model"

_log_lock = threading.Lock()
_log_file = sys.stderr


def _log(entry: dict) -> None:
    entry = {"t": round(time.time(), 3), **entry}
    with _log_lock:
        _log_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        _log_file.flush()


def _text_of(content) -> str:
    """Flatten an OpenAI message ``content`` (str or list of parts) to text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def last_user_text(messages) -> str:
    for msg in reversed(messages or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return _text_of(msg.get("content"))
    return ""


def split_chunks(text: str, n: int) -> list[str]:
    """Split ``text`` into about ``n`` pieces (at least one), keeping all chars."""
    if not text:
        return [""]
    n = max(1, min(n, len(text)))
    q, r = divmod(len(text), n)
    out, i = [], 0
    for k in range(n):
        j = i + q + (1 if k < r else 0)
        out.append(text[i:j])
        i = j
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-openai/1"

    # Set on the class by main().
    chunks = 15
    delay_s = 0.005

    def log_message(self, fmt, *args):  # silence default access log
        pass

    # -- helpers -----------------------------------------------------------
    def _send_json(self, status: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, etype: str = "invalid_request_error") -> None:
        self._send_json(
            status, {"error": {"message": message, "type": etype, "param": None, "code": None}}
        )

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _sse(self, obj) -> None:
        payload = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
        self._write_chunk(f"data: {payload}\n\n".encode())

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    # -- GET ---------------------------------------------------------------
    def do_GET(self):
        path = self._path()
        _log({"method": "GET", "path": self.path})
        model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "fake"}
        if path in ("/v1/models", "/models"):
            self._send_json(200, {"object": "list", "data": [model]})
        elif path.startswith("/v1/models/") or path.startswith("/models/"):
            self._send_json(200, {**model, "id": path.rsplit("/", 1)[1]})
        elif path in ("/health", "/v1/health", "/"):
            self._send_json(200, {"status": "ok"})
        else:
            self._error(404, f"unknown path {path}")

    # -- POST --------------------------------------------------------------
    def do_POST(self):
        path = self._path()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            _log({"method": "POST", "path": self.path, "error": "bad json"})
            self._error(400, "request body is not JSON")
            return
        if path not in ("/v1/chat/completions", "/chat/completions"):
            _log({"method": "POST", "path": self.path, "keys": sorted(req)[:20]})
            self._error(404, f"unknown path {path}")
            return

        messages = req.get("messages") or []
        user = last_user_text(messages)
        stream = bool(req.get("stream"))
        _log(
            {
                "method": "POST",
                "path": self.path,
                "model": req.get("model"),
                "stream": stream,
                "messages": len(messages),
                "tools": len(req.get("tools") or []),
                "last_user": user[:200],
            }
        )

        if "FAKE_ERROR" in user:
            self._error(500, "fake model error (FAKE_ERROR)", "server_error")
            return
        m = re.search(r"FAKE_SLOW=([0-9.]+)", user)
        if m:
            time.sleep(min(float(m.group(1)), 600.0))

        reply = f"echo: {user}" if user else "echo: (no user message)"
        model = req.get("model") or MODEL_ID
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        prompt_tokens = sum(
            len(_text_of(x.get("content")).split()) for x in messages if isinstance(x, dict)
        )
        completion_tokens = max(1, len(reply.split()))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

        if not stream:
            self._send_json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": reply},
                        }
                    ],
                    "usage": usage,
                },
            )
            return

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(delta, finish=None):
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        try:
            self._sse(chunk({"role": "assistant", "content": ""}))
            for piece in split_chunks(reply, self.chunks):
                time.sleep(self.delay_s)
                self._sse(chunk({"content": piece}))
            self._sse(chunk({}, "stop"))
            if (req.get("stream_options") or {}).get("include_usage"):
                self._sse(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            self._sse("[DONE]")
            self._write_chunk(b"")  # end of chunked body
        except (BrokenPipeError, ConnectionResetError):
            _log({"event": "client closed stream early", "id": cid})
            self.close_connection = True


def main(argv=None) -> int:
    global _log_file
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument(
        "--host", default="127.0.0.1", help="bind address (loopback only: 127.0.0.1 or ::1)"
    )
    ap.add_argument("--chunks", type=int, default=15, help="pieces per streamed reply")
    ap.add_argument("--delay-ms", type=float, default=5.0, help="pause before each piece")
    ap.add_argument("--log", default="", help="append request log lines here (default stderr)")
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        ap.error("refusing to bind a non-loopback address")
    if args.log:
        _log_file = open(args.log, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the process)
    Handler.chunks = max(1, args.chunks)
    Handler.delay_s = max(0.0, args.delay_ms / 1000.0)
    httpd = ThreadingHTTPServer((args.host, args.port), Handler)
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    print(f"FAKE_OPENAI_READY port={port}", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
