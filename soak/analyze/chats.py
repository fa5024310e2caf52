"""Chat aggregates: outcome totals, merged latency percentiles, idle and busy intervals."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from soak.analyze.load import OUTCOMES
from soak.histogram import merge_all, quantile

#: Sample states returned by `classify_samples`.
UNKNOWN, IDLE, BUSY = 0, 1, 2


def outcome_totals(chats: pd.DataFrame) -> dict[str, int]:
    """Turns started and ended, and turns per outcome, over the whole frame."""
    totals = {name: int(chats[name].sum()) for name in OUTCOMES}
    totals["turns"] = int(chats["turns"].sum())
    totals["started"] = int(chats["started"].sum())
    return totals


def latency_quantiles(
    hists: Iterable[Mapping[str | int, int]], qs: Iterable[float]
) -> dict[float, float | None]:
    """Quantiles (seconds, None when empty) of the merged sparse histograms."""
    merged = merge_all(hists)
    return {q: quantile(merged, q) for q in qs}


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
    rows = []
    hists = chats[column].tolist()
    elapsed = chats["elapsed"].to_numpy(dtype=float)
    for start in range(0, n, per_bin):
        merged = merge_all(hists[start : start + per_bin])
        row = {"elapsed": elapsed[min(start + per_bin, n) - 1]}
        row.update({f"p{round(q * 100)}": quantile(merged, q) for q in qs})
        rows.append(row)
    columns = ["elapsed", *(f"p{round(q * 100)}" for q in qs)]
    return pd.DataFrame(rows, columns=columns).astype(float)
