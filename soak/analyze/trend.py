"""Robust trends: Theil–Sen slopes with Sen's confidence interval, shapes, segments, limits.

All x values are elapsed seconds; slopes are per second (`Fit.per_hour` converts).
Pure numpy: a long series is first reduced to at most `MAX_FIT_POINTS` bin medians,
so a week of 1 s samples (600,000 points) fits in well under a second.

`fit_trend` decides what a series does, so that a server whose metrics rise and then
level off is not called leaking:

- **sawtooth** (memory freed by a GC or a cache sweep, a pool that shrinks and
  regrows): at least `MIN_DROPS` sudden drops. The line is then fitted on the teeth:
  the median of each whole tooth (the samples from one drop to the next), one point
  per tooth, so its interval is as wide as the few teeth warrant and the phase at
  which samples met a quick refill does not matter. Teeth at a flat level are no
  leak, rising teeth are one, and teeth that rose for the first few only (an
  allocator keeping its high-water mark) settle as a plateau, or stay undecided when
  the last teeth cannot tell. The lower envelope (a centred rolling minimum over 1.5
  drop periods) is what plots show.
- **plateau**: the series grows significantly overall, but over the last
  `TAIL_SHARE` of the loaded window it is level (its slope's 95% interval reaches 0
  and lies below the overall slope), and the overall slope would have added at least
  two steps (two threads, for counts) in that time, so a slow leak that simply had no
  step in a short tail is not mistaken for one. The verdict then uses the level tail.
- **growing**: the series grows overall and is still rising significantly over that
  last share (its tail's 95% interval lies above 0): a leak.
- **undecided**: the series grows overall, but the tail can tell neither: its interval
  reaches 0 *and* the overall slope (too short or too noisy), or the overall slope
  would have added fewer than two steps in it. A pool that fills up in a few steps and
  a slow leak look alike here; the verdict uses the overall slope, and a check it
  breaks is inconclusive rather than failed ("run longer").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np
import pandas as pd

#: Series longer than this are reduced to this many bin medians before fitting.
MAX_FIT_POINTS = 1200
#: Fewer samples than this after the warm-up give no trend (too little to tell).
MIN_FIT_SAMPLES = 10
#: Two process samples more than this apart in create_time belong to different processes (s).
_CREATE_TIME_TOLERANCE_S = 0.5
#: Trend shapes (`Trend.shape`).
GROWING, FLAT, DECLINING, PLATEAU = "growing", "flat", "declining", "plateau"
UNDECIDED = "undecided"
#: The last this share of the loaded window is tested for a plateau.
TAIL_SHARE = 1 / 3
#: Fewer sudden drops than this are no sawtooth (one cache flush is not a pattern).
MIN_DROPS = 3
#: Teeth a sawtooth's tail test needs at least (3 are too few for t), and the share of
#: the loaded window it looks at (teeth are few: half, not a third).
MIN_TAIL_TEETH = 4
TEETH_TAIL_SHARE = 1 / 2
#: The envelope's rolling-minimum window, in drop periods.
ENVELOPE_PERIODS = 1.5


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
class Trend:
    """What a series does after the warm-up, and the fit its verdict rests on.

    fit: the verdict's line: `overall` (or its lower-envelope fit), or the level tail of
        a plateau. overall: Theil–Sen of the samples themselves over the whole window.
    shape: GROWING, FLAT, DECLINING (by the 95% interval of `fit`), PLATEAU or UNDECIDED.
    envelope_window: samples of the rolling minimum when fitted on a sawtooth's lower
        envelope (0: fitted on the samples). drops: the sudden drops counted.
    level_since: for a plateau, the elapsed second from which the series stayed level.
    """

    fit: Fit
    overall: Fit
    shape: str
    envelope_window: int = 0
    drops: int = 0
    level_since: float | None = None

    @property
    def envelope(self) -> bool:
        return self.envelope_window > 0


def sawtooth_drops(y: np.ndarray, baseline: np.ndarray) -> tuple[int, float]:
    """(number of sudden drops, median samples between them) of series `y`."""
    troughs, spacing = sawtooth_troughs(y, baseline)
    return len(troughs), spacing


def sawtooth_troughs(y: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, float]:
    """(index of the lowest sample after each sudden drop, median samples between drops).

    A drop is a run of falling samples whose total fall is at least half the spread
    (5th to 95th percentile) of `y - baseline`, six times the typical sample-to-sample
    change (1.4826 MAD), and more than one for counts: noise, a count jittering by one
    and single outliers do not qualify.
    """
    none = np.empty(0, dtype=np.int64)
    if len(y) < 3:
        return none, 0.0
    low, high = np.percentile(y - baseline, [5, 95])
    spread = high - low
    if spread <= 0:
        return none, 0.0
    steps = np.diff(y)
    typical = 1.4826 * float(np.median(np.abs(steps - np.median(steps))))
    counts = bool(np.all(y == np.round(y)))
    threshold = max(0.5 * spread, 6.0 * typical, 1.5 if counts else 0.0)
    falling = steps < -max(3.0 * typical, 0.05 * spread)
    edges = np.diff(np.concatenate([[0], falling.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    fallen = np.concatenate([[0.0], np.cumsum(np.where(falling, steps, 0.0))])
    big = (fallen[stops] - fallen[starts]) <= -threshold
    spacing = float(np.median(np.diff(starts[big]))) if np.count_nonzero(big) >= 2 else 0.0
    return stops[big], spacing


#: Two-sided 95% quantiles of Student's t by degrees of freedom (1-30; normal beyond).
_T95 = (
    12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
    2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
    2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def teeth_fit(x: np.ndarray, y: np.ndarray) -> Fit | None:
    """The Theil–Sen line through a sawtooth's teeth, one point per tooth, with a 95%
    interval from the spread of the points about it (the larger of 1.4826 MAD and the
    residual RMS) and Student's t: a handful of teeth are too few for Sen's rank
    interval, which would call any short run's memory unknown, yet exact enough to
    tell teeth that rise."""
    line = theil_sen(x, y)
    if line is None:
        return None
    residuals = y - line.at(x)
    mad = 1.4826 * float(np.median(np.abs(residuals - np.median(residuals))))
    rms = float(np.sqrt(np.sum(residuals**2) / max(len(x) - 2, 1)))
    # a MAD of a handful of points can be tiny by chance; counts move in whole steps
    scale = max(mad, rms, smallest_step(np.diff(y)) / 2)
    spread = float(np.sqrt(np.sum((x - x.mean()) ** 2)))
    dof = len(x) - 2
    t = _T95[dof - 1] if dof <= len(_T95) else 1.96
    half = t * scale / spread if spread > 0 else 0.0
    return Fit(line.slope, line.intercept, line.slope - half, line.slope + half, line.n,
               line.x_start, line.x_end)  # fmt: skip


def tooth_levels(
    x: np.ndarray, y: np.ndarray, troughs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(median x, median y) of every whole tooth: the samples from one drop's end to the
    next's. The part before the first drop and after the last are cut off, left out."""
    teeth = [(a, b) for a, b in zip(troughs[:-1], troughs[1:], strict=True) if b > a]
    return (
        np.array([np.median(x[a:b]) for a, b in teeth], dtype=float),
        np.array([np.median(y[a:b]) for a, b in teeth], dtype=float),
    )


def smallest_step(steps: np.ndarray) -> float:
    """The smallest non-zero absolute change between samples (1 for counts); 0 if none."""
    moved = np.abs(steps[steps != 0])
    return float(moved.min()) if len(moved) else 0.0


def lower_envelope(y: np.ndarray, window: int) -> np.ndarray:
    """Centred rolling minimum of `y` over `window` samples (edges use what they have)."""
    return pd.Series(y).rolling(window, center=True, min_periods=1).min().to_numpy()


def fit_trend(
    x: np.ndarray,
    y: np.ndarray,
    busy_until: float | None = None,
    max_points: int = MAX_FIT_POINTS,
) -> Trend | None:
    """The shape and verdict fit of (x, y); None when too short to fit.

    busy_until: the elapsed second the load ended; the plateau test looks only at the
    loaded part, since a leak per reply is level while nothing is sent.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    overall = theil_sen(x, y, max_points)
    if overall is None:
        return None
    troughs, spacing = sawtooth_troughs(y, overall.at(x))
    if len(troughs) >= MIN_DROPS:
        teeth_x, teeth_y = tooth_levels(x, y, troughs)
        teeth = teeth_fit(teeth_x, teeth_y) if len(teeth_x) >= MIN_DROPS else None
        if teeth is not None:
            window = max(3, int(ENVELOPE_PERIODS * spacing))
            trend = Trend(teeth, overall, _shape(teeth), window, len(troughs))
            if trend.shape == GROWING:
                return _settle_teeth(trend, teeth_x, teeth_y, busy_until)
            return trend
    trend = Trend(overall, overall, _shape(overall), 0, len(troughs))
    if trend.shape == GROWING:
        return _settle_growth(trend, x, y, busy_until, max_points)
    return trend


def _shape(fit: Fit) -> str:
    if fit.low > 0:
        return GROWING
    return DECLINING if fit.high < 0 else FLAT


def _settle_growth(
    trend: Trend, x: np.ndarray, y: np.ndarray, busy_until: float | None, max_points: int
) -> Trend:
    """A GROWING `trend` as GROWING, PLATEAU or UNDECIDED by its loaded tail (module doc)."""
    end = x[-1] if busy_until is None else min(x[-1], busy_until)
    tail_start = x[0] + (1.0 - TAIL_SHARE) * (end - x[0])
    in_tail = (x >= tail_start) & (x <= end)
    undecided = replace(trend, shape=UNDECIDED)
    if _rises_throughout(x, y, end):
        return trend
    if np.count_nonzero(in_tail) < MIN_FIT_SAMPLES:
        return undecided
    tail = theil_sen(x[in_tail], y[in_tail], max_points)
    if tail is None:
        return undecided
    if tail.low > 0:
        return trend
    expected = trend.fit.slope * (end - tail_start)
    if tail.high >= trend.fit.slope or expected < 2 * smallest_step(np.diff(y)):
        return undecided
    xs, ys = downsample(x[x <= end], y[x <= end], max_points)
    level = ys[xs >= tail_start]
    outside = np.flatnonzero((ys < level.min()) | (ys > level.max()))
    since = float(xs[min(outside[-1] + 1, len(xs) - 1)]) if len(outside) else float(xs[0])
    return Trend(tail, trend.overall, PLATEAU, trend.envelope_window, trend.drops, since)


def _settle_teeth(trend: Trend, x: np.ndarray, y: np.ndarray, busy_until: float | None) -> Trend:
    """A GROWING sawtooth (x, y: one point per tooth) as GROWING, PLATEAU or UNDECIDED by
    its last teeth: those of the last TEETH_TAIL_SHARE of the loaded window, at least the
    last MIN_TAIL_TEETH. With no more teeth than that in all, teeth that rose for a
    while cannot be told from ones that keep rising."""
    end = x[-1] if busy_until is None else min(x[-1], busy_until)
    loaded = x <= end
    x, y = x[loaded], y[loaded]
    undecided = replace(trend, shape=UNDECIDED)
    if len(x) <= MIN_TAIL_TEETH:
        return undecided
    start = trend.overall.x_start
    in_tail = x >= start + (1.0 - TEETH_TAIL_SHARE) * (end - start)
    in_tail[-MIN_TAIL_TEETH:] = True
    tail = teeth_fit(x[in_tail], y[in_tail])
    if tail is None:
        return undecided
    if tail.low > 0:
        return trend
    if tail.high < trend.fit.slope:
        since = float(x[in_tail][0])
        return Trend(tail, trend.overall, PLATEAU, trend.envelope_window, trend.drops, since)
    return undecided


def _rises_throughout(x: np.ndarray, y: np.ndarray, end: float) -> bool:
    """For counts (threads, fds): whether the loaded window sets new highs in each of its
    thirds, at least two of them in the last. A leak keeps climbing in small steps; a
    pool fills in a burst or a few, then stops, so a rise that happens in one part of
    the window only is left to the tail test."""
    loaded = x <= end
    x, y = x[loaded], y[loaded]
    if len(y) < 6 or not np.all(y == np.round(y)):
        return False
    highs = np.flatnonzero(y[1:] > np.maximum.accumulate(y)[:-1]) + 1
    edges = x[0] + (x[-1] - x[0]) * np.array([1 / 3, 2 / 3])
    thirds = np.searchsorted(edges, x[highs], side="right")
    return len(np.unique(thirds)) == 3 and np.count_nonzero(thirds == 2) >= 2


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
