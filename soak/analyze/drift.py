"""Drift: event-loop lag per interval, lined up with stalls and latency spikes.

The run is cut into bins (the chat interval, widened so a long run has at most
MAX_BINS). Per bin: loop lag p50 / p99 / max from the /health lag field, /health
latency above its floor (the 5th percentile: a starved loop answers /health late),
protocol ping round trips, TTFT p95, stalls, disconnects, and whether soak itself was
saturated. A bin's **drift** is the largest of its lag max, ping p99 above the lowest
bin's and /health latency above its floor: each is time the server answered late. A
**drift spike** is a bin with at least SPIKE_S of drift; a **TTFT spike** a bin whose
TTFT p95 is LATENCY_FACTOR times the median bin's (and at least LATENCY_FLOOR_S). A stall
**lines up** with a drift spike when one came within reply_timeout before it (the turn
was waiting then); a TTFT spike when one came in its bin or the bin before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.typing import SeriesGroupBy

from soak.analyze.chats import HistogramColumn
from soak.analyze.load import BODY_PREFIX, TargetData

#: Most bins of a drift table.
MAX_BINS = 1500
#: Bin width when the run has no chat intervals (s).
DEFAULT_BIN_S = 10.0
#: A bin with this much drift (s) is a drift spike.
SPIKE_S = 0.1
#: A TTFT spike: a bin's TTFT p95 at least this many times the median bin's ...
LATENCY_FACTOR = 3.0
#: ... and at least this (s).
LATENCY_FLOOR_S = 0.05
#: Worst bins listed in the summary.
WORST_BINS = 10
#: /health latency floor: this percentile of every poll's latency.
FLOOR_PERCENTILE = 5


@dataclass
class Drift:
    """The per-bin table (elapsed seconds, latencies in s) and summary.json's `drift`."""

    table: pd.DataFrame
    summary: dict[str, Any]


def analyze_drift(
    data: TargetData,
    lag_field: str | None,
    reply_timeout_s: float,
    duration_s: float,
    saturated: np.ndarray,
) -> Drift:
    """Bin the run, compute each bin's drift signals and outcomes, line spikes up.

    saturated: merged (start, end) elapsed spans when soak's load processes were saturated.
    """
    chats, health = data.chats, data.health
    base = float(chats["interval_s"].median()) if len(chats) else DEFAULT_BIN_S
    width = max(base if np.isfinite(base) and base > 0 else DEFAULT_BIN_S, duration_s / MAX_BINS)
    bins = max(1, int(np.ceil(duration_s / width)))
    table = pd.DataFrame({"start_s": np.arange(bins) * width})
    table["end_s"] = table["start_s"] + width
    signals = []

    column = BODY_PREFIX + (lag_field or "")
    if lag_field and column in health.columns:
        lag = _grouped(health["elapsed"], health[column] / 1000.0, width, bins)
        table["loop_lag_p50_s"] = lag.median()
        table["loop_lag_p99_s"] = lag.quantile(0.99)
        table["loop_lag_max_s"] = lag.max()
        signals.append("loop_lag_max_s")
    floor = None
    latency = health["latency_s"].dropna() if "latency_s" in health else pd.Series(dtype=float)
    if len(latency):
        floor = float(np.percentile(latency, FLOOR_PERCENTILE))
        grouped = _grouped(health["elapsed"], health["latency_s"], width, bins)
        table["health_latency_excess_s"] = grouped.max() - floor
        signals.append("health_latency_excess_s")
    if len(chats):
        # a chats row covers (end - interval_s, end]: it goes to the bin of its middle
        middle = (
            chats["elapsed"].to_numpy(dtype=float)
            - np.nan_to_num(chats["interval_s"].to_numpy(dtype=float)) / 2
        )
        where = np.clip((middle // width).astype(int), 0, bins - 1)
        for name in ("stall", "first_token_timeout", "disconnect", "error", "turns"):
            table[name] = np.bincount(where, chats[name].to_numpy(dtype=float), bins)
        table["ttft_p95_s"] = _hist_quantile(chats["ttft_hist"], where, bins, 0.95)
        ping = _hist_quantile(chats["ping_hist"], where, bins, 0.99)
        if np.isfinite(ping).any():
            table["ping_p99_s"] = ping
            table["ping_excess_s"] = ping - np.nanmin(ping)
            signals.append("ping_excess_s")
    else:
        for name in ("stall", "first_token_timeout", "disconnect", "error", "turns"):
            table[name] = 0.0
        table["ttft_p95_s"] = np.nan
    table["soak_saturated"] = _overlaps(table, saturated)
    table["drift_s"] = table[signals].max(axis=1, skipna=True) if signals else np.nan
    return Drift(table, _summary(table, signals, width, reply_timeout_s, floor))


def _grouped(elapsed: pd.Series, values: pd.Series, width: float, bins: int) -> SeriesGroupBy:
    """`values` grouped by bin, every bin present (empty bins give NaN)."""
    index = np.clip((elapsed.to_numpy(dtype=float) // width).astype(int), 0, bins - 1)
    series = pd.Series(values.to_numpy(dtype=float), index=index)
    series = series[np.isfinite(series.to_numpy())]
    full = pd.concat([series, pd.Series(np.nan, index=np.arange(bins))])
    return full.groupby(level=0)


def _hist_quantile(hists: pd.Series, where: np.ndarray, bins: int, q: float) -> np.ndarray:
    """Per bin: the q-quantile (s) of the histograms of the chats rows in it; NaN if none."""
    return HistogramColumn.of(hists).quantiles(where, bins, q)


def _overlaps(table: pd.DataFrame, spans: np.ndarray) -> np.ndarray:
    """Per bin: True when it overlaps any (start, end) span."""
    flags = np.zeros(len(table), dtype=bool)
    starts, ends = table["start_s"].to_numpy(), table["end_s"].to_numpy()
    for start, end in spans:
        flags |= (starts < end) & (ends > start)
    return flags


def _summary(
    table: pd.DataFrame,
    signals: list[str],
    width: float,
    reply_timeout_s: float,
    floor: float | None,
) -> dict[str, Any]:
    drift = table["drift_s"].to_numpy(dtype=float)
    known = drift[np.isfinite(drift)]
    spikes = np.isfinite(drift) & (drift >= SPIKE_S)
    ttft = table["ttft_p95_s"].to_numpy(dtype=float)
    typical = float(np.nanmedian(ttft)) if np.isfinite(ttft).any() else None
    latency_threshold = (
        max(LATENCY_FLOOR_S, LATENCY_FACTOR * typical) if typical is not None else None
    )
    latency = np.isfinite(ttft) & (ttft >= (latency_threshold or np.inf))
    near = _recent(spikes, int(np.ceil(reply_timeout_s / width)))
    stalls = table["stall"].to_numpy(dtype=float)
    saturated = table["soak_saturated"].to_numpy(dtype=bool)
    table["drift_spike"] = spikes
    table["latency_spike"] = latency
    worst = table.loc[np.isfinite(drift)].nlargest(WORST_BINS, "drift_s")
    return {
        "bin_s": width,
        "bins": len(table),
        "signals": [s.removesuffix("_s") for s in signals],
        "health_latency_floor_s": floor,
        "drift_max_s": float(known.max()) if len(known) else None,
        "spike_threshold_s": SPIKE_S,
        "drift_spike_bins": int(spikes.sum()),
        "latency_threshold_s": latency_threshold,
        "latency_spike_bins": int(latency.sum()),
        "latency_spikes_with_drift": int((latency & _recent(spikes, 1)).sum()),
        "latency_spikes_while_soak_saturated": int((latency & saturated).sum()),
        "soak_saturated_bins": int(saturated.sum()),
        "stalls": int(stalls.sum()),
        "stalls_after_drift": int(stalls[near].sum()),
        "near_drift_share": float(near.mean()) if len(near) else None,
        "stalls_while_soak_saturated": int(stalls[saturated].sum()),
        "first_token_timeouts_while_soak_saturated": int(
            table["first_token_timeout"].to_numpy(dtype=float)[saturated].sum()
        ),
        "reply_timeout_s": reply_timeout_s,
        "worst": [_row(row) for row in worst.to_dict("records")],
    }


def _recent(flags: np.ndarray, bins_back: int) -> np.ndarray:
    """Per bin: True when `flags` is set in it or in the `bins_back` bins before it."""
    total = np.concatenate([[0], np.cumsum(flags.astype(int))])
    index = np.arange(len(flags))
    return (total[index + 1] - total[np.maximum(index - bins_back, 0)]) > 0


def _row(row: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "start_s", "end_s", "drift_s", "loop_lag_p50_s", "loop_lag_p99_s", "loop_lag_max_s",
        "ping_p99_s", "health_latency_excess_s", "ttft_p95_s", "stall", "disconnect",
        "soak_saturated",
    )  # fmt: skip
    return {key: row[key] for key in keys if key in row}
