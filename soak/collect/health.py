"""Poll a /health URL: whatever JSON it returns, plus status and latency, as data.

Timeouts, refused connections, non-JSON bodies, huge bodies and 5xx answers
are results, never exceptions: a sick server is exactly what soak is there to
record. The body is read in chunks up to MAX_BODY_BYTES and within an overall
deadline, so neither a 10 MB answer nor a server that trickles bytes can eat
the collector's memory or hold its /health thread.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

#: Largest body read, in bytes; a bigger answer is recorded as an error, without its body.
MAX_BODY_BYTES = 1_048_576
_CHUNK = 65_536
_EXCERPT = 200
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def poll_health(
    url: str, timeout: float, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """GET `url` once (with `headers`); the record for health.jsonl.

    `timeout` (seconds) bounds every socket operation and the whole read of the
    body. The record has t, status (None when no HTTP answer), latency_s, `body`
    when the answer was JSON, and `error` only when something went wrong.
    """
    started = time.monotonic()
    deadline = started + timeout
    record: dict[str, Any] = {"t": round(time.time(), 3), "status": None}
    error: str | None = None
    body = b""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            record["status"] = response.status
            body = _read_bounded(response, deadline)
    except urllib.error.HTTPError as exc:
        record["status"] = exc.code
        error = f"HTTP {exc.code}"
        with exc:
            try:
                body = _read_bounded(exc, deadline) if exc.fp else b""
            except (OSError, ValueError):
                body = b""
    except TimeoutError:
        error = f"timeout after {timeout:g} s"
    except urllib.error.URLError as exc:
        error = _reason(exc.reason, timeout)
    except (OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    record["latency_s"] = round(time.monotonic() - started, 4)
    body_error = _attach_body(record, body) if body else None
    error = error or body_error
    if error:
        record["error"] = error
    return record


def _reason(reason: object, timeout: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"timeout after {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "refused"
    return str(reason)


def _read_bounded(response: Any, deadline: float) -> bytes:
    """Read at most MAX_BODY_BYTES + 1 bytes, giving up (TimeoutError) past `deadline`."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY_BYTES:
        if time.monotonic() > deadline:
            raise TimeoutError("body not complete in time")
        chunk = response.read1(min(_CHUNK, MAX_BODY_BYTES + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _attach_body(record: dict[str, Any], body: bytes) -> str | None:
    """Put the parsed JSON body into `record`; the error to record when there is none."""
    if len(body) > MAX_BODY_BYTES:
        return f"body larger than {MAX_BODY_BYTES} bytes (not kept)"
    try:
        record["body"] = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        excerpt = body[:_EXCERPT].decode("utf-8", "replace")
        return f"non-JSON body: {excerpt!r}"
    return None


def field_value(body: Any, path: str) -> float | None:
    """The number at a dotted path of a /health body ("diagnostics.loop_lag_ms"), or None."""
    value = body
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class LatencyFloor:
    """/health latency above its own floor (the lowest latency seen so far), in seconds.

    A server whose event loop drifts answers /health later and later, even when
    it has no loop-lag field of its own: the excess over the floor shows it.
    """

    def __init__(self) -> None:
        self.floor: float | None = None

    def excess(self, record: Mapping[str, Any]) -> float | None:
        """Update the floor with a successful poll; its latency above the floor."""
        latency = record.get("latency_s")
        if record.get("error") or not isinstance(latency, int | float):
            return None
        self.floor = latency if self.floor is None else min(self.floor, latency)
        return round(latency - self.floor, 4)
