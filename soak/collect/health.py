"""Poll a /health URL: whatever JSON it returns, plus status and latency, as data.

Timeouts, refused connections, non-JSON bodies and 5xx answers are results,
never exceptions: a sick server is exactly what soak is there to record.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

#: Largest body read, in bytes; a bigger answer is recorded as truncated.
MAX_BODY_BYTES = 1_048_576
_EXCERPT = 200
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def poll_health(url: str, timeout: float) -> dict[str, Any]:
    """GET `url` once; the record for health.jsonl."""
    started = time.monotonic()
    record: dict[str, Any] = {"t": time.time(), "url": url, "status": None, "error": None}
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            record["status"] = response.status
            body = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        record["status"] = exc.code
        record["error"] = f"HTTP {exc.code}"
        with exc:
            body = exc.read(MAX_BODY_BYTES + 1) if exc.fp else b""
    except TimeoutError:
        record["error"] = f"timeout after {timeout:g} s"
        body = b""
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            record["error"] = f"timeout after {timeout:g} s"
        elif isinstance(reason, ConnectionRefusedError):
            record["error"] = "refused"
        else:
            record["error"] = str(reason)
        body = b""
    except (OSError, ValueError) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        body = b""
    record["latency_s"] = round(time.monotonic() - started, 4)
    if body:
        _attach_body(record, body)
    return record


def _attach_body(record: dict[str, Any], body: bytes) -> None:
    if len(body) > MAX_BODY_BYTES:
        record["error"] = record["error"] or f"body larger than {MAX_BODY_BYTES} bytes"
        return
    try:
        record["body"] = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        excerpt = body[:_EXCERPT].decode("utf-8", "replace")
        record["error"] = record["error"] or f"non-JSON body: {excerpt!r}"
