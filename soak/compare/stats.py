"""Significance tests for comparing two runs, in plain math and numpy (no scipy).

- `two_proportion_p`: two-sided p-value of the pooled two-proportion z-test
  (stalls / turns in A vs B).
- `HistogramBlocks` and `quantile_ci`: a moving-block bootstrap of a quantile. The
  recording is cut into consecutive time blocks (each a histogram of latencies or
  samples), blocks are drawn with replacement, and the quantile of the merged draw
  is taken; the spread of those quantiles is the confidence interval. Blocks keep the
  correlation of neighbouring intervals (a slow minute is slow for every chat in it),
  so the interval is honest about noise that comes in bursts.
- `intervals_overlap`: the test used for slopes and quantiles: two 95% intervals that
  do not overlap differ at roughly p < 0.006.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from soak.histogram import FLOOR_S, GROWTH

#: Bootstrap draws per confidence interval (fixed seed: the same run gives the same table).
RESAMPLES = 1000
#: The bootstrap cuts a recording into at most this many time blocks.
MAX_BLOCKS = 60
#: Fewer non-empty blocks than this give no interval (too little to tell noise from change).
MIN_BLOCKS = 5
_SEED = 20261121


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def two_proportion_p(hits_a: int, total_a: int, hits_b: int, total_b: int) -> float | None:
    """Two-sided p-value that the rates hits_a/total_a and hits_b/total_b differ.

    The pooled z-test; None when a side has no trials. Equal rates (including 0 vs 0)
    give 1.0.
    """
    if total_a <= 0 or total_b <= 0:
        return None
    pooled = (hits_a + hits_b) / (total_a + total_b)
    spread = math.sqrt(pooled * (1.0 - pooled) * (1.0 / total_a + 1.0 / total_b))
    if spread == 0.0:
        return 1.0
    z = abs(hits_a / total_a - hits_b / total_b) / spread
    return min(1.0, 2.0 * normal_sf(z))


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when the closed intervals [a0, a1] and [b0, b1] share a point."""
    return a[0] <= b[1] and b[0] <= a[1]


def bucket_indices(values: np.ndarray) -> np.ndarray:
    """soak.histogram.bucket_of for an array of non-negative values (seconds, percent)."""
    values = np.asarray(values, dtype=float)
    ratio = np.maximum(values, FLOOR_S) / FLOOR_S
    return np.floor(np.log(ratio) / math.log(GROWTH)).astype(np.int64)


@dataclass(frozen=True)
class HistogramBlocks:
    """Counts per (time block, histogram bucket); bucket `offset + j` is column j."""

    counts: np.ndarray
    offset: int

    @property
    def blocks(self) -> int:
        return int(self.counts.shape[0])

    @classmethod
    def from_histograms(
        cls, hists: Iterable[Mapping[str | int, int]], max_blocks: int = MAX_BLOCKS
    ) -> HistogramBlocks:
        """From per-interval sparse histograms (chats.jsonl `ttft_hist`), in time order.

        Intervals without any count (no ok turn) are left out.
        """
        kept = [h for h in hists if any(int(v) > 0 for v in h.values())]
        sizes = [len(h) for h in kept]
        rows = np.repeat(np.arange(len(kept)), sizes)
        buckets = np.fromiter((int(k) for h in kept for k in h), np.int64, count=len(rows))
        counts = np.fromiter((int(v) for h in kept for v in h.values()), np.int64, len(rows))
        return cls._binned(rows, buckets, counts, len(kept), max_blocks)

    @classmethod
    def from_values(cls, values: np.ndarray, max_blocks: int = MAX_BLOCKS) -> HistogramBlocks:
        """From raw samples in time order (loop lag in seconds, CPU percent)."""
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        rows = np.arange(len(values))
        return cls._binned(rows, bucket_indices(values), np.ones(len(values), np.int64),
                           len(values), max_blocks)  # fmt: skip

    @classmethod
    def _binned(
        cls, rows: np.ndarray, buckets: np.ndarray, counts: np.ndarray, n_rows: int, max_blocks: int
    ) -> HistogramBlocks:
        """Add `counts` at (block of row, bucket): row r of n_rows is in block r*blocks//n_rows."""
        if not len(buckets):
            return cls(np.zeros((0, 1), dtype=np.int64), 0)
        blocks = min(max_blocks, n_rows)
        low = int(buckets.min())
        dense = np.zeros((blocks, int(buckets.max()) - low + 1), dtype=np.int64)
        np.add.at(dense, (rows * blocks // n_rows, buckets - low), counts)
        return cls(dense, low)


def quantile_ci(
    blocks: HistogramBlocks,
    q: float,
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
) -> tuple[float, float] | None:
    """Block-bootstrap confidence interval of the q-quantile (in the values' unit).

    None when there are fewer than MIN_BLOCKS blocks. Each draw's quantile follows
    soak.histogram.quantile (the bucket holding rank q * (n - 1)).
    """
    if blocks.blocks < MIN_BLOCKS:
        return None
    rng = np.random.default_rng(_SEED)
    picks = rng.integers(0, blocks.blocks, size=(resamples, blocks.blocks))
    weights = np.zeros((resamples, blocks.blocks), dtype=np.int64)
    np.add.at(weights, (np.arange(resamples)[:, None], picks), 1)
    drawn = weights @ blocks.counts
    cumulative = np.cumsum(drawn, axis=1)
    total = cumulative[:, -1]
    keep = total > 0
    rank = q * (total[keep] - 1)
    index = np.argmax(cumulative[keep] > rank[:, None], axis=1) + blocks.offset
    estimates = FLOOR_S * GROWTH ** (index + 0.5)  # soak.histogram.bucket_value
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(estimates, [tail, 1.0 - tail])
    return float(low), float(high)
