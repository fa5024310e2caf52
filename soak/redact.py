"""Redaction: a secret of the profile reaches no file and no terminal, whoever writes.

The values of `${ENV}` references in a profile are its secrets (`Profile.secrets`).
A `Redactor` masks them as `***` wherever they appear in a string, in the forms they
take when soak or a library echoes them: as given, JSON-escaped (a secret with `"`
or `\\` inside a JSON line), in a Python repr, and percent-encoded. It also masks the
secret parts of every URL in the text, known secret or not: secret-looking query
parameters (`token=`, `key=`, ...), a `user:pass@`, and any `#fragment` (a WebSocket
URL has no business sending one; what follows a `#` there is most likely the rest
of a token that contained one).

Redaction is a property of the writers, not of their callers: each process installs
one redactor from its resolved profile (`install`; the load and collector children
from the profile they get on stdin, `install_from_payload`), and every writer applies
it: `soak.rundir.JsonlWriter` to each line, `write_text_atomic` to each file (manifest,
reports), `pump` to the output of targets soak spawns, py-spy dumps, and
`guard_output` to stdout, stderr and the log handlers of a process's entry point.

Secrets shorter than `MIN_SECRET_LENGTH` characters are not masked inside free text:
a value such as a port (`${PORT}` = "8765") or a word ("admin") is as likely to be an
ordinary number or word of the records, and masking it would corrupt them (a
`"port": ***` line no longer parses). Such values are still masked where soak knows
they were put: the profile copy in the manifest, query parameters, passwords in URLs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import string
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, TextIO
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

MASK = "***"
#: Shorter secrets are not masked inside free text (see the module docstring).
MIN_SECRET_LENGTH = 6
#: Key of the secrets list in the profile a child process gets on stdin.
PAYLOAD_SECRETS = "secrets"
#: Longest line `pump` reads at once; a longer one is redacted in pieces of this size.
PUMP_LINE_BYTES = 65_536

SECRET_QUERY_KEYS = re.compile(r"token|key|secret|password|auth|sig", re.IGNORECASE)
SECRET_HEADER = re.compile(r"token|key|secret|password|auth|cookie", re.IGNORECASE)
#: Characters of a URL scheme (before "://").
_SCHEME_CHARS = frozenset(string.ascii_letters + string.digits + "+.-")
#: What follows "://" in free text or a JSON line: up to a quote, a backslash, a space
#: or a bracket, not counting trailing punctuation of the sentence around it.
_AFTER_SCHEME = re.compile(r"[^\s\"'<>\\`]*[^\s\"'<>\\`.,;:!?)\]}]")
#: Characters that no written form changes (percent-encoding, JSON, repr): a run of them
#: in a secret is in every form of it.
_KEPT = re.compile(r"[A-Za-z0-9_.~-]+")


@functools.lru_cache(maxsize=1024)  # the same URL comes back in every failed connect
def redact_url(url: str) -> str:
    """`url` with secret-looking query parameters, its userinfo and its fragment masked.

    A URL with nothing to mask comes back unchanged, character for character.
    """
    if not any(mark in url for mark in "?@#"):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # unparsable (a bad IPv6 host, say): keep only its scheme
        return url.split("://", 1)[0] + "://" + MASK
    query = "&".join(
        f"{key}={MASK}" if SECRET_QUERY_KEYS.search(key) else f"{key}{sep}{value}"
        for key, sep, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    netloc = MASK + "@" + parts.netloc.rsplit("@", 1)[1] if "@" in parts.netloc else parts.netloc
    fragment = MASK if parts.fragment else ""
    if (query, netloc, fragment) == (parts.query, parts.netloc, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`headers` with the value of every secret-looking header name (Authorization, ...) masked."""
    return {name: MASK if SECRET_HEADER.search(name) else value for name, value in headers.items()}


def _written_forms(secret: str) -> set[str]:
    """The ways `secret` shows up in soak's output: as is, percent-encoded, inside a Python
    repr, and each of those JSON-escaped (ASCII-only, as json.dumps writes by default, or not)."""
    plain = {secret, quote(secret, safe=""), quote_plus(secret, safe=""), repr(secret)[1:-1]}
    escaped = {json.dumps(form, ensure_ascii=a)[1:-1] for form in plain for a in (True, False)}
    return plain | escaped


def _mask_urls(text: str) -> str:
    """`text` with `redact_url` applied to every URL in it (a scheme, "://", the rest).

    Found from each "://" outwards rather than by one regex: a regex that starts at
    every letter of a line costs more than the JSON encoding of the line itself.
    """
    pieces, done = [], 0
    at = text.find("://")
    while at != -1:
        start = at
        while start > done and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        while start < at and not text[start].isalpha():  # a scheme starts with a letter
            start += 1
        rest = _AFTER_SCHEME.match(text, at + 3)
        if start < at and rest:
            pieces += [text[done:start], redact_url(text[start : rest.end()])]
            done = rest.end()
        at = text.find("://", max(at + 3, done))
    return "".join(pieces) + text[done:] if pieces else text


def _forms_regex(secret: str) -> re.Pattern[str]:
    """A regex of every written form of `secret`, longest first; an all-digit secret must
    not be part of a longer number (a timestamp, a byte count)."""
    forms = "|".join(map(re.escape, sorted(_written_forms(secret), key=len, reverse=True)))
    return re.compile(rf"(?<![0-9])(?:{forms})(?![0-9])" if secret.isdigit() else forms)


class Redactor:
    """Masks known secrets and the secret parts of URLs in strings (`text`) and data (`value`)."""

    def __init__(self, secrets: Iterable[str] = (), min_length: int = MIN_SECRET_LENGTH) -> None:
        """`min_length`: shorter secrets are ignored (1: mask all, as in the profile's copy)."""
        kept = sorted({s for s in secrets if len(s) >= min_length}, key=len, reverse=True)
        # Per secret, longest first (no secret half masked by a shorter one inside it): the
        # longest run of it that no form changes, and a regex of its forms. A text without
        # the run holds the secret in no form: most lines cost a substring test per secret.
        self._rules = [
            (max(_KEPT.findall(secret), key=len, default=""), _forms_regex(secret))
            for secret in kept
        ]

    def text(self, text: str) -> str:
        """`text` with every known secret and every URL's secret parts masked."""
        for probe, regex in self._rules:
            if probe in text:
                text = regex.sub(MASK, text)
        if "://" in text:
            text = _mask_urls(text)
        return text

    def binary(self, data: bytes) -> bytes:
        """`text` for bytes of unknown encoding: bytes that are not UTF-8 pass unchanged."""
        return self.text(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    def value(self, value: Any) -> Any:
        """A copy of JSON-like data (dicts, lists, strings) with `text` applied to every string,
        keys included; other values are returned as they are."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


_current = Redactor()


def install(secrets: Iterable[str]) -> Redactor:
    """Make a redactor of `secrets` this process's: every writer applies it from now on."""
    global _current
    _current = Redactor(secrets)
    return _current


def install_from_payload(profile: Mapping[str, Any]) -> Redactor:
    """Install the redactor of a child process from the profile it was given (its secrets
    travel under PAYLOAD_SECRETS, next to the sections)."""
    return install(profile.get(PAYLOAD_SECRETS) or ())


def current() -> Redactor:
    """This process's redactor (without `install`: URL rules only, no secrets)."""
    return _current


#: Control characters a terminal acts on (escape sequences, bells); tab, newline and
#: carriage return (the status line) stay.
_TERMINAL_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _visible(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


class _RedactingStream:
    """A text stream that writes what it is given through the process redactor, with the
    control characters shown as \\xNN: a thread named ESC[2J must not clear the screen."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_TERMINAL_CONTROLS.sub(_visible, current().text(text)))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, flush, fileno, ...
        return getattr(self._stream, name)


class _RedactingFormatter(logging.Formatter):
    """Formats a log record as `inner` does, then redacts it (exception text included)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return current().text(self.inner.format(record))


def guard_output() -> None:
    """Send this process's stdout, stderr and root log handlers through the process redactor.

    Called once by each entry point (the CLI, the load and collector children) after
    its logging is set up; the redactor installed later still applies.
    """
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _RedactingStream):
            setattr(sys, name, _RedactingStream(stream))
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, _RedactingFormatter):
            handler.setFormatter(_RedactingFormatter(handler.formatter))


def pump(source: IO[bytes], path: Path) -> threading.Thread:
    """Copy `source` (a pipe) line by line to the end of `path`, redacted, until its EOF.

    For the output of processes soak starts but does not control (spawned targets),
    whose argv or log may carry a secret. Each line is written at once, so the log can
    be followed while the target runs. A log that cannot be written (a full disk) is
    given up, but the pipe is still drained: a target must never block on a full pipe.
    Returns the (daemon) thread doing it.
    """

    def copy() -> None:
        out: IO[bytes] | None = None
        with contextlib.suppress(OSError):
            out = open(path, "ab", buffering=0)  # noqa: SIM115 - closed after the last line
        with source:
            for line in iter(lambda: source.readline(PUMP_LINE_BYTES), b""):
                if out is None:
                    continue
                try:
                    out.write(current().binary(line))
                except OSError:
                    out.close()  # unbuffered: nothing left to flush, closing cannot fail
                    out = None
        if out is not None:
            out.close()

    thread = threading.Thread(target=copy, name=f"soak-pump-{path.name}", daemon=True)
    thread.start()
    return thread
