"""Chat metrics for Prometheus, from the run directory's chats.jsonl, beside the collector's.

The load process writes one aggregate per target per interval to chats.jsonl
(soak.load.record); the collector process follows that file (`JsonlTail`: only
the bytes appended since the last scrape are read) and adds the intervals up
into run totals (`ChatMetrics`), served on the same /metrics endpoint as the
process and /health samples. A `soak collect` run has no chats.jsonl: then
there are no chat series, only the feed's own counters at 0.

Exposed per target:

- `soak_chat_turns_total{outcome}`: turns ended, by outcome (ok, stall,
  first_token_timeout, error, disconnect, violation, mismatch). Stalls are
  `outcome="stall"`; there is no separate stall counter.
- `soak_chat_turns_excluded_total{outcome}`: timeouts soak's own load process
  caused by standing still; in no other counter (see docs/run-directory.md).
- `soak_chat_turns_started_total`, `soak_chat_connects_total`,
  `soak_chat_tokens_total`, `soak_chat_frames_total`, `soak_chat_pings_total`,
  `soak_chat_pings_lost_total`: counters.
- `soak_chat_turns_in_flight`, `soak_chat_connections` (chats open),
  `soak_chat_stuck`: gauges as of the latest interval.
- `soak_chat_ttft_seconds`, `soak_chat_reply_seconds`, `soak_chat_connect_seconds`,
  `soak_chat_ping_seconds`: histograms re-bucketed from soak's 5 % log buckets onto
  `LE_BUCKETS`; each recorded bucket counts at its representative latency
  (soak.histogram.bucket_value, within 2.5 %), and `_sum` is estimated the same way.
  TTFT and reply time are recorded for ok turns only.
- `soak_chat_last_interval_timestamp_seconds`: Unix time of the latest interval.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak.histogram import bucket_value

#: Upper bounds (`le`) of the exposed histogram buckets, in seconds (+Inf follows).
LE_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
    1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
#: A line longer than this (bytes) without a newline is dropped, not buffered further.
MAX_LINE_BYTES = 1 << 20
#: Bytes read per poll at most: a scrape of a resumed week-long run catches up over a
#: few scrapes instead of parsing ~100 MB at once (~17 MB per target per day at 5 s).
MAX_READ_BYTES = 16 << 20
_CHUNK = 1 << 20

#: (record field, metric name, help) of the histograms, all in seconds.
HISTOGRAMS = (
    ("ttft_hist", "soak_chat_ttft_seconds", "Time to first token of ok turns"),
    ("reply_hist", "soak_chat_reply_seconds", "Reply time (request to done) of ok turns"),
    ("connect_hist", "soak_chat_connect_seconds", "Time to connect and finish the handshake"),
    ("ping_hist", "soak_chat_ping_seconds", "Round trip of the protocol's ping probe"),
)
#: (record field, metric name without _total, help) of the plain counters.
COUNTERS = (
    ("started", "soak_chat_turns_started", "Turns begun"),
    ("connects", "soak_chat_connects", "Connections opened"),
    ("tokens", "soak_chat_tokens", "Tokens received"),
    ("frames", "soak_chat_frames", "Frames received"),
    ("pings", "soak_chat_pings", "Ping probes sent"),
    ("pings_lost", "soak_chat_pings_lost", "Ping probes unanswered in time"),
)
#: (record field, metric name, help) of the gauges of the latest interval.
GAUGES = (
    ("in_flight", "soak_chat_turns_in_flight", "Turns running at the latest interval's end"),
    ("connections", "soak_chat_connections", "Chats (connections) open at the latest interval"),
    ("stuck", "soak_chat_stuck", "Chats stuck: their last turns all failed"),
)


class JsonlTail:
    """Follows an append-only JSON Lines file: `poll` returns the records appended since
    the previous call, reading only those bytes.

    A file that does not exist yet has no records; a torn last line waits for the rest
    of it; lines that do not parse (or are not objects) are counted in `skipped`. A file
    that shrank or was replaced is read again from its start (`restarts` counts that).
    At most `max_read` bytes are read per poll; the rest waits for the next one.
    """

    def __init__(self, path: Path, max_read: int = MAX_READ_BYTES) -> None:
        self.path = path
        self.max_read = max_read
        self.offset = 0
        self.skipped = 0
        self.restarts = 0
        self._partial = b""
        self._dropping = False  # inside an over-long line: drop up to its newline
        self._inode: int | None = None

    def poll(self) -> list[dict[str, Any]]:
        """The whole records appended since the last poll (OSError when unreadable)."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return []
        records: list[dict[str, Any]] = []
        with handle:
            stat = os.fstat(handle.fileno())
            if stat.st_size < self.offset or self._inode not in (None, stat.st_ino):
                self.restarts += 1
                self.offset, self._partial, self._dropping = 0, b"", False
            self._inode = stat.st_ino
            handle.seek(self.offset)
            budget = self.max_read
            while budget > 0 and (chunk := handle.read(min(_CHUNK, budget))):
                budget -= len(chunk)
                self.offset += len(chunk)
                self._split(chunk, records)
        return records

    def _split(self, chunk: bytes, records: list[dict[str, Any]]) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if self._dropping:
                self._dropping = False  # the tail end of an over-long line
                continue
            self._parse(line, records)
        if len(self._partial) > MAX_LINE_BYTES:
            self.skipped += 1
            self._partial, self._dropping = b"", True

    def _parse(self, line: bytes, records: list[dict[str, Any]]) -> None:
        if not line.strip():
            return
        try:
            record = json.loads(line)
        except ValueError:  # also not UTF-8
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            self.skipped += 1


def _count(value: Any) -> float:
    """A count field of a record: a non-negative number, anything else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return max(float(value), 0.0)


@dataclass
class ChatTotals:
    """One target's chat aggregates added up over the run (latencies in seconds)."""

    outcomes: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    #: record field -> cumulative count per exposed bucket (LE_BUCKETS then +Inf)
    buckets: dict[str, list[float]] = field(default_factory=dict)
    #: record field -> [estimated sum in seconds, count]
    sums: dict[str, list[float]] = field(default_factory=dict)
    last_t: float | None = None

    def add(self, record: dict[str, Any]) -> None:
        """Add one chats.jsonl interval record."""
        for into, key in ((self.outcomes, "outcomes"), (self.excluded, "excluded")):
            counts = record.get(key)
            if isinstance(counts, dict):
                for outcome, value in counts.items():
                    into[str(outcome)] = into.get(str(outcome), 0.0) + _count(value)
        for key, _, _ in COUNTERS:
            self.counters[key] = self.counters.get(key, 0.0) + _count(record.get(key))
        for key, _, _ in GAUGES:
            if key in record:
                self.gauges[key] = _count(record.get(key))
        for key, _, _ in HISTOGRAMS:
            hist = record.get(key)
            if isinstance(hist, dict):
                self._add_histogram(key, hist)
        t = record.get("t")
        if isinstance(t, int | float) and not isinstance(t, bool):
            self.last_t = max(self.last_t or t, t)

    def _add_histogram(self, key: str, hist: dict[Any, Any]) -> None:
        per_bucket = self.buckets.setdefault(key, [0.0] * (len(LE_BUCKETS) + 1))
        total = self.sums.setdefault(key, [0.0, 0.0])
        for index, value in hist.items():
            count = _count(value)
            try:
                seconds = bucket_value(int(index))
            except (TypeError, ValueError, OverflowError):
                continue
            if not count:
                continue
            per_bucket[bisect.bisect_left(LE_BUCKETS, seconds)] += count
            total[0] += seconds * count
            total[1] += count


class ChatMetrics:
    """A prometheus_client collector of the chat totals in a run directory's chats.jsonl.

    Each scrape first reads what the load process appended since the previous one. An
    error reading the file goes to `on_error` (a message) and the scrape serves what is
    known: the chat metrics never cost the collector its process metrics.
    """

    def __init__(self, path: Path, on_error: Callable[[str], None] | None = None) -> None:
        self.tail = JsonlTail(path)
        self.on_error = on_error
        self.targets: dict[str, ChatTotals] = {}
        self.records = 0
        self.errors = 0
        self._lock = threading.Lock()

    def update(self) -> None:
        """Read the records appended since the last update into the totals."""
        with self._lock:
            restarts = self.tail.restarts
            try:
                records = self.tail.poll()
            except Exception as exc:  # noqa: BLE001 - a scrape must never fail on the file
                self.errors += 1
                if self.on_error:
                    self.on_error(f"cannot read {self.tail.path}: {type(exc).__name__}: {exc}")
                return
            if self.tail.restarts != restarts:  # the file started over: so do the totals
                self.targets.clear()
            for record in records:
                target = record.get("target")
                if not isinstance(target, str):
                    self.tail.skipped += 1
                    continue
                self.targets.setdefault(target, ChatTotals()).add(record)
                self.records += 1

    def collect(self) -> Iterator[Any]:
        """Called by prometheus_client on every scrape: read what is new, then the totals."""
        self.update()
        with self._lock:
            return iter(self._families())

    def _families(self) -> list[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        targets = self.targets
        turns = CounterMetricFamily(
            "soak_chat_turns", "Chat turns ended, by outcome (stalls: outcome=stall)",
            labels=["target", "outcome"],
        )  # fmt: skip
        excluded = CounterMetricFamily(
            "soak_chat_turns_excluded",
            "Timed-out turns soak's own load process caused by standing still (not in turns)",
            labels=["target", "outcome"],
        )
        for name, totals in targets.items():
            for outcome, value in totals.outcomes.items():
                turns.add_metric([name, outcome], value)
            for outcome, value in totals.excluded.items():
                excluded.add_metric([name, outcome], value)
        families: list[Any] = [turns, excluded]
        for key, metric, doc in COUNTERS:
            counter = CounterMetricFamily(metric, doc, labels=["target"])
            for name, totals in targets.items():
                counter.add_metric([name], totals.counters.get(key, 0.0))
            families.append(counter)
        for key, metric, doc in GAUGES:
            gauge = GaugeMetricFamily(metric, doc, labels=["target"])
            for name, totals in targets.items():
                if key in totals.gauges:
                    gauge.add_metric([name], totals.gauges[key])
            families.append(gauge)
        bounds = (*map(str, LE_BUCKETS), "+Inf")
        for key, metric, doc in HISTOGRAMS:
            histogram = HistogramMetricFamily(metric, doc, labels=["target"])
            for name, totals in targets.items():
                per_bucket = totals.buckets.get(key, [0.0] * len(bounds))
                cumulative = list(zip(bounds, itertools.accumulate(per_bucket), strict=True))
                histogram.add_metric([name], cumulative, totals.sums.get(key, [0.0])[0])
            families.append(histogram)
        last = GaugeMetricFamily(
            "soak_chat_last_interval_timestamp_seconds",
            "Unix time of the latest chat interval recorded",
            labels=["target"],
        )
        for name, totals in targets.items():
            if totals.last_t is not None:
                last.add_metric([name], totals.last_t)
        families.append(last)
        feed = (
            ("soak_chat_records", "chats.jsonl interval records read", self.records),
            (
                "soak_chat_records_skipped",
                "chats.jsonl lines that did not parse",
                self.tail.skipped,
            ),
            ("soak_chat_read_errors", "Failed reads of chats.jsonl", self.errors),
        )
        families += [CounterMetricFamily(name, doc, value=value) for name, doc, value in feed]
        return families
