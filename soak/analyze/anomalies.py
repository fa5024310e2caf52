"""Anomaly records grouped by kind and message: "stall: no terminal frame within N s" x 412
instead of 412 rows that differ only in their numbers.

A group's message is the record's detail (with the close code and reason of a disconnect)
with every id (a word of 6+ letters and digits mixed: nonces, request and completion ids)
folded to ID and every number to N, so the same failure at other times, lengths or ids is
one group. At most MAX_GROUPS groups per target are told apart, the first ones seen; later
messages count in one "(other messages)" group per kind, so the cost is bounded whatever a
server writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: Groups told apart per target; records of later messages are counted as OTHER.
MAX_GROUPS = 50
#: The message of the records whose own message came after MAX_GROUPS groups.
OTHER = "(other messages)"
#: Characters of a group's message kept.
MESSAGE_CHARS = 160

_ID = re.compile(r"\b(?=[A-Za-z_]*\d)(?=\w*[A-Za-z])\w{6,}\b")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SPACE = re.compile(r"\s+")


def kind_of(record: dict[str, Any]) -> str:
    """ "kind" or "kind/subkind", with " (excluded)" for a turn soak itself caused to fail."""
    kind, subkind = str(record.get("kind")), record.get("subkind")
    label = f"{kind}/{subkind}" if subkind else kind
    return f"{label} (excluded)" if record.get("excluded") else label


def message_of(record: dict[str, Any]) -> str:
    """The record's detail, a disconnect's close code and reason first, ids as ID, numbers
    as N."""
    detail = record.get("detail")
    text = str(detail) if isinstance(detail, str) else ""
    if record.get("kind") == "disconnect":
        code, reason = record.get("close_code"), record.get("close_reason")
        close = " ".join(str(part) for part in (code, reason) if part not in (None, ""))
        text = f"close {close or 'without a close frame'}; {text}".rstrip("; ")
    text = _SPACE.sub(" ", _NUMBER.sub("N", _ID.sub("ID", text))).strip()
    return text[:MESSAGE_CHARS] + ("…" if len(text) > MESSAGE_CHARS else "")


@dataclass
class Group:
    """Records of one kind and message: how many, first and last time (Unix s), one id."""

    kind: str
    message: str
    count: int
    first_t: float | None
    last_t: float | None
    example: str | None


class AnomalyGroups:
    """Counts one target's anomaly records by kind and message (bounded: MAX_GROUPS)."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str], Group] = {}

    def add(self, record: dict[str, Any]) -> None:
        key = (kind_of(record), message_of(record))
        if key not in self.groups and len(self.groups) >= MAX_GROUPS:
            key = (key[0], OTHER)
        t = record.get("t")
        t = float(t) if isinstance(t, int | float) and not isinstance(t, bool) else None
        group = self.groups.get(key)
        if group is None:
            example = record.get("request_id") or record.get("session")
            self.groups[key] = Group(*key, 1, t, t, None if example is None else str(example))
            return
        group.count += 1
        if t is not None:
            group.first_t = t if group.first_t is None else min(group.first_t, t)
            group.last_t = t if group.last_t is None else max(group.last_t, t)

    def to_list(self, started_at: float) -> list[dict[str, Any]]:
        """The groups, most records first: kind, message, count, first_s and last_s (elapsed
        seconds), example (a request id or session of one of them)."""
        ordered = sorted(self.groups.values(), key=lambda g: (-g.count, g.first_t or 0.0))
        return [
            {
                "kind": group.kind,
                "message": group.message,
                "count": group.count,
                "first_s": None if group.first_t is None else group.first_t - started_at,
                "last_s": None if group.last_t is None else group.last_t - started_at,
                "example": group.example,
            }
            for group in ordered
        ]
