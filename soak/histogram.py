"""Mergeable latency histograms with log-spaced buckets.

Per-interval chat aggregates store latencies as sparse histograms instead of
raw samples, so a day at 500 replies/s stays small on disk, workers can merge
their counts, and percentiles over any span of intervals stay accurate to
about 2.5% (the bucket width).
"""

import math
from collections.abc import Iterable, Mapping

#: Lower edge of bucket 0, in seconds (0.1 ms); smaller values land in bucket 0.
FLOOR_S = 1e-4
#: Each bucket is 5% wider than the previous one.
GROWTH = 1.05
_LOG_GROWTH = math.log(GROWTH)


def bucket_of(seconds: float) -> int:
    """Index of the bucket that holds a latency in seconds."""
    if seconds <= FLOOR_S:
        return 0
    return int(math.log(seconds / FLOOR_S) / _LOG_GROWTH)


def bucket_value(index: int) -> float:
    """Representative latency of a bucket: its geometric midpoint, in seconds."""
    return FLOOR_S * GROWTH ** (index + 0.5)


class Histogram:
    """Counts of latencies per bucket; `to_json` gives a compact {index: count} dict."""

    __slots__ = ("counts", "total", "max_s")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.max_s = 0.0

    def add(self, seconds: float) -> None:
        index = bucket_of(seconds)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.total += 1
        self.max_s = max(self.max_s, seconds)

    def merge(self, counts: Mapping[str | int, int]) -> None:
        for index, count in counts.items():
            key = int(index)
            self.counts[key] = self.counts.get(key, 0) + int(count)
            self.total += int(count)

    def quantile(self, q: float) -> float | None:
        return quantile(self.counts, q)

    def to_json(self) -> dict[str, int]:
        return {str(index): count for index, count in sorted(self.counts.items())}


def merge_all(histograms: Iterable[Mapping[str | int, int]]) -> dict[int, int]:
    """Sum several {index: count} histograms into one."""
    merged: dict[int, int] = {}
    for hist in histograms:
        for index, count in hist.items():
            merged[int(index)] = merged.get(int(index), 0) + int(count)
    return merged


def quantile(counts: Mapping[str | int, int], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram in seconds, or None when it is empty."""
    items = sorted((int(index), int(count)) for index, count in counts.items() if int(count) > 0)
    total = sum(count for _, count in items)
    if total == 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for index, count in items:
        seen += count
        if seen > rank:
            return bucket_value(index)
    return bucket_value(items[-1][0])
