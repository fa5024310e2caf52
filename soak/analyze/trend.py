"""Robust trends: Theil–Sen slopes with Sen's confidence interval, segments, time to limit.

All x values are elapsed seconds; slopes are per second (`Fit.per_hour` converts).
Pure numpy: a long series is first reduced to at most `MAX_FIT_POINTS` bin medians,
so a week of 1 s samples (600,000 points) fits in well under a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

#: Series longer than this are reduced to this many bin medians before fitting.
MAX_FIT_POINTS = 1200
#: Fewer samples than this after the warm-up give no trend (too little to tell).
MIN_FIT_SAMPLES = 10
#: The thread count at which trouble is expected when the kernel allows more.
DEFAULT_THREADS_LIMIT = 4096
#: Two process samples more than this apart in create_time belong to different processes (s).
_CREATE_TIME_TOLERANCE_S = 0.5


@dataclass(frozen=True)
class Fit:
    """A straight line y = intercept + slope * x fitted over [x_start, x_end] (seconds)."""

    slope: float
    intercept: float
    low: float
    high: float
    n: int
    x_start: float
    x_end: float

    @property
    def per_hour(self) -> float:
        """Growth per hour (slope * 3600)."""
        return self.slope * 3600.0

    @property
    def ci_per_hour(self) -> tuple[float, float]:
        """The 95% confidence interval of the growth per hour."""
        return self.low * 3600.0, self.high * 3600.0

    def at(self, x: np.ndarray | float) -> np.ndarray | float:
        """The fitted value at elapsed second(s) x."""
        return self.intercept + self.slope * np.asarray(x, dtype=float)


def downsample(
    x: np.ndarray,
    y: np.ndarray,
    max_points: int,
    stat: Callable[..., np.ndarray] = np.nanmedian,
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce (x, y) to at most `max_points` bins of consecutive samples.

    Each bin becomes (median x, stat of y); short series are returned as they are.
    """
    n = len(x)
    if n <= max_points:
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    per_bin = -(-n // max_points)
    bins = -(-n // per_bin)
    pad = bins * per_bin - n
    xs = np.concatenate([np.asarray(x, dtype=float), np.full(pad, np.nan)]).reshape(bins, per_bin)
    ys = np.concatenate([np.asarray(y, dtype=float), np.full(pad, np.nan)]).reshape(bins, per_bin)
    return np.nanmedian(xs, axis=1), stat(ys, axis=1)


def theil_sen(
    x: np.ndarray,
    y: np.ndarray,
    max_points: int = MAX_FIT_POINTS,
    confidence: float = 0.95,
) -> Fit | None:
    """Theil–Sen line through (x, y) with Sen's confidence interval for the slope.

    Non-finite points are dropped; None when fewer than 3 points or no spread in x.
    The interval uses the variance of Kendall's S with the correction for ties in y
    (as scipy.stats.theilslopes does), computed on the binned series.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) < 3 or x.max() == x.min():
        return None
    xb, yb = downsample(x, y, max_points)
    i, j = np.triu_indices(len(xb), 1)
    dx = xb[j] - xb[i]
    distinct = dx != 0
    slopes = (yb[j] - yb[i])[distinct] / dx[distinct]
    count = len(slopes)
    n = len(xb)
    _, ties = np.unique(yb, return_counts=True)
    variance = (n * (n - 1) * (2 * n + 5) - np.sum(ties * (ties - 1) * (2 * ties + 5))) / 18.0
    spread = NormalDist().inv_cdf(0.5 + confidence / 2) * np.sqrt(max(variance, 0.0))
    low_rank = min(max(int(round((count - spread) / 2)) - 1, 0), count - 1)
    high_rank = min(max(int(round((count + spread) / 2)), 0), count - 1)
    mid_low, mid_high = (count - 1) // 2, count // 2
    ordered = np.partition(slopes, sorted({low_rank, mid_low, mid_high, high_rank}))
    slope = float((ordered[mid_low] + ordered[mid_high]) / 2)
    intercept = float(np.median(yb - slope * xb))
    return Fit(
        slope=slope,
        intercept=intercept,
        low=float(ordered[low_rank]),
        high=float(ordered[high_rank]),
        n=len(x),
        x_start=float(x.min()),
        x_end=float(x.max()),
    )


@dataclass(frozen=True)
class Segment:
    """Consecutive process samples of one process (same pid and create_time).

    `start`/`stop` are row positions in the process frame ([start, stop));
    `t_start`/`t_end` are the elapsed seconds of its first and last sample.
    """

    index: int
    pid: int | None
    start: int
    stop: int
    t_start: float
    t_end: float

    @property
    def duration_s(self) -> float:
        return self.t_end - self.t_start


def find_segments(process: pd.DataFrame) -> list[Segment]:
    """Split process samples (sorted by time, with pid/create_time/elapsed) at restarts."""
    if process.empty:
        return []
    pid = process["pid"].to_numpy(dtype=float, na_value=-1.0)
    created = process["create_time"].to_numpy(dtype=float, na_value=-1.0)
    elapsed = process["elapsed"].to_numpy(dtype=float)
    changed = np.ones(len(pid), dtype=bool)
    changed[1:] = (pid[1:] != pid[:-1]) | (
        np.abs(created[1:] - created[:-1]) > _CREATE_TIME_TOLERANCE_S
    )
    starts = np.flatnonzero(changed)
    stops = np.append(starts[1:], len(pid))
    return [
        Segment(
            index=k,
            pid=int(pid[a]) if pid[a] >= 0 else None,
            start=int(a),
            stop=int(b),
            t_start=float(elapsed[a]),
            t_end=float(elapsed[b - 1]),
        )
        for k, (a, b) in enumerate(zip(starts, stops, strict=True))
    ]


def headline_segment(segments: list[Segment]) -> Segment | None:
    """The segment the headline trend comes from: the longest, the later one on a tie."""
    if not segments:
        return None
    return max(segments, key=lambda seg: (seg.duration_s, seg.index))


def hours_to_limit(current: float | None, per_hour: float | None, limit: float) -> float | None:
    """Hours until a series at `current` growing `per_hour` reaches `limit`; None if not growing."""
    if current is None or per_hour is None or per_hour <= 0:
        return None
    return max(0.0, (limit - current) / per_hour)


def threads_limit(threads_max_path: Path = Path("/proc/sys/kernel/threads-max")) -> int:
    """4096, or the kernel's threads-max when that is smaller."""
    try:
        kernel = int(threads_max_path.read_text().strip())
    except (OSError, ValueError):
        return DEFAULT_THREADS_LIMIT
    return min(DEFAULT_THREADS_LIMIT, kernel) if kernel > 0 else DEFAULT_THREADS_LIMIT
