"""Chat aggregates: outcome totals, merged latency percentiles, idle and busy intervals,
cumulative work (replies, connects) for growth per unit of work, idle periods."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from soak.analyze.load import OUTCOMES
from soak.histogram import FLOOR_S, GROWTH

#: Sample states returned by `classify_samples`.
UNKNOWN, IDLE, BUSY = 0, 1, 2
#: Idle periods shorter than this many process samples are too short to measure.
MIN_IDLE_SAMPLES = 3


def outcome_totals(chats: pd.DataFrame) -> dict[str, int]:
    """Turns started and ended, and turns per outcome, over the whole frame."""
    totals = {name: int(chats[name].sum()) for name in OUTCOMES}
    totals["turns"] = int(chats["turns"].sum())
    totals["started"] = int(chats["started"].sum())
    return totals


@dataclass(frozen=True)
class HistogramColumn:
    """A column of sparse histograms (one {bucket: count} per chats row) as flat arrays.

    Merging histograms dict by dict costs seconds for a week of intervals; grouped
    quantiles over these arrays are one sort and one search (same buckets, same answers
    as soak.histogram.quantile).
    """

    rows: np.ndarray
    buckets: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, hists: Iterable[Mapping[str | int, int]]) -> HistogramColumn:
        rows, buckets, counts = [], [], []
        for row, hist in enumerate(hists):
            for bucket, count in hist.items():
                if type(count) is not int and type(count) is not float:
                    continue  # a damaged record: not a count
                try:
                    buckets.append(int(bucket))
                except ValueError:
                    continue
                rows.append(row)
                counts.append(count)
        return cls(
            np.array(rows, dtype=np.int64),
            np.array(buckets, dtype=np.int64),
            np.array(counts, dtype=float),
        )

    def quantiles(self, groups: np.ndarray, n_groups: int, q: float) -> np.ndarray:
        """The q-quantile (s) of the merged histograms of each group; NaN for empty groups.

        groups: the group of each row (0 .. n_groups - 1).
        """
        out = np.full(n_groups, np.nan)
        keep = self.counts > 0
        if not keep.any():
            return out
        group = np.asarray(groups)[self.rows[keep]]
        bucket, count = self.buckets[keep], self.counts[keep]
        order = np.lexsort((bucket, group))
        group, bucket, count = group[order], bucket[order], count[order]
        seen = np.cumsum(count)
        totals = np.bincount(group, count, n_groups)
        before = np.concatenate([[0.0], np.cumsum(totals)[:-1]])
        present = np.flatnonzero(totals > 0)
        rank = before[present] + q * (totals[present] - 1)
        index = np.minimum(np.searchsorted(seen, rank, side="right"), len(seen) - 1)
        out[present] = FLOOR_S * GROWTH ** (bucket[index] + 0.5)
        return out


def latency_stats(
    hists: Iterable[Mapping[str | int, int]], qs: Iterable[float]
) -> tuple[dict[float, float | None], int]:
    """(quantiles in seconds, None when empty; how many latencies) of merged sparse
    histograms."""
    column = HistogramColumn.of(hists)
    groups = np.zeros(int(column.rows.max()) + 1 if len(column.rows) else 0, dtype=np.int64)
    values = {q: float(column.quantiles(groups, 1, q)[0]) for q in qs}
    count = int(column.counts[column.counts > 0].sum())
    return {q: None if np.isnan(v) else v for q, v in values.items()}, count


def idle_intervals(chats: pd.DataFrame) -> np.ndarray:
    """Per chats row: True when the interval was idle.

    Idle means no turn started, ended or in flight in the interval, and the previous
    interval of the target also ended with nothing in flight.
    """
    in_flight = chats["in_flight"].to_numpy(dtype=float)
    quiet = (chats["started"].to_numpy() == 0) & (chats["turns"].to_numpy() == 0) & (in_flight == 0)
    previous_clear = np.zeros(len(chats), dtype=bool)
    previous_clear[1:] = in_flight[:-1] == 0
    return quiet & previous_clear


def active_intervals(chats: pd.DataFrame) -> np.ndarray:
    """Per chats row: True when a turn started, ended or was in flight in the interval."""
    return (
        (chats["started"].to_numpy() > 0)
        | (chats["turns"].to_numpy() > 0)
        | (chats["in_flight"].to_numpy(dtype=float) > 0)
    )


def classify_samples(t: np.ndarray, chats: pd.DataFrame) -> np.ndarray:
    """State (UNKNOWN / IDLE / BUSY) of each sample time t (Unix s).

    A sample belongs to the chats interval (t_end - interval_s, t_end] that holds it;
    samples outside every interval stay UNKNOWN.
    """
    t = np.asarray(t, dtype=float)
    states = np.full(len(t), UNKNOWN, dtype=np.int8)
    if chats.empty or not len(t):
        return states
    ends = chats["t"].to_numpy(dtype=float)
    widths = chats["interval_s"].to_numpy(dtype=float, na_value=0.0)
    row = np.searchsorted(ends, t, side="left")
    inside = row < len(ends)
    row = np.minimum(row, len(ends) - 1)
    inside &= t > ends[row] - widths[row]
    states[inside & idle_intervals(chats)[row]] = IDLE
    states[inside & active_intervals(chats)[row]] = BUSY
    return states


def interval_quantiles(
    chats: pd.DataFrame, column: str, qs: tuple[float, ...], max_points: int
) -> pd.DataFrame:
    """Per-interval latency quantiles (s) of histogram `column` for plotting.

    Runs of consecutive intervals are merged so at most `max_points` rows come back;
    columns: elapsed (s, end of the last merged interval) and one per q ("p50", "p95").
    """
    n = len(chats)
    per_bin = max(1, -(-n // max_points))
    groups = np.arange(n) // per_bin
    n_groups = -(-n // per_bin)
    column_data = HistogramColumn.of(chats[column])
    elapsed = chats["elapsed"].to_numpy(dtype=float)
    frame = pd.DataFrame(
        {"elapsed": elapsed[np.minimum((np.arange(n_groups) + 1) * per_bin, n) - 1]}
    )
    for q in qs:
        frame[f"p{round(q * 100)}"] = column_data.quantiles(groups, n_groups, q)
    return frame.astype(float)


def cumulative_at(chats: pd.DataFrame, column: str, elapsed: np.ndarray) -> np.ndarray:
    """How many `column` (ok replies, connects) had happened by each elapsed second.

    Linear within each chats interval, 0 before the first: the x of growth-per-reply fits.
    """
    elapsed = np.asarray(elapsed, dtype=float)
    if chats.empty:
        return np.zeros(len(elapsed))
    ends = chats["elapsed"].to_numpy(dtype=float)
    first_start = ends[0] - float(np.nan_to_num(chats["interval_s"].iloc[0]))
    counts = np.concatenate([[0.0], np.cumsum(chats[column].to_numpy(dtype=float))])
    return np.interp(elapsed, np.concatenate([[first_start], ends]), counts)


@dataclass(frozen=True)
class IdlePeriod:
    """Consecutive idle process samples (or the samples before the load began).

    cpu_percent is the CPU the process used over the period, from its CPU-time
    counters (percent of one core; 10 ms resolution over the whole period, where one
    sample's percentage is a multiple of 1/(100 × interval)), or the samples' median
    where the counters are missing; replies_before counts the ok replies that had
    finished when the period began.
    """

    start_s: float
    end_s: float
    samples: int
    cpu_percent: float
    replies_before: float
    before_load: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "samples": self.samples,
            "cpu_percent": self.cpu_percent,
            "replies_before": self.replies_before,
            "before_load": self.before_load,
        }


def _cpu_seconds(process: pd.DataFrame) -> np.ndarray:
    """Cumulative CPU seconds (user + system) of each process sample; NaN where missing."""
    if "cpu_user_s" not in process or "cpu_system_s" not in process:
        return np.full(len(process), np.nan)
    user = process["cpu_user_s"].to_numpy(dtype=float)
    system = process["cpu_system_s"].to_numpy(dtype=float)
    return user + system


def idle_periods(
    process: pd.DataFrame, states: np.ndarray, chats: pd.DataFrame
) -> list[IdlePeriod]:
    """Idle periods of at least MIN_IDLE_SAMPLES samples, in time order.

    The samples before the first chats interval began count as one (before_load): the
    baseline an orphaned ticker's idle CPU climbs from.
    """
    if chats.empty or process.empty:
        return []
    elapsed = process["elapsed"].to_numpy(dtype=float)
    cpu = process["cpu_percent"].to_numpy(dtype=float)
    cpu_s = _cpu_seconds(process)
    pid = process["pid"].to_numpy(dtype=float, na_value=-1.0)
    load_start = float(chats["elapsed"].iloc[0] - np.nan_to_num(chats["interval_s"].iloc[0]))
    before = (elapsed < load_start) & (states == UNKNOWN)
    idle = states == IDLE
    periods = []
    for mask, is_before in ((before, True), (idle, False)):
        edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
        for start, stop in zip(
            np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True
        ):
            values = cpu[start:stop][np.isfinite(cpu[start:stop])]
            if len(values) < MIN_IDLE_SAMPLES:
                continue
            last = stop - 1
            span = elapsed[last] - elapsed[start]
            used = cpu_s[last] - cpu_s[start]
            exact = span > 0 and pid[start] == pid[last] and np.isfinite(used) and used >= 0
            periods.append(
                IdlePeriod(
                    start_s=float(elapsed[start]),
                    end_s=float(elapsed[last]),
                    samples=len(values),
                    cpu_percent=round(float(100 * used / span), 2)
                    if exact
                    else float(np.median(values)),
                    replies_before=float(cumulative_at(chats, "ok", elapsed[start : start + 1])[0]),
                    before_load=is_before,
                )
            )
    return sorted(periods, key=lambda period: period.start_s)
