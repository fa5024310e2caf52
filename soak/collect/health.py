"""Poll a /health URL: whatever JSON it returns, plus status and latency, as data.

Timeouts, refused connections, non-JSON bodies, huge bodies, redirects and 5xx
answers are results, never exceptions: a sick server is exactly what soak is
there to record. The poll is a small HTTP/1.1 GET of its own over a socket
(TLS for https), every wait of it bounded by one deadline: connect, TLS
handshake, status line, headers, body. A server that trickles any of them a
byte a second cannot hold the collector's /health thread past the timeout, and
neither a 10 MB answer nor an endless chunked one can eat its memory. Redirects
are not followed to another origin, so the poll's headers (credentials) never
reach a server the profile did not name.

What the server returns is server-controlled, so what health.jsonl stores of it
is bounded too (HealthBodies): numbers, short strings, a few levels deep, and a
fixed number of distinct fields per run.
"""

from __future__ import annotations

import functools
import json
import re
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

from soak import __version__
from soak.criteria import HealthMetric, parse_criterion
from soak.profile import redact_url

#: Largest body read, in bytes; a bigger answer is recorded as an error, without its body.
MAX_BODY_BYTES = 1_048_576
#: Largest status line plus headers read, in bytes; more is recorded as an error.
MAX_HEAD_BYTES = 65_536
#: Numeric fields (int/float leaves) stored per /health body, a count; the first ones are kept.
MAX_FIELDS_PER_POLL = 500
#: Other fields (strings, booleans, nulls) stored per /health body, a count.
MAX_TEXT_FIELDS_PER_POLL = 20
#: Longest string stored, in characters; a longer one is cut to this length.
MAX_STRING_CHARS = 200
#: Deepest field stored, in levels of nesting ("diagnostics.loop_lag_ms" is 2).
MAX_DEPTH = 8
#: Longest dotted field path stored, in characters.
MAX_PATH_CHARS = 200
#: Distinct field paths stored per target and run, a count; new fields beyond it are dropped.
MAX_PATHS_PER_RUN = 1_000
#: Every cap of the stored bodies, by the name a health_capped event gives it.
BODY_CAPS = {
    "fields_per_poll": MAX_FIELDS_PER_POLL,
    "text_fields_per_poll": MAX_TEXT_FIELDS_PER_POLL,
    "depth": MAX_DEPTH,
    "path_chars": MAX_PATH_CHARS,
    "paths_per_run": MAX_PATHS_PER_RUN,
}

_CHUNK = 65_536
_LINE_BYTES = 1024  # a chunk size line
_EXCERPT = 200
_MAX_REDIRECTS = 1  # same-origin only
_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)? +(\d{3})(?: .*)?")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_NO_BODY = (204, 304)
_BIG_INT = 2**63


class _Failed(Exception):
    """No usable HTTP answer; str() is the record's error."""


class _TooLarge(Exception):
    """The body would pass MAX_BODY_BYTES."""


def poll_health(
    url: str, timeout: float, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """GET `url` once (with `headers`); the record for health.jsonl.

    `timeout` (seconds) is a deadline for the whole poll, whatever the server does.
    The record has t, status (None when no HTTP answer), latency_s, `body` when the
    answer was JSON (whole: HealthBodies bounds what is stored), and `error` only when
    something went wrong. A redirect is followed once when it stays on the same origin
    (scheme, host and port); any other is recorded, not followed.
    """
    started = time.monotonic()
    deadline = started + timeout
    record: dict[str, Any] = {"t": round(time.time(), 3), "status": None}
    error: str | None = None
    sent = dict(headers or {})
    try:
        for hop in range(_MAX_REDIRECTS + 1):
            record["status"], body = None, b""
            status, head, body = _get(url, sent, deadline, record)
            location = head.get("location") if 300 <= status < 400 else None
            if location is None:
                error = f"HTTP {status}" if status >= 300 else None
                break
            target = _absolute(url, location)
            if hop == _MAX_REDIRECTS or target is None or not _same_origin(url, target):
                shown = redact_url(target)[:_EXCERPT] if target else repr(location[:_EXCERPT])
                error = f"redirect to {shown} not followed"
                break
            url = target
    except TimeoutError:
        error = f"timeout after {timeout:g} s"
    except ConnectionRefusedError:
        error = "refused"
    except _TooLarge:
        error = f"body larger than {MAX_BODY_BYTES} bytes (not kept)"
    except _Failed as exc:
        error = str(exc)
    except (OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    record["latency_s"] = round(time.monotonic() - started, 4)
    body_error = _attach_body(record, body) if body and record["status"] is not None else None
    error = error or body_error
    if error:
        record["error"] = error
    return record


def _get(
    url: str, headers: Mapping[str, str], deadline: float, record: dict[str, Any]
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers by lower-case name, body) of one GET; the status goes into
    `record` as soon as it is known (a body that times out keeps it)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise _Failed(f"cannot poll {redact_url(url)!r}: not an http(s) URL with a host")
    port = parts.port or (443 if scheme == "https" else 80)
    sock = _connect(parts.hostname, port, deadline)
    try:
        if scheme == "https":
            sock = _tls_context().wrap_socket(
                sock, server_hostname=parts.hostname, do_handshake_on_connect=False
            )
            sock.settimeout(_remaining(deadline))
            sock.do_handshake()
        sock.settimeout(_remaining(deadline))
        sock.sendall(_request(parts, headers))
        reader = _Reader(sock, deadline)
        status, head = reader.head()
        record["status"] = status
        return status, head, reader.body(status, head)
    finally:
        sock.close()


def _remaining(deadline: float) -> float:
    """Seconds left before `deadline`; TimeoutError when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    """A TCP connection to the first address of `host` that answers before `deadline`.

    No proxy, ever. Name resolution itself is the system resolver's (not bounded here).
    """
    last: Exception = _Failed(f"{host} has no address")
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_remaining(deadline))
            sock.connect(address)
        except TimeoutError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last = exc
        else:
            return sock
    raise last


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _request(parts: SplitResult, headers: Mapping[str, str]) -> bytes:
    """The GET request bytes: `headers` over soak's defaults, one connection per poll."""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    fields = {
        "Host": parts.netloc.rpartition("@")[2],
        "User-Agent": f"soak/{__version__}",
        "Accept": "application/json",
        "Accept-Encoding": "identity",
    }
    named = {name.lower(): name for name in fields}
    for name, value in headers.items():
        if any(c in f"{name}{value}" for c in "\r\n\0"):
            raise _Failed(f"health header {name!r} has a line break or NUL in it")
        if name.lower() != "connection":
            fields.pop(named.get(name.lower(), name), None)
            fields[name] = value
    fields["Connection"] = "close"
    lines = [f"GET {target} HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


class _Reader:
    """Buffered reads of one response, every recv bounded by the poll's deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = bytearray()
        self.eof = False
        self.started = False  # a whole line was read

    def _fill(self) -> bool:
        """Receive more into the buffer; False at the end of the stream."""
        if self.eof:
            return False
        self.sock.settimeout(_remaining(self.deadline))
        data = self.sock.recv(_CHUNK)
        self.eof = not data
        self.buffer += data
        return not self.eof

    def _line(self, limit: int, too_long: str) -> bytes:
        """The next line without its line end; _Failed(too_long) past `limit` bytes."""
        start = 0
        while (end := self.buffer.find(b"\n", start)) < 0:
            if len(self.buffer) > limit:
                raise _Failed(too_long)
            start = len(self.buffer)
            if not self._fill():
                raise _Failed(
                    "connection closed before the answer was complete"
                    if self.buffer or self.started
                    else "connection closed without an answer"
                )
        if end > limit:
            raise _Failed(too_long)
        self.started = True
        line = bytes(self.buffer[:end]).rstrip(b"\r")
        del self.buffer[: end + 1]
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise _Failed(f"connection closed after {len(self.buffer)} of {size} bytes")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def head(self) -> tuple[int, dict[str, str]]:
        """Status code and headers (names lower-case), interim 1xx answers skipped."""
        budget = MAX_HEAD_BYTES
        too_long = f"response head longer than {MAX_HEAD_BYTES} bytes"
        while True:
            line = self._line(budget, too_long)
            budget -= len(line) + 2
            match = _STATUS_LINE.fullmatch(line)
            if match is None:
                excerpt = line[:_EXCERPT].decode("latin-1")
                raise _Failed(f"not an HTTP answer: {excerpt!r}")
            headers: dict[str, str] = {}
            while line := self._line(budget, too_long):
                budget -= len(line) + 2
                name, colon, value = line.decode("latin-1").partition(":")
                if colon and not name[:1].isspace():
                    key = name.strip().lower()
                    value = value.strip()
                    headers[key] = f"{headers[key]}, {value}" if key in headers else value
            status = int(match[1])
            if not 100 <= status < 200 or status == 101:
                return status, headers

    def body(self, status: int, headers: Mapping[str, str]) -> bytes:
        """The body: chunked, by Content-Length, or up to the end of the stream."""
        if status in _NO_BODY or 100 <= status < 200:
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._chunked()
        length = headers.get("content-length")
        if length is None:
            while len(self.buffer) <= MAX_BODY_BYTES and self._fill():
                pass
            if len(self.buffer) > MAX_BODY_BYTES:
                raise _TooLarge
            return bytes(self.buffer)
        if not length.isdigit():
            raise _Failed(f"bad Content-Length {length[:_EXCERPT]!r}")
        if int(length) > MAX_BODY_BYTES:
            raise _TooLarge
        return self._exactly(int(length))

    def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self._line(_LINE_BYTES, f"chunk size line longer than {_LINE_BYTES} bytes")
            size = line.split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size):
                raise _Failed(f"bad chunk size {line[:_EXCERPT].decode('latin-1')!r}")
            if int(size, 16) == 0:
                return bytes(body)  # trailers, if any, are not waited for
            if len(body) + int(size, 16) > MAX_BODY_BYTES:
                raise _TooLarge
            body += self._exactly(int(size, 16))
            if self._line(_LINE_BYTES, "chunk not followed by a line end"):
                raise _Failed("chunk not followed by a line end")


def _absolute(url: str, location: str) -> str | None:
    """`location` resolved against `url`; None when it is no URL at all."""
    try:
        target = urljoin(url, location.strip())
        urlsplit(target).port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return target


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(scheme)


def _same_origin(a: str, b: str) -> bool:
    return _origin(a) == _origin(b)


def _attach_body(record: dict[str, Any], body: bytes) -> str | None:
    """Put the parsed JSON body into `record`; the error to record when there is none."""
    try:
        record["body"] = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        excerpt = body[:_EXCERPT].decode("utf-8", "replace")
        kind = "JSON nested too deep" if isinstance(exc, RecursionError) else "non-JSON body"
        return f"{kind}: {json.dumps(excerpt, ensure_ascii=False)}"  # quoted, not a Python repr
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


def named_fields(profile: Mapping[str, Any]) -> list[str]:
    """The /health field paths a (resolved) profile names: collector.loop_lag_field and
    the path of every health.<path>.<stat> criterion, general or per target.

    Tolerant of a malformed profile (an old manifest): what it cannot read it skips.
    """
    collector = profile.get("collector")
    criteria = profile.get("criteria")
    lag = collector.get("loop_lag_field") if isinstance(collector, dict) else None
    paths = [lag] if isinstance(lag, str) and lag else []
    checks: list[Any] = []
    if isinstance(criteria, dict):
        checks += _as_list(criteria.get("checks"))
        targets = criteria.get("targets")
        for table in targets.values() if isinstance(targets, dict) else ():
            checks += _as_list(table.get("checks")) if isinstance(table, dict) else []
    for check in checks:
        try:
            metric = parse_criterion(check).metric
        except ValueError:
            continue
        if isinstance(metric, HealthMetric):
            paths.append(metric.path)
    return list(dict.fromkeys(paths))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value] if value else []


class HealthBodies:
    """The /health bodies of one target as health.jsonl stores them: bounded.

    A body keeps its nesting (readers find `diagnostics.loop_lag_ms` where it was) but
    only objects, numbers and short strings, booleans and nulls: at most
    MAX_FIELDS_PER_POLL numbers and MAX_TEXT_FIELDS_PER_POLL others per body, the first
    ones; nothing deeper than MAX_DEPTH levels or with a path longer than MAX_PATH_CHARS;
    strings cut to MAX_STRING_CHARS; lists left out (soak reads none). Over the run, at
    most MAX_PATHS_PER_RUN distinct paths are stored: a body whose keys change every poll
    stores its first ones, then only those. The `keep` paths (named_fields) are stored
    whatever the caps. An integer too big for a float's precision is stored as a float.
    """

    def __init__(self, keep: Iterable[str] = ()) -> None:
        self.keep = frozenset(keep)
        parts = [path.split(".") for path in self.keep]
        self.keep_parents = {".".join(p[:i]) for p in parts for i in range(1, len(p))}
        self.paths: set[str] = set()

    def trim(self, body: Any) -> tuple[Any, dict[str, int]]:
        """(`body` as stored, fields dropped per BODY_CAPS name; empty when none were)."""
        dropped: dict[str, int] = {}
        if not isinstance(body, dict):
            return ([] if isinstance(body, list) else _leaf(body)), dropped
        budget = {
            "fields_per_poll": MAX_FIELDS_PER_POLL,
            "text_fields_per_poll": MAX_TEXT_FIELDS_PER_POLL,
        }
        return self._object(body, "", 1, budget, dropped), dropped

    def _object(
        self,
        value: dict[str, Any],
        prefix: str,
        depth: int,
        budget: dict[str, int],
        dropped: dict[str, int],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in value.items():
            path = prefix + key
            kind = type(item)
            if kind is list:
                continue
            named = path in self.keep or path in self.keep_parents
            cap = None
            if kind is dict:
                if named or (depth < MAX_DEPTH and len(path) <= MAX_PATH_CHARS):
                    inner = self._object(item, path + ".", depth + 1, budget, dropped)
                    if inner or not item:
                        out[key] = inner
                    continue
                cap = "depth" if depth >= MAX_DEPTH else "path_chars"
            elif not named:
                cap = self._admit(path, kind is int or kind is float, budget)
            if cap is None:
                out[key] = _leaf(item)
            else:
                dropped[cap] = dropped.get(cap, 0) + 1
        return out

    def _admit(self, path: str, numeric: bool, budget: dict[str, int]) -> str | None:
        """Count a field against the caps; the name of the cap it does not pass, or None."""
        cap = "fields_per_poll" if numeric else "text_fields_per_poll"
        if len(path) > MAX_PATH_CHARS:
            return "path_chars"
        if budget[cap] <= 0:
            return cap
        if path not in self.paths:
            if len(self.paths) >= MAX_PATHS_PER_RUN:
                return "paths_per_run"
            self.paths.add(path)
        budget[cap] -= 1
        return None


def _leaf(item: Any) -> Any:
    """A scalar as stored: strings cut, integers too big for a float's precision as floats."""
    if type(item) is str and len(item) > MAX_STRING_CHARS:
        return item[:MAX_STRING_CHARS]
    if type(item) is int and not -_BIG_INT < item < _BIG_INT:
        try:
            return float(item)
        except OverflowError:
            return None
    return item


def capped_message(target: str, dropped: Mapping[str, int]) -> str:
    """The health_capped event's sentence: which caps dropped how many fields."""
    words = {
        "fields_per_poll": f"more than {MAX_FIELDS_PER_POLL} numbers in one body",
        "text_fields_per_poll": f"more than {MAX_TEXT_FIELDS_PER_POLL} strings/booleans",
        "depth": f"nested deeper than {MAX_DEPTH} levels",
        "path_chars": f"paths longer than {MAX_PATH_CHARS} characters",
        "paths_per_run": f"more than {MAX_PATHS_PER_RUN} distinct fields in the run",
    }
    parts = ", ".join(f"{words[cap]} ({count:,} dropped)" for cap, count in dropped.items())
    return (
        f"{target}: /health body stored capped: {parts}. health.jsonl keeps the first "
        "fields and every field the profile names; reported once per target"
    )


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
